"""The float16 + loss-scaling path of `--amp` (GPUs of compute capability 7.x), run on the CPU in
float16: replicas agree on skipping a step, skipped steps keep the schedule and the resume exact,
and a collapsed loss scale stops the run. These check the engine's control flow around Keras's real
LossScaleOptimizer and TensorFlow's real MirroredStrategy; GPU float16 numerics are not checked."""
import keras
import numpy as np
import pytest

from engine.errors import Diverged
from engine.train import precision, resolve
from tests.conftest import run_with_cpu_devices


@pytest.fixture
def float16(monkeypatch):
    """mixed_float16 + loss scaling on this CPU, as --amp picks on a GPU of compute capability 7.x."""
    monkeypatch.setattr(precision, "policy_name", lambda amp: "mixed_float16" if amp else "float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def train(out, resume=False, **optim):
    from engine.train.trainer import Trainer
    cfg = resolve.defaults("tiny").replace("data", data="digits")
    cfg = cfg.replace("optim", batch_size=64, schedule="constant", **{"epochs": 1, "lr": 0.2, **optim})
    cfg = cfg.replace("run", out=str(out), quiet=True, amp=True, deterministic=True, resume=resume)
    t = Trainer(cfg, log=lambda *a: None)
    t.metrics = t.run()
    return t


REPLICA_OVERFLOW = """
import numpy as np, keras
keras.mixed_precision.set_global_policy("mixed_float16")
from engine.kernels import Preprocess
from engine.train.loop import StepConfig, TrainLoop

class OverflowOnReplica1(keras.layers.Layer):
    def call(self, x):
        ctx = tf.distribute.get_replica_context()
        if ctx is None or isinstance(ctx.replica_id_in_sync_group, int):
            return x
        return x * tf.where(tf.equal(ctx.replica_id_in_sync_group, 1), 1e30, 1.0)

s = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with s.scope():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    logits = OverflowOnReplica1(dtype="float32")(keras.layers.Activation("linear", dtype="float32")(x))
    model = keras.Model(inputs, logits)
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
loop = TrainLoop(model, opt, StepConfig(num_classes=10, global_batch=8, preprocess=Preprocess(32), loss_scaling=True), s)
before = [w.numpy().copy() for w in model.trainable_weights]
images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
ds = tf.data.Dataset.from_tensors((images, np.arange(8, dtype=np.int32) % 10, np.arange(8, dtype=np.int32)))
loop.train_calls(iter(s.experimental_distribute_dataset(ds)), tf.constant(1))
finite = all(np.isfinite(r.numpy()).all() for w in model.trainable_weights for r in s.experimental_local_results(w.value))
unchanged = all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
print("RESULT", finite, unchanged, int(opt.iterations.numpy()), int(loop.step.numpy()), float(opt.dynamic_scale.numpy()))
"""


def test_an_overflow_on_one_replica_skips_the_step_on_every_replica():
    """Keras's LossScaleOptimizer decides from replica 0's gradients before the all-reduce: an
    overflow on replica 1 alone used to be applied, writing inf into every replica's weights."""
    p = run_with_cpu_devices(REPLICA_OVERFLOW)
    assert p.returncode == 0, p.stderr[-2000:]
    finite, unchanged, iterations, steps, scale = p.stdout.split("RESULT")[1].split()
    assert finite == "True" and unchanged == "True"  # no weight touched, none non-finite
    assert (int(iterations), int(steps), float(scale)) == (0, 1, 16384.0)  # skipped, counted, scale halved


def test_skipped_steps_still_count_and_a_resume_is_exact(tmp_path, float16, monkeypatch):
    """Loss scaling starting at 2^25 overflows and skips the first steps (7 here). The optimizer's
    `iterations` does not count them; the engine's step counter does, so seeds, LR, lookahead and the
    resume position stay on schedule, and 1 epoch + --resume equals 2 epochs straight."""
    monkeypatch.setattr(precision, "wrap_optimizer",
                        lambda opt, policy: keras.optimizers.LossScaleOptimizer(opt, initial_scale=2.0 ** 25))
    straight = train(tmp_path / "s", epochs=2)
    steps = straight.metrics["steps"]
    assert int(straight.loop.step.numpy()) == steps == 2 * (straight.train_images // 64)
    assert int(straight.optimizer.iterations.numpy()) < steps  # some steps were skipped
    train(tmp_path / "r", epochs=1)
    resumed = train(tmp_path / "r", epochs=2, resume=True)
    assert resumed.metrics["steps"] == steps
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_collapsed_loss_scale_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, float16):
    """After a good epoch, an absurd LR: every step overflows and is skipped. After 20 in a row (the
    scale halved 20 times) the run stops with the diverged error instead of skipping forever."""
    train(tmp_path / "d", epochs=1)
    with pytest.raises(Diverged, match=r"the loss scale collapsed \(20 consecutive steps skipped.* at step \d+;"
                                       r".*ckpt-22"):
        train(tmp_path / "d", epochs=3, lr=1e30, resume=True)
    assert sorted(p.name for p in (tmp_path / "d" / "checkpoints").glob("ckpt-*.index")) == ["ckpt-22.index"]
