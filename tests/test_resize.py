"""Progressive resizing (--resize-schedule) in training: one trace per side, train calls cut at each
phase's end, the batch the model sees at each phase's side, resume equivalence inside and after the
low-resolution phase, the same steps on two replicas as on one, the FLOP count per phase, and the
exported model's input unchanged. Invariants only, on 256 digits32 (32x32x3) with the tiny model: seconds each."""
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.kernels import downsample
from engine.train import resolve
from engine.train.loop import TrainLoop
from engine.train.trainer import Trainer
from tests.conftest import kill_after, run_trainer as run

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def tiny(out, resume=False, **run):
    """8 steps an epoch, 16 in all: 16x16 in steps 0-4 (0.3 of 16 = 4.8, rounded up to 5), 24x24 in
    5-9, 32x32 (the images' side) from step 10."""
    cfg = resolve.defaults("tiny").replace("data", data="digits32", limit=256)
    cfg = cfg.replace("model", resize_schedule="16:0.3,24:0.6").replace("optim", batch_size=32, epochs=2)
    return cfg.replace("run", **{"out": str(out), "quiet": True, "deterministic": True, "amp": False, "xla": False,
                                 "resume": resume, "keep_checkpoints": 20, **run})


def test_each_side_traces_once_untimed_and_the_calls_switch_at_the_phase_ends(tmp_path, monkeypatch):
    traced, calls = [], []
    step, call = TrainLoop._train_step, Trainer._train_call

    def counted_step(self, images, labels, index, seed, global_step, side=None):
        traced.append(side)  # (Python runs here only while TensorFlow traces)
        return step(self, images, labels, index, seed, global_step, side)

    def recorded_call(self, iterator, n, stats):
        calls.append((self.global_step, n, self.training.loop.side))
        call(self, iterator, n, stats)
    monkeypatch.setattr(TrainLoop, "_train_step", counted_step)
    monkeypatch.setattr(Trainer, "_train_call", recorded_call)
    t = run(tiny(tmp_path / "r", steps_per_call=3))
    assert sorted(traced, key=str) == [16, 24, None]  # one trace per side, over 2 epochs and 7 calls
    assert calls == [(0, 3, 16), (3, 2, 16), (5, 3, 24), (8, 2, 24), (10, 3, None), (13, 3, None)]
    # the epoch of 8 steps is cut at 5 (16 -> 24); the second at 10 (24 -> full size)
    assert t.model.inputs[0].shape[1:3] == (32, 32)
    # the first call of each side traces it: not timed as training (train_img_s counts the other calls' 7 steps)
    assert t.clock.images == (2 + 2 + 3) * 32


def test_the_speed_trial_times_the_full_size_step_under_a_schedule(monkeypatch):
    from engine.train import speed
    traced = []
    step = TrainLoop._train_step

    def counted_step(self, images, labels, index, seed, global_step, side=None):
        traced.append(side)
        return step(self, images, labels, index, seed, global_step, side)
    monkeypatch.setattr(TrainLoop, "_train_step", counted_step)
    cfg = tiny("unused").replace("model", resize_schedule="16:0.9")  # step 0 would be at 16x16
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # a library caller's own policy
    try:
        assert speed.measure_candidate(cfg, 10, False, False, 32) > 0
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # the trial's float32 is not left set
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert traced == [None]  # the step at the images' own side, the one most of the run takes


def test_the_model_sees_the_augmented_batch_shrunk_to_the_phase_side(tmp_path):
    t = Trainer(tiny(tmp_path / "r", steps_per_call=1).replace("optim", epochs=0.25), log=lambda *a: None)
    seen = []
    original = keras.Model.__call__

    def spy(model, x, *a, **kw):
        if kw.get("training"):
            seen.append(tuple(x.shape[1:3]))
        return original(model, x, *a, **kw)
    keras.Model.__call__ = spy
    try:
        t.run()
    finally:
        keras.Model.__call__ = original
    assert seen == [(16, 16), (24, 24)]  # 2 steps: 16x16 to 0.3 x 2 (rounded up: 1), then 24x24 to 0.6 x 2
    x = tf.random.uniform([2, 32, 32, 3], seed=3)
    np.testing.assert_allclose(downsample(x, 24), tf.image.resize(x, [24, 24], method="area"), atol=1e-5)


def test_resumed_inside_the_low_resolution_phase_and_after_the_switch_equals_the_straight_run(tmp_path):
    straight = run(tiny(tmp_path / "s", checkpoint_every=1))
    want = [w.numpy() for w in straight.model.weights]
    for stop in (3, 12):  # inside the 16x16 phase; after the switch to the full size
        kill_after(tmp_path / "s", stop)
        resumed = run(tiny(tmp_path / "s", resume=True, checkpoint_every=1))
        for a, b in zip(want, resumed.model.weights):
            np.testing.assert_array_equal(a, b.numpy())
        assert resumed.metrics["flops"] == straight.metrics["flops"]
        assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]


