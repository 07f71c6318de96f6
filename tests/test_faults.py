"""Faults a long run meets: preemption (SIGTERM), kill -9, a damaged newest checkpoint. In each case
--resume must end with exactly the weights of an uninterrupted run (deterministic mode, no XLA)."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from engine.errors import EXIT_PREEMPTED
from tests.conftest import ROOT, run_cli
from tests.test_training import config, train

# The tiny model, 512 images, batch 64: 8 steps an epoch, 4 epochs, a checkpoint every 4 steps.
FLAGS = dict(epochs=4, limit=512, deterministic=True, checkpoint_every=4, keep_checkpoints=20,
             steps_per_call=1)


def cli_flags(out, data):
    return ["--model", "tiny", "--data", data, "--limit", "512", "--limit-test", "500", "--batch-size", "64",
            "--epochs", "4", "--lr", "0.2", "--deterministic", "--checkpoint-every", "4",
            "--keep-checkpoints", "20", "--steps-per-call", "1", "--quiet", "--out", str(out)]


def checkpoint_tensors(run_dir) -> dict:
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    names = [k for k in reader.get_variable_to_shape_map() if "save_counter" not in k and "OBJECT_GRAPH" not in k]
    return {k: reader.get_tensor(k) for k in names}


def assert_same_checkpoint(a, b):
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert sorted(ta) == sorted(tb)
    assert len(ta) > 10  # model weights, BN statistics, optimizer slots, step counter
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shared_data):
    """The uninterrupted run every fault is compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(config(out, shared_data, **FLAGS))
    return out


def start(out, data):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "engine.train", *cli_flags(out, data)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc, out, step: int, timeout: float = 300):
    """Block until the run has written a checkpoint at or after `step`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
        if latest and int(latest.rsplit("-", 1)[1]) >= step:
            return int(latest.rsplit("-", 1)[1])
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} after {timeout}s")


def test_sigterm_checkpoints_at_a_step_boundary_and_resume_is_exact(tmp_path, shared_data, straight):
    out = tmp_path / "run"
    proc = start(out, shared_data)
    wait_for_checkpoint(proc, out, 4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "Traceback" not in err
    (line,) = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert line.startswith("preempted: SIGTERM: stopped at step ") and "--resume" in line, line
    stopped = int(line.split("stopped at step ")[1].split()[0])
    assert 4 <= stopped < 32
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith(f"ckpt-{stopped}")  # nothing lost
    resumed = run_cli("engine.train", "--resume", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {stopped} " in resumed.stdout
    assert_same_checkpoint(straight, out)


def test_kill_9_loses_at_most_one_checkpoint_interval_and_resume_is_exact(tmp_path, shared_data, straight):
    out = tmp_path / "run"
    proc = start(out, shared_data)
    wait_for_checkpoint(proc, out, 4)
    time.sleep(random.uniform(0.0, 0.5))  # a random point after the first checkpoint
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # it was killed mid-run, not finished
    last = int(tf.train.latest_checkpoint(str(out / "checkpoints")).rsplit("-", 1)[1])
    resumed = run_cli("engine.train", "--resume", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {last} " in resumed.stdout
    assert_same_checkpoint(straight, out)


def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, shared_data, straight, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    ckdir = out / "checkpoints"
    # As if the process died while writing the checkpoint at step 16: its data file cut short.
    for f in ckdir.glob("ckpt-*"):
        if int(f.name.split(".")[0].split("-")[1]) > 16:
            f.unlink()
    (ckdir / "checkpoint").write_text('model_checkpoint_path: "ckpt-16"\n' + "".join(
        f'all_model_checkpoint_paths: "ckpt-{i}"\n' for i in (4, 8, 12, 16)))
    data_file = next(ckdir.glob("ckpt-16.data-*"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    capsys.readouterr()
    resumed = train(config(out, shared_data, resume=True, **FLAGS))
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and "ckpt-16" in err
    assert "resumed from" in err and "ckpt-12" in err
    assert resumed.metrics["steps"] == 32
    assert_same_checkpoint(straight, out)


# -- Ctrl-C, stuck runs and sweeps, through the `engine` command from the user's own working folder ------------

def engine_cmd(*args, cwd, **kw):
    """The installed `engine` console script, run from `cwd` (relative paths are the user's)."""
    exe = shutil.which("engine") or os.path.join(os.path.dirname(sys.executable), "engine")
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600, **kw)


