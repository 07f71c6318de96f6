"""The start of a run has one owner (engine.train.startup): the config is checked once, warnings
reach the caller's `warn`, and the trainer's train calls stay the size the flags give."""
import pytest
import tensorflow as tf

from engine import train
from engine.errors import Diverged
from engine.train import resolve
from engine.train.trainer import steps_in_call


def tiny(out, **run):
    cfg = resolve.defaults("tiny").replace("data", data="digits").replace("optim", epochs=1, batch_size=64)
    return cfg.replace("run", out=str(out), quiet=True, amp=False, xla=False, **run)


def test_the_command_line_checks_a_runs_config_once(tmp_path, monkeypatch):
    from engine.train import cli
    calls = []
    check = resolve.check
    monkeypatch.setattr(resolve, "check", lambda cfg: (calls.append(cfg), check(cfg))[1])
    cli.main(["--model", "tiny", "--data", "digits", "--epochs", "1", "--no-amp", "--no-xla", "--quiet",
              "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "metrics.json").is_file()
    assert len(calls) == 1


def test_a_python_callers_warn_receives_the_runs_warnings(tmp_path, capsys):
    """engine.train.run(cfg, log=, warn=): what a run warns of reaches `warn`, not stderr (the default)."""
    out = tmp_path / "r"
    train.run(tiny(out), log=lambda *a: None)
    logs, warns = [], []
    with pytest.raises(Diverged):  # --overwrite by a run that fails before its first checkpoint
        train.run(tiny(out, overwrite=True).replace("optim", lr=1e38, schedule="constant"), log=logs.append,
                  warn=warns.append)
    assert warns == [f"{out}: the run that --overwrite was to replace is kept, as it was"]
    (out / "checkpoints" / "checkpoint").write_bytes(b"\x82\xff\x00garbage")
    warns.clear()
    metrics = train.run(tiny(out, resume=True).replace("optim", epochs=2), log=logs.append, warn=warns.append)
    assert metrics["epochs_run"] == 2
    assert any("checkpoint.damaged" in w for w in warns), warns
    assert "warning" not in capsys.readouterr().err


def test_a_train_call_needs_a_tensor_step_count(tmp_path):
    """A Python int would trace the compiled call again for each new value: refused when traced."""
    from engine.train.trainer import Trainer
    t = Trainer(tiny(tmp_path / "r"), log=lambda *a: None)
    t.run()
    iterator = iter(t.session.feeds.train(0, 0, 0))
    with pytest.raises(TypeError, match="tf.Tensor"):
        t.loop.train_calls(iterator, 2)
    assert float(t.loop.train_calls(iterator, tf.constant(2, tf.int32))[0]) > 0


@pytest.mark.parametrize("step, left, per_call, every, want", [
    (0, 10, 4, 0, 4),     # --steps-per-call
    (8, 2, 4, 0, 2),      # cut at the epoch's end
    (5, 10, 4, 6, 1),     # cut at the next checkpoint step (6)
    (6, 10, 4, 6, 4),     # a checkpoint step just passed: a whole call
])
def test_a_train_call_stops_at_the_epochs_end_and_at_a_checkpoint_step(step, left, per_call, every, want):
    assert steps_in_call(step, left, per_call, every) == want
