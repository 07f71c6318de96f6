"""The loop and the trainer, in process, on subsets of the real shared CIFAR-10."""
import json
import os

import keras
import numpy as np
import pytest

from engine.config import Config
from engine.train.resolve import defaults
from engine import devices
from engine.errors import EngineError
from engine.errors import Diverged
from engine.train.optim import PiecewiseLinear
from engine.train.trainer import Trainer


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def config(out, data, **kw) -> Config:
    """The tiny model on 1,024 images: seconds per epoch."""
    cfg = defaults("tiny")
    cfg = cfg.replace("data", data=data, limit=kw.pop("limit", 1024), limit_test=500)
    cfg = cfg.replace("optim", batch_size=64, epochs=kw.pop("epochs", 1), lr=kw.pop("lr", 0.2),
                      schedule=kw.pop("schedule", "onecycle"))
    return cfg.replace("run", out=str(out), quiet=True, **kw)


def train(cfg) -> Trainer:
    t = Trainer(cfg, log=lambda *a: None)
    t.metrics = t.run()
    return t


def weights(t):
    return [w.numpy() for w in t.model.weights]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def test_loop_lowers_the_loss(tmp_path, shared_data):
    t = train(config(tmp_path / "r", shared_data, limit=2048, epochs=4))
    h = t.metrics and json.load(open(tmp_path / "r" / "history.json"))
    assert len(h) == 4
    assert h[-1]["loss"] < h[0]["loss"] - 0.1
    assert t.metrics["test_accuracy"] > 0.25  # chance is 0.10; measured 0.3-0.35 for this setup
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "img_s"} <= set(h[0])


def test_steps_per_call_does_not_change_the_result(tmp_path, shared_data):
    a = train(config(tmp_path / "a", shared_data, steps_per_call=1, deterministic=True))
    b = train(config(tmp_path / "b", shared_data, steps_per_call=8, deterministic=True))
    assert a.metrics["steps"] == b.metrics["steps"] == 16
    assert_same_weights(a, b)


def test_resume_equals_straight_run(tmp_path, shared_data):
    straight = train(config(tmp_path / "s", shared_data, epochs=2, schedule="constant", deterministic=True))
    train(config(tmp_path / "r", shared_data, epochs=1, schedule="constant", deterministic=True))
    resumed = train(config(tmp_path / "r", shared_data, epochs=2, schedule="constant", deterministic=True,
                           resume=True))
    assert_same_weights(straight, resumed)
    assert [h["epoch"] for h in json.load(open(tmp_path / "r" / "history.json"))] == [1, 2]


def test_resume_mid_epoch_from_step_checkpoint(tmp_path, shared_data):
    """A checkpoint every 5 steps; going back to the one at step 20 (mid epoch 2) and resuming
    replays exactly the remaining batches and augmentations."""
    kw = dict(epochs=2, deterministic=True, checkpoint_every=5, keep_checkpoints=20)
    straight = train(config(tmp_path / "s", shared_data, **kw))
    ckdir = tmp_path / "s" / "checkpoints"
    # As if the process had died after step 20: later files gone, the state file naming ckpt-20.
    for f in ckdir.glob("ckpt-*"):
        if int(f.name.split(".")[0].split("-")[1]) > 20:
            f.unlink()
    (ckdir / "checkpoint").write_text('model_checkpoint_path: "ckpt-20"\n' + "".join(
        f'all_model_checkpoint_paths: "ckpt-{i}"\n' for i in (5, 10, 15, 16, 20)))
    resumed = train(config(tmp_path / "s", shared_data, resume=True, **kw))
    assert resumed.metrics["steps"] == 32
    assert_same_weights(straight, resumed)


def test_deterministic_and_xla_conflict(tmp_path, shared_data):
    with pytest.raises(EngineError, match="--deterministic cannot be combined with --xla"):
        train(config(tmp_path / "dx", shared_data, xla=True, deterministic=True))
    assert not (tmp_path / "dx").exists()


def test_xla_step_trains(tmp_path, shared_data):
    t = train(config(tmp_path / "x", shared_data, xla=True, epochs=2))
    h = json.load(open(tmp_path / "x" / "history.json"))
    assert np.isfinite(h[-1]["loss"]) and h[-1]["loss"] < h[0]["loss"]
    assert t.metrics["xla"]


def test_amp_trains_with_float32_logits(tmp_path, shared_data):
    t = train(config(tmp_path / "m", shared_data, amp=True))
    assert t.metrics["policy"] == "mixed_bfloat16"  # no GPU here
    assert t.model.layers[1].compute_dtype == "bfloat16"
    assert t.model.output.dtype == "float32"
    assert np.isfinite(t.metrics["test_loss"])


