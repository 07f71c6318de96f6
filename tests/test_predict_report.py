"""`engine predict` on real test JPEGs of the shared archive agrees with `engine evaluate` on the same
images; `engine train --seeds` and `engine report` give one table with mean ± std over seeds."""
import json
import os
import shutil
import statistics
import tarfile

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, png_bytes, run_cli, run_in_process

FIXTURE_RUN = "tests/fixtures/runs-v0.1/tiny"  # trained on digits; any trained run will do here


def engine(*args):
    return run_cli("engine", *args)


@pytest.fixture(scope="module")
def jpeg_tree(shared_data, tmp_path_factory):
    """Two test JPEGs per class from the archive, as a train/ test/ tree (the bytes as shipped)."""
    root = tmp_path_factory.mktemp("jpegs")
    taken = {}
    with tarfile.open(shared_data, "r|*") as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 3 and parts[-3] == "test" and taken.get(parts[-2], 0) < 2:
                data = tar.extractfile(m).read()
                for split in ("train", "test"):
                    d = root / split / parts[-2]
                    d.mkdir(parents=True, exist_ok=True)
                    (d / parts[-1]).write_bytes(data)
                taken[parts[-2]] = taken.get(parts[-2], 0) + 1
            if len(taken) == 10 and all(v == 2 for v in taken.values()):
                break
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "tiny"
    shutil.copytree(FIXTURE_RUN, d)
    return d


def test_predict_agrees_with_evaluate_on_the_same_jpegs(jpeg_tree, run, tmp_path):
    classes = sorted(p.name for p in (jpeg_tree / "test").iterdir())
    files = sorted((jpeg_tree / "test").glob("*/*.jpg"))
    p = engine("predict", *files, "--model", run, "--topk", 3, "--json")
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)
    assert [r["image"] for r in results] == [str(f) for f in files]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    top1 = [r["top"][0]["index"] for r in results]
    labels = [classes.index(f.parent.name) for f in files]
    p = engine("evaluate", "--backend", "tf", "--model", run, "--data", jpeg_tree, "--report", tmp_path / "e.json",
               "--cache-dir", tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "e.json").read_text())["top1_accuracy"] == pytest.approx(
        float(np.mean(np.array(top1) == np.array(labels))))
    p = engine("predict", jpeg_tree / "test" / classes[0], "--model", run, "--topk", 1)  # a folder, as lines
    assert p.returncode == 0 and len(p.stdout.strip().splitlines()) == 2, p.stderr


def test_one_vocabulary_export_into_the_run_then_evaluate_the_file_by_its_path(jpeg_tree, run, tmp_path, capsys):
    p = engine("export", "onnx", run)  # no --out: into the run directory
    assert p.returncode == 0, p.stderr
    assert (run / "model.onnx").is_file() and f"exported onnx: {run / 'model.onnx'}" in p.stdout
    before = (run / "model.onnx").read_bytes()
    assert_one_line_error(run_in_process(capsys, "engine.export", "onnx", run), "already exists", "--overwrite")
    assert (run / "model.onnx").read_bytes() == before
    # the model as a positional argument, the backends from the paths, the report at --out
    p = engine("evaluate", run / "model.onnx", "--against", run, "--data", jpeg_tree, "--out", tmp_path / "e.json",
               "--cache-dir", tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "e.json").read_text())
    assert r["backend"] == "onnx" and r["against"]["backend"] == "tf" and r["images"] == 20
    assert r["against"]["top1_agreement"] == 1.0 and r["against"]["max_abs_logit_diff"] < 1e-3
    from engine.export.cli import parse
    assert parse(["onnx", str(run), "--precision", "int8", "--int8-target", "cpu"]).out == str(run / "model-int8-cpu.onnx")
    assert parse(["trt", str(run), "--precision", "fp16"]).out == str(run / "model-fp16.engine")
    (tmp_path / "m.keras").write_bytes(b"")  # (only its name matters here)
    assert parse(["savedmodel", str(tmp_path / "m.keras")]).out == str(tmp_path / "m.savedmodel")


def test_predict_refuses_what_the_contract_does_not_take(run, tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(np.zeros((64, 64, 3), np.uint8)))
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    for image, message in [(big, "big.png is 64x64x3"), (tmp_path / "junk.jpg", "cannot decode"),
                           (tmp_path / "none.png", "image not found")]:
        assert_one_line_error(run_in_process(capsys, "engine.predict", image, "--model", run), message)
    from engine import predict
    predict.main([str(big), "--model", str(run), "--resize", "--topk", "1"])  # converted first
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    assert_one_line_error(run_in_process(capsys, "engine.predict", big, "--model", tmp_path), "not a run directory")


def _png(image, **save) -> bytes:
    import io
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save)
    return buf.getvalue()


def _predict(capsys, *args):
    from engine import predict
    capsys.readouterr()
    predict.main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr()
    return [r["top"] for r in json.loads(out.out)], out.err


