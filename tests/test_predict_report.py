"""`engine predict` on real test JPEGs of the shared archive agrees with `engine evaluate` on the same
images; `engine train --seeds` and `engine report` give one table with mean ± std over seeds."""
import json
import shutil
import statistics
import tarfile

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, png_bytes, run_cli, run_in_process

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
    grey = tmp_path / "grey.png"
    grey.write_bytes(png_bytes(np.zeros((32, 32), np.uint8)))
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    for image, message in [(big, "big.png is 64x64x3"), (grey, "grey.png is 32x32"), (tmp_path / "junk.jpg", "cannot decode"),
                           (tmp_path / "none.png", "image not found")]:
        assert_one_line_error(run_in_process(capsys, "engine.predict", image, "--model", run), message)
    from engine import predict
    predict.main([str(big), str(grey), "--model", str(run), "--resize", "--topk", "1"])  # converted first
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert_one_line_error(run_in_process(capsys, "engine.predict", big, "--model", tmp_path), "not a run directory")


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
    images = np.zeros((3, 32, 32, 3), np.uint8)
    assert open_predictor(str(tmp_path / "nb")).predict(images).shape == (3, 10)  # backend from the path