def test_training_flops_count_each_phase_at_its_side(tmp_path):
    t = run(tiny(tmp_path / "f"))
    m = t.metrics
    f = m["flops"]

    def tiny_train_flops(side, channels=3):  # engine.models.tiny by hand: conv 3x3 ->16, pool, conv 3x3 ->32, pool
        conv1 = 2 * side * side * 3 * 3 * channels * 16
        conv2 = 2 * (side // 2) ** 2 * 3 * 3 * 16 * 32
        return 3 * (conv1 + conv2 + 2 * 32 * 10)
    phases = [(16, 5 * 32), (24, 5 * 32), (32, 6 * 32)]
    assert f["train_phases"] == [{"side": s, "images": n, "train_flops_per_image": tiny_train_flops(s)}
                                 for s, n in phases]
    assert f["training_flops"] == sum(tiny_train_flops(s) * n for s, n in phases)
    assert f["train_flops_per_image"] == tiny_train_flops(32) and f["train_images_seen"] == 16 * 32
    assert m["resize_schedule"] == "16:0.3,24:0.6"
    assert json.loads((tmp_path / "f" / "config.json").read_text())["model"]["resize_schedule"] == "16:0.3,24:0.6"
    # evaluation is at the full size
    assert f["eval_flops_per_image"] == tiny_train_flops(32) // 3


def test_the_export_takes_the_full_size_image(tmp_path):
    """A run that trained at 16 and 24 pixels exports a SavedModel of 32x32 uint8 images, whose
    predictions are the trained model's on those images."""
    from engine.export.load import load_run
    from engine.export.savedmodel import export_savedmodel
    t = run(tiny(tmp_path / "e").replace("optim", epochs=0.5))
    path = export_savedmodel(load_run(str(tmp_path / "e"), "latest"), str(tmp_path / "sm"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert (spec.shape.as_list(), spec.dtype) == ([None, 32, 32, 3], tf.uint8)
    x = t.session.feeds.pipes["test"].x[:8]
    from engine.contract import OUTPUT
    logits = serve(x)[OUTPUT]
    want = t.model(t.training.preprocess(x), training=False)
    np.testing.assert_allclose(logits.numpy(), want.numpy(), atol=1e-4)


def test_a_model_that_cannot_take_the_side_is_refused_in_one_line(tmp_path):
    """A model of the user's whose Flatten fixes the side: refused when built, before any step."""
    (tmp_path / "flat.py").write_text(
        "import keras\n"
        "def build():\n"
        "    inputs = keras.Input((32, 32, 3))\n"
        "    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))\n"
        "    return keras.Model(inputs, keras.layers.Dense(10)(x))\n")
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--model", "flat:build", "--data", "digits32",
                        "--limit", "64", "--batch-size", "32", "--epochs", "1", "--resize-schedule", "24:0.5",
                        "--out", "r"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --resize-schedule: model") and "cannot train on 24x24 inputs" in last


REPLICAS = r"""
import json
import keras
from engine import data
from engine.train import resolve
from engine.train.build import build_training
from engine.train.feeds import Feeds
splits = data.load("digits32", os.environ["ENGINE_CACHE"], log=lambda *a: None)
x, y = splits.x_train[:128], splits.y_train[:128]
base = resolve.defaults("tiny").replace("run", amp=False, xla=False).replace("data", image_shape="32x32x3")
base = base.replace("optim", batch_size=32, epochs=1)
out = {}
for name, devices, schedule in (("one", ["/cpu:0"], "16:0.5"), ("two", ["/cpu:0", "/cpu:1"], "16:0.5"),
                                ("two_full_size", ["/cpu:0", "/cpu:1"], "")):
    strategy = tf.distribute.MirroredStrategy(devices)
    keras.utils.set_random_seed(0)
    training = build_training(base.replace("model", resize_schedule=schedule), 10, len(x), "float32", strategy)
    feeds = Feeds(strategy, (x, y), (x, y), (x, y), True, 32, training.preprocess.size)
    it, loop, sides = iter(feeds.train(0, 0, 0)), training.loop, []
    for step, n in ((0, 2), (2, 2)):  # 4 steps: the first 2 at 16x16
        loop.at_step(step)
        sides.append(loop.side)
        loop.train_calls(it, tf.constant(n, tf.int32))
    out[name] = {"sides": sides, "horizons": loop.horizons(), "replicas": strategy.num_replicas_in_sync,
                 "weights": [w.numpy().tolist() for w in training.model.weights]}
print(json.dumps(out))
"""


def test_two_replicas_train_the_phases_as_one_does():
    """Two replicas (logical CPUs, BatchNorm statistics over the global batch) step through the same
    phases as one replica and end with its weights, up to the rounding by which two replicas differ
    from one anyway (1e-3 on these 4 steps without resizing; 4e-4 with it); a run without the schedule
    ends far from both."""
    from tests.conftest import run_with_cpu_devices
    p = run_with_cpu_devices(REPLICAS)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    one, two, full = out["one"], out["two"], out["two_full_size"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["sides"] == two["sides"] == [16, None] and one["horizons"] == two["horizons"] == [2]
    assert full["sides"] == [None, None] and full["horizons"] == []

    def distance(a, b):
        return max(float(np.max(np.abs(np.array(u) - np.array(v)))) for u, v in zip(a["weights"], b["weights"]))
    assert distance(one, two) < 2e-3
    assert distance(two, full) > 20 * distance(one, two)