def test_ctrl_c_checkpoints_like_sigterm_and_a_relative_resume_is_exact(tmp_path, shared_data, straight):
    """Ctrl-C (SIGINT) stops at the next step boundary after a checkpoint, with a resume hint and exit
    130; `--resume --out runs/x` from the user's folder continues onto the uninterrupted run's exact
    weights, and the interrupted epoch's history entry covers all of its steps."""
    exe = shutil.which("engine") or os.path.join(os.path.dirname(sys.executable), "engine")
    proc = subprocess.Popen([exe, "train", *cli_flags("runs/x", shared_data)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = tmp_path / "runs" / "x"
    wait_for_checkpoint(proc, out, 6)  # epoch 1 done (8 steps an epoch): the stop falls inside a later epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (line,) = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert line.startswith("interrupted: SIGINT: stopped at step ") and line.endswith(
        "continue with --resume --out runs/x"), line
    stopped = int(line.split("stopped at step ")[1].split()[0])
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith(f"ckpt-{stopped}")
    resumed = engine_cmd("train", "--resume", "--out", "runs/x", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {stopped} " in resumed.stdout
    assert_same_checkpoint(straight, out)
    import json
    history, expected = (json.loads((d / "history.json").read_text()) for d in (out, straight))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for h, e in zip(history, expected):  # the interrupted epoch's loss covers its steps before the stop too
        assert h["loss"] == pytest.approx(e["loss"], rel=1e-9) and h["accuracy"] == pytest.approx(e["accuracy"])


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0(tmp_path):
    """A run whose start wrote config.json but no checkpoint (here: the loss diverged at step 2) is not
    stuck: a new run into it is refused with the way out, and --resume starts it again from its config."""
    flags = ["--model", "tiny", "--data", "digits", "--epochs", "1", "--quiet", "--no-amp", "--no-xla",
             "--out", "./runs/d/"]
    bad = engine_cmd("train", *flags, "--schedule", "constant", "--lr", "1e38", cwd=tmp_path)
    assert bad.returncode == 3, bad.stderr
    again = engine_cmd("train", *flags, cwd=tmp_path)
    assert again.returncode == 2 and "stopped before its first checkpoint: --resume starts it again" in again.stderr
    resumed = engine_cmd("train", "--resume", "--out", "./runs/d/", "--lr", "0.05", "--schedule", "constant",
                         cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped before its first checkpoint: starting it again from step 0" in resumed.stdout
    assert (tmp_path / "runs" / "d" / "metrics.json").is_file()


def test_a_preempted_seed_sweep_continues_with_the_hint(tmp_path):
    """SIGTERM during `--seeds 0,1` says how to continue the sweep; that command finishes it."""
    flags = ["--model", "tiny", "--data", "digits", "--epochs", "3", "--batch-size", "16", "--steps-per-call", "1",
             "--quiet", "--no-amp", "--no-xla"]
    exe = shutil.which("engine") or os.path.join(os.path.dirname(sys.executable), "engine")
    proc = subprocess.Popen([exe, "train", *flags, "--seeds", "0,1", "--out", "exp"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, tmp_path / "exp" / "seed-0", 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "continue with --resume --seeds 0,1 --out exp" in err
    hint = err.strip().splitlines()[-1].split("continue with ")[1].split()
    done = engine_cmd("train", *flags, *hint, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert all((tmp_path / "exp" / f"seed-{s}" / "metrics.json").is_file() for s in (0, 1))


def test_resume_finds_checkpoints_under_a_relative_out(tmp_path, monkeypatch):
    """TensorFlow returns checkpoint paths already joined with a relative directory: they are used as
    given, not joined twice (runs/a/checkpoints/runs/a/checkpoints/ckpt-N)."""
    from engine.train.checkpoints import _candidates
    monkeypatch.chdir(tmp_path)
    v = tf.Variable(1.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), os.path.join("runs", "a", "checkpoints"), 3)
    for step in (1, 2):
        manager.save(checkpoint_number=step)
    paths = _candidates(manager)
    assert paths == [os.path.join("runs", "a", "checkpoints", f"ckpt-{s}") for s in (2, 1)]
    assert all(os.path.isfile(p + ".index") for p in paths)


def test_a_garbage_checkpoint_state_file_does_not_hide_the_checkpoints(tmp_path, shared_data, straight, capsys):
    """`checkpoints/checkpoint` (TensorFlow's index of the checkpoints) overwritten with garbage: the
    resume finds the newest ckpt-N on disk instead of saying there is nothing to resume."""
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    (out / "checkpoints" / "checkpoint").write_bytes(b"\x82\xff\x00garbage{{{")  # not even text
    newest = max(int(p.name.split("-")[1].split(".")[0]) for p in (out / "checkpoints").glob("ckpt-*.index"))
    capsys.readouterr()
    train(config(out, shared_data, resume=True, **FLAGS))
    err = capsys.readouterr().err
    assert "WARNING" not in err and "checkpoint.damaged" in err
    assert (out / "checkpoints" / "checkpoint.damaged").read_bytes().startswith(b"\x82")  # kept, not deleted
    from engine.train.checkpoints import _candidates
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), str(out / "checkpoints"), 3)
    assert _candidates(manager)[0] == str(out / "checkpoints" / f"ckpt-{newest}")


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_before_its_first_checkpoint(tmp_path):
    """`train --overwrite` moves the old run aside and drops it only once the new run has a checkpoint:
    a replacing run that fails in its first steps (here it diverges) leaves the old run as it was."""
    flags = ["--model", "tiny", "--data", "digits", "--epochs", "1", "--quiet", "--no-amp", "--no-xla", "--out", "runs/a"]
    first = engine_cmd("train", *flags, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "a"
    (run / "model.onnx").write_bytes(b"an export of the old model")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    bad = engine_cmd("train", *flags, "--overwrite", "--schedule", "constant", "--lr", "1e38", cwd=tmp_path)
    assert bad.returncode == 3, bad.stderr
    assert "the run that --overwrite was to replace is kept" in bad.stderr
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    good = engine_cmd("train", *flags, "--overwrite", "--seed", "1", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert not (run / "model.onnx").exists() and not list(run.glob(".replaced-*"))  # the old run and its export go
    import json
    assert json.loads((run / "config.json").read_text())["run"]["seed"] == 1


def test_a_resumed_sweep_starts_its_unstarted_seeds_with_the_sweeps_config(tmp_path):
    """`--resume --seeds 0,1 --out exp` names no experiment: a seed that had not started takes the
    config of the seeds that had, not the default recipe."""
    flags = ["--model", "tiny", "--data", "digits", "--epochs", "1", "--batch-size", "16", "--quiet", "--no-amp",
             "--no-xla"]
    one = engine_cmd("train", *flags, "--seeds", "0", "--out", "exp", cwd=tmp_path)  # as if stopped before seed 1
    assert one.returncode == 0, one.stderr
    done = engine_cmd("train", "--resume", "--seeds", "0,1", "--out", "exp", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import json
    cfgs = [json.loads((tmp_path / "exp" / f"seed-{s}" / "config.json").read_text()) for s in (0, 1)]
    assert cfgs[1]["model"]["model"] == "tiny" and cfgs[1]["optim"]["batch_size"] == 16
    assert cfgs[1]["run"]["seed"] == 1 and cfgs[1]["data"] == cfgs[0]["data"]


def test_a_run_of_a_fractional_epoch_count_stopped_after_its_last_step_resumes_to_its_end(tmp_path):
    """A run of 1.5 epochs whose every step is trained (stopped in its final test, say) resumes to the
    final test alone: its position is the end, not a zero-step last epoch (which divided by zero) and
    not the last epoch recorded twice."""
    import json
    cmd = [sys.executable, "-m", "engine", "train", "--model", "tiny", "--data", "digits", "--epochs", "1.5",
           "--batch-size", "256", "--no-amp", "--no-xla", "--quiet", "--out", "runs/r"]
    env = dict(os.environ, ENGINE_CACHE=str(tmp_path / "cache"))
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    first = json.loads((tmp_path / "runs/r/metrics.json").read_text())
    (tmp_path / "runs/r/metrics.json").unlink()  # as if stopped after its last checkpoint, before the end
    p = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "every epoch trained: the final test" in p.stdout + p.stderr
    history = json.loads((tmp_path / "runs/r/history.json").read_text())
    assert len(history["accuracy"] if isinstance(history, dict) else history) == 2  # epochs 1 and 1.5, once each
    again = json.loads((tmp_path / "runs/r/metrics.json").read_text())
    assert again["test_accuracy"] == first["test_accuracy"]
