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


def train(out, resume=False, run=None, **optim):
    from engine.train.trainer import Trainer
    cfg = resolve.defaults("tiny").replace("data", data="digits")
    cfg = cfg.replace("optim", **{"batch_size": 64, "schedule": "constant", "epochs": 1, "lr": 0.2, **optim})
    cfg = cfg.replace("run", out=str(out), quiet=True, amp=True, deterministic=True, resume=resume, **(run or {}))
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
    # skipped (weights untouched, the scale halved), and counted: the optimizer's step is the engine's
    assert (int(iterations), int(steps), float(scale)) == (1, 1, 16384.0)


def test_skipped_steps_still_count_and_a_resume_is_exact(tmp_path, float16, monkeypatch):
    """Loss scaling starting at 2^25 overflows and skips the first steps (7 here). The engine's step
    counts them, and the optimizer's `iterations` (where Keras evaluates the LR schedule) is kept
    equal to it: seeds, the one-cycle LR, lookahead and the resume position stay on schedule, and a
    resume from the checkpoint at step 10 ends with the weights of the run straight through."""
    from engine.train.optim import make_schedule
    monkeypatch.setattr(precision, "wrap_optimizer",
                        lambda opt, policy: keras.optimizers.LossScaleOptimizer(opt, initial_scale=2.0 ** 25))
    kw = dict(epochs=2, schedule="onecycle", run=dict(checkpoint_every=10, keep_checkpoints=20))
    straight = train(tmp_path / "s", **kw)
    steps = straight.metrics["steps"]
    assert int(straight.loop.step.numpy()) == steps == 2 * (straight.session.sizes.train // 64)
    assert float(straight.optimizer.dynamic_scale.numpy()) <= 2.0 ** 20  # some steps were skipped
    assert int(straight.optimizer.iterations.numpy()) == steps
    schedule = make_schedule(straight.config.optim, steps // 2)
    assert schedule.values[1] > max(schedule.values[0], schedule.values[2])  # a schedule that moves: up, then down
    for epoch, entry in enumerate(straight.history.entries, 1):  # the LR of the epoch's next step
        assert entry["lr"] == pytest.approx(np.interp(epoch * steps // 2, schedule.steps, schedule.values), abs=1e-6)
    weights = [w.numpy() for w in straight.model.weights]
    ckdir = tmp_path / "s" / "checkpoints"  # as if the run had stopped after step 10
    for f in ckdir.glob("ckpt-*"):
        if int(f.name.split(".")[0].split("-")[1]) > 10:
            f.unlink()
    (ckdir / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\nall_model_checkpoint_paths: "ckpt-10"\n')
    resumed = train(tmp_path / "s", resume=True, **kw)
    assert resumed.metrics["steps"] == steps
    for a, b in zip(weights, resumed.model.weights):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.fixture
def float16_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def steps_with_skips(optimizer, steps: int):
    """A linear model trained `steps` one-step calls by the engine's TrainLoop under mixed_float16 with
    loss scaling from 2^25, so that its first steps overflow and are skipped; the model's weights after
    each step, the loop and its input iterator."""
    import tensorflow as tf

    from engine.kernels import Preprocess
    from engine.train.loop import StepConfig, TrainLoop
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Dense(10, name="dense")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(x))
    opt = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0 ** 25)
    loop = TrainLoop(model, opt, StepConfig(num_classes=10, global_batch=8, preprocess=Preprocess(32),
                                            loss_scaling=True))
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    it = iter(tf.data.Dataset.from_tensors((images, np.arange(8, dtype=np.int32) % 10,
                                            np.arange(8, dtype=np.int32))).repeat())
    after = []
    for _ in range(steps):
        loop.train_calls(it, tf.constant(1))
        after.append([w.numpy().copy() for w in model.trainable_weights])
    assert float(opt.dynamic_scale.numpy()) < 2.0 ** 20  # at least 5 steps were skipped
    return after, loop, it


def changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_the_lr_at_engine_step_k_is_the_schedules_at_k_after_skipped_steps(float16_policy):
    """A schedule that is 0 up to step 15 and 0.01 from step 16 on: without momentum, the weights must
    first move at step 16 exactly, and the LR Keras reads at each step is the schedule's at that step.
    Keras evaluates a schedule at the optimizer's `iterations`, which a skipped step does not advance:
    each skipped step used to shift the whole schedule one step later."""
    from engine.train.optim import PiecewiseLinear, current_lr
    schedule = PiecewiseLinear([0, 15, 16], [0.0, 0.0, 0.01])
    opt = keras.optimizers.SGD(schedule)
    after, loop, it = steps_with_skips(opt, 20)
    moved = [k for k in range(1, 20) if changed(after[k - 1], after[k])]
    assert moved[:1] == [16] and not changed(after[0], after[15])
    assert int(loop.step.numpy()) == int(opt.iterations.numpy()) == 20
    assert current_lr(loop.optimizer) == pytest.approx(0.01)
    # A checkpoint of an older engine holds the lagging `iterations` (here 5: LR 0): the next step
    # still takes the schedule's LR at the engine's step, and moves the weights.
    import tensorflow as tf
    opt.iterations.assign(5)
    weights = [w.numpy().copy() for w in loop.model.trainable_weights]
    loop.train_calls(it, tf.constant(1))
    assert changed(weights, [w.numpy() for w in loop.model.trainable_weights])
    assert int(loop.step.numpy()) == int(opt.iterations.numpy()) == 21


def test_muons_horizon_ends_at_the_engines_step_after_skipped_steps(float16_policy):
    """Muon's per-variable horizon (airbench-muon's whitening bias: LR down to 0 at the end of its
    epochs) is read at `iterations` as well: the bias given a horizon of 16 steps last moves at step 15."""
    from engine.train.muon import Muon
    from engine.train.optim import PiecewiseLinear
    opt = Muon(PiecewiseLinear([0], [0.01]), peak_lr=0.01, aux_lr=0.01, horizons={"dense/bias": 16})
    after, _, _ = steps_with_skips(opt, 20)
    bias = [[weights[1]] for weights in after]  # (kernel, bias)
    assert changed(bias[14], bias[15]) and not changed(bias[15], bias[19])
    assert changed([after[18][0]], [after[19][0]])  # the kernel, without a horizon, still trains


def test_a_collapsed_loss_scale_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, float16):
    """After a good epoch, an absurd LR: every step overflows and is skipped. After 20 in a row (the
    scale halved 20 times) the run stops with the diverged error instead of skipping forever."""
    train(tmp_path / "d", epochs=1)
    with pytest.raises(Diverged, match=r"the loss scale collapsed \(20 consecutive steps skipped.* at step \d+;"
                                       r".*ckpt-22"):
        train(tmp_path / "d", epochs=3, lr=1e30, resume=True)
    assert sorted(p.name for p in (tmp_path / "d" / "checkpoints").glob("ckpt-*.index")) == ["ckpt-22.index"]
