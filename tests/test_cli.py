"""`python -m engine.train` end to end as a user runs it, and existing runs it must never touch
(the sweep of every bad input is tests/test_bad_input.py)."""
import dataclasses
import json
import os

import pytest

from engine import config as C
from tests.conftest import assert_one_line_error, run_cli


def run(*args, env=None):
    return run_cli("engine.train", *args, env=env)


QUICK = ["--model", "tiny", "--limit", 512, "--limit-test", 200, "--batch-size", 64, "--quiet"]


def test_help_lists_every_flag_with_its_default():
    p = run("--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    for section, dc in C.SECTIONS.items():
        for f in dataclasses.fields(dc):
            if not f.metadata.get("internal"):  # (written by the run, not given: the data's image shape)
                assert C.flag(f.name) in text, f.name
    assert "--steps-per-call N train steps run inside one tf.function call (default: 10)" in text
    assert "--xla, --no-xla" in text
    assert p.stdout.startswith("usage: engine train [options]\n")
    groups = [line[:-1] for line in p.stdout.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert groups == ["options", *C.HELP_GROUPS], groups  # grouped by task, in that order
    assert text.count("(default:") == text.count("(default: ") and "(default: none) (default" not in text


def test_train_end_to_end_then_resume(tmp_path, shared_data):
    out = tmp_path / "run"
    p = run(*QUICK, "--data", shared_data, "--epochs", 2, "--val-images", 50, "--out", out)
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
    # each epoch validates on a fixed 50 of the 200 test images; the final accuracy is on all 200
    assert m["val_images"] == 50 and not m["val_is_test"]
    history = json.loads((out / "history.json").read_text())
    assert all(abs(e["val_accuracy"] * 50 - round(e["val_accuracy"] * 50)) < 1e-6 for e in history)
    assert abs(m["test_accuracy"] * 200 - round(m["test_accuracy"] * 200)) < 1e-6
    assert m["steps"] == 2 * (512 // 64)
    parts = m["wall_breakdown"]  # where the wall time went: the parts add up to it
    assert parts["training steps"] == m["train_seconds"] and parts["evaluation"] > 0 and parts["checkpoint saves"] > 0
    assert abs(sum(parts.values()) - m["wall_seconds"]) < 1e-6 * m["wall_seconds"] + 1e-9
    assert "wall time " in p.stdout

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
