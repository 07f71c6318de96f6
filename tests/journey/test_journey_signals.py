"""A run stopped by the user or the machine, then continued: Ctrl-C (SIGINT), a scheduler's SIGTERM,
kill -9, and Ctrl-C before training starts; then the rest of the way: export, evaluate, predict,
report. Each signal is sent when the run's output says where it is."""
import json
import re
import signal

import numpy as np
from PIL import Image

from tests.journey.conftest import (TINY, assert_no_traceback, checkpoint_exists, latest_checkpoint_step,
                                    stderr_lines)

STEPS_PER_EPOCH = 2048 // 64
EPOCHS = 4


def _stopped_step(line: str) -> int:
    m = re.search(r"stopped at step (\d+)", line)
    assert m, f"the last line does not say at which step the run stopped: {line!r}"
    return int(m.group(1))


def _write_pngs(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"photo-{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def test_ctrl_c_in_epoch_2_then_resume_export_evaluate_predict_report(engine, tmp_path):
    with engine.start("train", *TINY, "--epochs", EPOCHS, "--out", "runs/j", cwd=tmp_path) as run:
        run.wait_for(rf"^epoch 1/{EPOCHS}:")
        run.send_signal(signal.SIGINT)  # Ctrl-C, during epoch 2
        p = run.finish()
    assert p.returncode == 130, p.stderr
    assert_no_traceback(p)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: "), p.stderr
    assert "continue with --resume --out runs/j" in last, last
    step = _stopped_step(last)
    assert STEPS_PER_EPOCH <= step < EPOCHS * STEPS_PER_EPOCH, last
    assert checkpoint_exists(tmp_path / "runs/j", step), sorted(p.name for p in (tmp_path / "runs/j").rglob("*"))
    assert f"runs/j/checkpoints/ckpt-{step}" in last, last

    resumed = engine.run("train", "--resume", "--out", "runs/j", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {step}" in resumed.stdout, resumed.stdout
    history = json.loads((tmp_path / "runs/j/history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    metrics = json.loads((tmp_path / "runs/j/metrics.json").read_text())
    assert metrics["steps"] == EPOCHS * STEPS_PER_EPOCH

    exported = engine.run("export", "onnx", "./runs/j/", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "runs/j/model.onnx").is_file()

    evaluated = engine.run("evaluate", "runs/j/model.onnx", "--against", "./runs/j/", "--limit-test", "512",
                           cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    m = re.search(r"agreement ([\d.]+)%", evaluated.stdout)
    assert m and float(m.group(1)) >= 99.0, evaluated.stdout

    names = _write_pngs(tmp_path / "imgs")
    classes = json.loads((tmp_path / "runs/j/classes.json").read_text())
    for args in (["./imgs/", "--model", "runs/j/model.onnx"], [f"imgs/{names[0]}", "--model", "runs/j"]):
        predicted = engine.run("predict", *args, "--topk", "2", cwd=tmp_path)
        assert predicted.returncode == 0, predicted.stderr
        lines = predicted.stdout.strip().splitlines()
        shown = names if args[0] == "./imgs/" else names[:1]
        assert len(lines) == len(shown), predicted.stdout
        for line, name in zip(lines, shown):
            assert name in line and any(c in line for c in classes), line

    reported = engine.run("report", "runs/j", cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    table = reported.stdout.splitlines()
    assert table[0].startswith("| run ") and "test top-1" in table[0], reported.stdout
    row = next(x for x in table if "runs/j" in x)
    assert f"{metrics['test_accuracy']:.4f}" in row, reported.stdout


def test_sigterm_stops_with_exit_75_and_its_hint_resumes(engine, tmp_path):
    with engine.start("train", *TINY, "--epochs", EPOCHS, "--out", "runs/t", cwd=tmp_path) as run:
        run.wait_for(rf"^epoch 1/{EPOCHS}:")
        run.send_signal(signal.SIGTERM)
        p = run.finish()
    assert p.returncode == 75, p.stderr
    assert_no_traceback(p)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("preempted: "), p.stderr
    step = _stopped_step(last)
    assert checkpoint_exists(tmp_path / "runs/t", step)
    hint = last.split("continue with ", 1)
    assert len(hint) == 2, last
    words = hint[1].split()
    assert words == ["--resume", "--out", "runs/t"], last  # the --out as the user typed it

    resumed = engine.run("train", *words, cwd=tmp_path)  # word for word
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {step}" in resumed.stdout, resumed.stdout
    assert json.loads((tmp_path / "runs/t/metrics.json").read_text())["steps"] == EPOCHS * STEPS_PER_EPOCH


def test_kill_9_after_the_first_checkpoint_then_resume_continues_from_it(engine, tmp_path):
    with engine.start("train", *TINY, "--epochs", EPOCHS, "--out", "./runs/k/", cwd=tmp_path) as run:
        run.wait_for(rf"^epoch 1/{EPOCHS}:")  # printed after epoch 1's checkpoint is saved
        run.send_signal(signal.SIGKILL)
        p = run.finish()
    assert p.returncode == -signal.SIGKILL
    step = latest_checkpoint_step(tmp_path / "runs/k")
    assert step >= STEPS_PER_EPOCH and checkpoint_exists(tmp_path / "runs/k", step)

    resumed = engine.run("train", "--resume", "--out", "./runs/k/", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {step}" in resumed.stdout, resumed.stdout
    history = json.loads((tmp_path / "runs/k/history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))


def _ctrl_c_before_training(engine, tmp_path, trigger: str, *flags):
    with engine.start("train", *TINY, *flags, "--epochs", EPOCHS, "--out", "runs/s", cwd=tmp_path) as run:
        run.wait_for(trigger)
        run.send_signal(signal.SIGINT)
        p = run.finish()
    assert p.returncode == 130, p.stdout + p.stderr
    assert_no_traceback(p)
    lines = stderr_lines(p)
    assert len(lines) == 1 and lines[0].startswith("interrupted"), p.stderr
    assert not re.search(r"^epoch \d", p.stdout, re.M), "the signal came too late: training had started"
    out = tmp_path / "runs/s"
    if out.exists():  # then it must be a run that --resume continues
        left = sorted(str(x.relative_to(out)) for x in out.rglob("*"))
        assert (out / "config.json").is_file(), f"runs/s is left, but not as a run to resume: it holds {left}"
        resumed = engine.run("train", "--resume", "--out", "runs/s", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
    return p


def test_ctrl_c_at_start_up_leaves_no_half_run(engine, tmp_path, base_run):
    # base_run: the data are decoded and the speed choice for this model and batch is cached, so
    # "config:" is the first line of output and the signal lands while the data are read
    _ctrl_c_before_training(engine, tmp_path, r"^config:")


def test_ctrl_c_during_the_speed_trials_leaves_no_half_run(engine, tmp_path, base_run):
    # batch 32: a setting no other run of the session uses, so the speed choice times it
    _ctrl_c_before_training(engine, tmp_path, r"^speed: timing", "--batch-size", "32")