def test_predict_converts_other_modes_to_rgb_and_says_so(run, tmp_path, capsys):
    """Grey, 16-bit grey, palette and RGBA images are predicted as the RGB image they show; 16-bit
    grey keeps its range (PIL's own conversion clipped it: 99.7% white)."""
    from PIL import Image
    rgb = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    files = {"rgb.png": _png(Image.fromarray(rgb)), "grey.png": _png(Image.fromarray(grey)),
             "rgba.png": _png(Image.fromarray(np.dstack([rgb, np.full((32, 32), 255, np.uint8)]))),
             "grey16.png": _png(Image.fromarray(grey.astype(np.uint16) * 257)),
             "pal.png": _png(Image.fromarray(rgb).quantize(16))}
    for name, payload in files.items():
        (tmp_path / name).write_bytes(payload)
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    (ref,), err = _predict(capsys, tmp_path / "rgb.png", "--model", run)
    assert err == ""
    (rgba,), err = _predict(capsys, tmp_path / "rgba.png", "--model", run)
    assert rgba == ref and err == "note: converted 1 image from mode RGBA to RGB (transparency ignored)\n"
    (g8, g16), err = _predict(capsys, tmp_path / "grey.png", tmp_path / "grey16.png", "--model", run)
    assert g16 == g8 and g8 != ref and err == "note: converted 2 images from mode I;16, L to RGB\n"
    (pal,), _ = _predict(capsys, tmp_path / "pal.png", "--model", run)
    (tmp_path / "pal-rgb.png").write_bytes(_png(Image.open(tmp_path / "pal.png").convert("RGB")))
    assert _predict(capsys, tmp_path / "pal-rgb.png", "--model", run)[0] == [pal]
    # --resize: a 64x64 16-bit grey image is scaled as its 8-bit equivalent is
    big = np.kron(grey, np.ones((2, 2), np.uint8))
    (tmp_path / "big8.png").write_bytes(_png(Image.fromarray(big)))
    (tmp_path / "big16.png").write_bytes(_png(Image.fromarray(big.astype(np.uint16) * 257)))
    (b8, b16), err = _predict(capsys, tmp_path / "big8.png", tmp_path / "big16.png", "--model", run, "--resize")
    assert b16 == b8 and err == ("note: converted 2 images from mode I;16, L to RGB\n"
                                 "note: resized 2 images from 64x64 to the model's 32x32\n")  # --resize says what it did


def _png_header_only(w, h) -> bytes:
    """A PNG declaring w x h RGB pixels with no decodable data: refusing it by size shows the size
    came from the header alone."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b""))


def test_predict_refuses_oversized_images_from_their_header(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, (w, h), extra, message in [
            ("bomb.png", (50000, 50000), [], "refusing image bomb.png: it declares 2,500,000,000 pixels, over the limit"),
            ("bomb.png", (50000, 50000), ["--resize"], "it declares 2,500,000,000 pixels"),
            ("big.png", (12000, 12000), ["--resize"], "refusing image big.png: it declares 12000x12000 = 144,000,000 "
                                                      "pixels, over the limit of 67,108,864"),
            ("wide.png", (64, 32), [], "image wide.png is 32x64x3, the model takes 32x32x3 RGB; pass --resize")]:
        (tmp_path / name).write_bytes(_png_header_only(w, h))
        p = run_in_process(capsys, "engine.predict", name, "--model", run, *extra)
        assert_one_line_error(p, message)


def test_predict_reads_a_folder_of_class_folders(run, tmp_path, capsys):
    for c in ("cat", "dog"):
        (tmp_path / "test" / c).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "test" / c / f"{i}.png").write_bytes(png_bytes(np.full((32, 32, 3), 60 * i, np.uint8)))
    (tmp_path / "test" / "notes.txt").write_text("not an image")
    from engine import predict
    predict.main([str(tmp_path / "test"), "--model", str(run), "--topk", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(tmp_path / "test" / c / f"{i}.png")
                                                     for c in ("cat", "dog") for i in range(2)]


def test_predict_refuses_a_fifo_without_opening_it(run, tmp_path):
    import subprocess
    import sys
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    for target in ("imgs", os.path.join("imgs", "pipe.png")):
        try:
            p = subprocess.run([sys.executable, "-m", "engine", "predict", target, "--model", str(run)], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"engine predict {target} blocked on a FIFO")
        assert_one_line_error(p, "refusing image imgs/pipe.png: not a regular file")


def test_predict_prints_control_characters_in_names_escaped(run, tmp_path, capsys):
    """A class named 'cat 0.999\\nforged.png: dog' (class folders may be named anything) must not add
    a line to the output."""
    names = json.loads((run / "classes.json").read_text())
    forged = shutil.copytree(run, tmp_path / "forged")
    (forged / "classes.json").write_text(json.dumps(["cat 0.999\nforged.png: dog\x1b[0m"] + names[1:]))
    (tmp_path / "x\ny.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    from engine import predict
    predict.main([str(tmp_path / "x\ny.png"), "--model", str(forged), "--topk", "10"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "x\\ny.png: " in out, out
    assert "cat 0.999\\nforged.png: dog\\x1b[0m " in out, out


def test_seeds_train_each_and_report_their_mean_and_spread(tmp_path):
    out = tmp_path / "runs"
    p = engine("train", "--model", "tiny", "--data", "digits", "--epochs", 1, "--batch-size", 64, "--quiet",
               "--seeds", "0,1,2", "--out", out)
    assert p.returncode == 0, p.stderr
    accs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["test_accuracy"] for s in (0, 1, 2)]
    assert f"seeds 0, 1, 2 (3 runs): test top-1 {statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}" in p.stdout
    assert "config fields that differ: run.seed: 0, 1, 2" in p.stdout
    p = engine("report", *(out / f"seed-{s}" for s in (0, 1)), "--json")
    assert [r["test_accuracy"] for r in json.loads(p.stdout)["runs"]] == accs[:2]


def test_the_python_api_trains_and_predicts(tmp_path):
    from engine import train
    from engine.runtime import open_predictor
    from engine.train.resolve import defaults
    cfg = defaults("tiny").replace("data", data="digits").replace("optim", epochs=1, batch_size=64)
    metrics = train.run(cfg.replace("run", out=str(tmp_path / "nb"), quiet=True), log=lambda *a: None)
    assert metrics["steps"] == 22 and (tmp_path / "nb" / "metrics.json").exists()
    images = np.zeros((3, 8, 8, 1), np.uint8)  # the digits' own shape
    assert open_predictor(str(tmp_path / "nb")).predict(images).shape == (3, 10)  # backend from the path