def test_float16_loss_scaling_path(tmp_path, shared_data, monkeypatch):
    """The --amp path of GPUs of compute capability 7.x (mixed_float16 + LossScaleOptimizer), forced
    on the CPU: it trains."""
    from engine.train import precision
    monkeypatch.setattr(precision, "policy_name", lambda amp: "mixed_float16" if amp else "float32")
    t = train(config(tmp_path / "h", shared_data, amp=True, epochs=2))
    assert isinstance(t.optimizer, keras.optimizers.LossScaleOptimizer)
    assert t.model.layers[1].compute_dtype == "float16" and t.model.output.dtype == "float32"
    h = json.load(open(tmp_path / "h" / "history.json"))
    assert np.isfinite(h[-1]["loss"]) and h[-1]["loss"] < h[0]["loss"]
    assert int(t.loop.step.numpy()) == t.metrics["steps"] == 32  # (skipped steps: tests/test_loss_scaling.py)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, shared_data):
    out = tmp_path / "n"
    train(config(out, shared_data, schedule="constant"))
    ckdir = out / "checkpoints"
    before = sorted(os.listdir(ckdir))
    with pytest.raises(Diverged, match=r"loss became (nan|inf) at step \d+.*ckpt-16"):
        train(config(out, shared_data, schedule="constant", epochs=2, lr=1e30, resume=True))
    assert sorted(os.listdir(ckdir)) == before


def test_out_holding_a_run_is_not_overwritten(tmp_path, shared_data):
    out = tmp_path / "o"
    train(config(out, shared_data))
    saved = (out / "config.json").read_text()
    with pytest.raises(EngineError, match="already holds a run"):
        train(config(out, shared_data, epochs=3))
    assert (out / "config.json").read_text() == saved
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(EngineError, match="not empty and holds no engine run"):
        train(config(tmp_path / "mine", shared_data))
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_early_stop(tmp_path, shared_data):
    """With a zero LR only BN statistics move, so validation accuracy soon stops improving; the run
    must end exactly `patience` epochs after its best one."""
    t = train(config(tmp_path / "e", shared_data, epochs=10, lr=0.0, schedule="constant").replace(
        "optim", early_stop=2))
    m = t.metrics
    assert m["stopped_early"] and m["epochs_run"] == m["best_epoch"] + 2 < 10


def test_onecycle_schedule_knots():
    s = PiecewiseLinear([0, 10, 50], [0.0, 0.4, 0.0])
    got = [float(s(i)) for i in (0, 5, 10, 30, 50, 60)]
    np.testing.assert_allclose(got, [0.0, 0.2, 0.4, 0.2, 0.0, 0.0], atol=1e-7)


def test_speed_warnings_speak_only_from_this_machines_measurements(monkeypatch):
    """The advice about a forced --amp/--xla holds no machine's timings: this CPU's timed trials, or
    that the setting was not measured here; and the one rule said without timing, bfloat16 emulated
    where the CPU has no bfloat16 instructions."""
    from engine.train import advice
    assert not hasattr(advice, "CPU_XLA_SPEEDUPS")
    monkeypatch.setattr(devices, "gpus", lambda: [])
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "avx512f"})
    (xla,) = advice.speed_warnings(False, True, "airbench-muon")
    assert "--xla was not measured against the other settings on this CPU for airbench-muon" in xla
    assert "`--amp auto --xla auto`" in xla and "2-core" not in xla and "AVX-512" not in xla
    assert advice.speed_warnings(False, False, "airbench-muon") == []  # float32 without XLA: nothing to say
    (emulated,) = advice.speed_warnings(True, False, "airbench")
    assert "emulation" in emulated
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})  # bfloat16 in hardware
    (amp,) = advice.speed_warnings(True, False, "airbench")
    assert "--amp was not measured" in amp and "emulation" not in amp
    rates = {"float32": 100.0, "float32 + XLA": 150.0, "bfloat16": 145.0}
    (slower,) = advice.speed_warnings(False, False, "airbench", rates)  # measured here: the figures speak
    assert "trained airbench at 100 img/s on this CPU, 1.5x slower than float32 + XLA (150 img/s)" in slower
    assert advice.speed_warnings(False, True, "airbench", rates) == []  # the fastest measured here
    assert advice.speed_warnings(True, False, "airbench", rates) == []  # within the speed choice's margin
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"amx_bf16", "amx_tile"})
    assert "emulation" not in " ".join(advice.speed_warnings(True, True, "airbench"))
    monkeypatch.setattr(devices, "gpus", lambda: ["GPU:0"])
    assert advice.speed_warnings(False, True, "somenet") == []
