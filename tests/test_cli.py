"""`python -m engine.train` end to end as a user runs it, and every bad input it must refuse with
one line on stderr, a non-zero exit and no traceback, without touching existing runs."""
import dataclasses
import io
import json
import os
import tarfile

import pytest

from engine import config as C
from tests.conftest import assert_one_line_error, make_images, png_bytes, run_cli, run_in_process


def run(*args, env=None):
    return run_cli("engine.train", *args, env=env)


QUICK = ["--model", "tiny", "--limit", 512, "--limit-test", 200, "--batch-size", 64, "--quiet"]


def test_help_lists_every_flag_with_its_default():
    p = run("--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    for section, dc in C.SECTIONS.items():
        for f in dataclasses.fields(dc):
            assert C.flag(f.name) in text, f.name
    assert "--steps-per-call STEPS_PER_CALL train steps run inside one tf.function call (default: 10)" in text
    assert "--xla, --no-xla" in text


def test_train_end_to_end_then_resume(tmp_path, shared_data):
    out = tmp_path / "run"
    p = run(*QUICK, "--data", shared_data, "--epochs", 2, "--out", out)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("config:") == 1
    assert json.loads((out / "classes.json").read_text())[:2] == ["airplane", "automobile"]
    for name in ("config.json", "history.json", "metrics.json", "curves.png", "checkpoints", "tb"):
        assert (out / name).exists(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(out / "tb")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["model"] == "tiny" and cfg["optim"]["epochs"] == 2
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["train_img_s"] > 0 and m["test_images"] == 200
    assert m["steps"] == 2 * (512 // 64)

    p = run("--resume", "--epochs", 3, "--out", out)  # the saved config is the base
    assert p.returncode == 0, p.stderr
    assert "resumed at step 16 (epoch 3, step 0)" in p.stdout
    h = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in h] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["optim"]["epochs"] == 3


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("existing") / "run"
    p = run(*QUICK, "--data", shared_data, "--epochs", 1, "--out", out)
    assert p.returncode == 0, p.stderr
    return out


def _snapshot(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_existing_run_is_never_overwritten(existing_run, shared_data):
    before = _snapshot(existing_run)
    for args, fragment in [
        ((*QUICK, "--data", shared_data, "--out", existing_run), "already holds a run"),
        (("--out", existing_run, "--resume", "--overwrite"), "contradict"),
        (("--out", existing_run, "--resume", "--model", "resnet9"), "--model differs"),
        (("--out", existing_run, "--resume", "--lr", "fast"), "invalid number value: 'fast'"),
    ]:
        assert_one_line_error(run(*args), fragment)
    assert _snapshot(existing_run) == before


def _bad_tree(tmp_path, name, payload):
    good = png_bytes(make_images(1, 0)[0])
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "tree" / split / c
            d.mkdir(parents=True, exist_ok=True)
            (d / "0.png").write_bytes(good)
    (tmp_path / "tree" / name).write_bytes(payload)
    return tmp_path / "tree"


def _evil_tar(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("../../escape.png")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return path


BAD = {
    "missing data": (lambda t: ["--data", t / "nowhere"], ["data not found", "nowhere"]),
    "empty folder": (lambda t: ["--data", (t / "e").mkdir() or t / "e"], ["no training images"]),
    "corrupt jpeg": (lambda t: ["--data", _bad_tree(t, "train/a/bad.jpg", b"\xff\xd8\xff\xe0garbage")],
                     ["cannot decode image", "bad.jpg"]),
    "wrong shape": (lambda t: ["--data", _bad_tree(t, "test/b/big.png", png_bytes(make_images(1, 0)[0][:, :31]))],
                    ["big.png is 32x31x3"]),
    "hostile tar": (lambda t: ["--data", _evil_tar(t)], ["refusing tar member", "leaves the archive"]),
    "unknown model": (lambda t: ["--model", "vgg99"], ["unknown model 'vgg99'", "resnet9"]),
    "non-numeric": (lambda t: ["--epochs", "ten"], ["invalid number value: 'ten'"]),
    "negative": (lambda t: ["--batch-size", "-4"], ["--batch-size", "invalid integer value"]),
    "bad choice": (lambda t: ["--optimizer", "lion"], ["invalid choice: 'lion'"]),
    "unknown flag": (lambda t: ["--learning-rate", "0.1"], ["unrecognized arguments"]),
    "too small input": (lambda t: ["--upsample", "16"], ["at least 32x32"]),
    "xla + deterministic": (lambda t: ["--xla", "--deterministic"], ["cannot be combined"]),
    "option of another model": (lambda t: ["--width", "2"], ["--width does not apply to model tiny"]),
    "unknown recipe": (lambda t: ["--recipe", "seed-alexnet"], ["unknown recipe 'seed-alexnet'"]),
    "recipe + resume": (lambda t: ["--recipe", "seed-vgg16-frozen", "--resume"], ["--recipe starts a new run"]),
    "bias lr + adam": (lambda t: ["--optimizer", "adam", "--bias-lr-scale", "8"], ["--bias-lr-scale has no effect"]),
    "bad freeze layer": (lambda t: ["--model", "vgg16", "--weights", "none", "--freeze", "block9_pool"],
                         ["--freeze block9_pool: vgg16 has no such layer"]),
    "missing weights file": (lambda t: ["--model", "vgg16", "--weights", t / "nope.h5"], ["no such file"]),
    "nothing to resume": (lambda t: ["--resume"], ["nothing to resume"]),
    "out is a file": (lambda t: ["--out", (t / "f").write_text("x") and t / "f"], ["is a file"]),
    "unwritable out": (lambda t: ["--out", "/proc/engine-run"], ["cannot write to --out /proc/engine-run"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(tmp_path, shared_data, case, capsys):
    make_args, fragments = BAD[case]
    args = make_args(tmp_path)
    base = ["--model", "tiny", "--quiet", "--epochs", 1]
    if "--data" not in args:
        base += ["--data", shared_data, "--limit", 256]
    if "--out" not in args:
        base += ["--out", tmp_path / "out"]
    assert_one_line_error(run_in_process(capsys, "engine.train", *base, *args), *fragments)
