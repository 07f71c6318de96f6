"""Training throughput: our compiled loop in its settings vs Keras `model.fit` on the same model,
data and global batch.

Each round is a timed window of WINDOW steps after a warm-up round (tracing, compilation), so a
round's time is wall time for WINDOW x BATCH images; img/s = images / mean round time.

    pytest bench/test_train_throughput.py --benchmark-json=bench-train.json
"""
import keras
import pytest
import tensorflow as tf

import kernels
from bench.conftest import QUICK, machine_info
from engine import data, precision
from engine.config import Config
from engine.loop import smoothed_cross_entropy
from engine.trainer import build_training, make_optimizer

MODEL = "tiny" if QUICK else "resnet9"
BATCH = 32 if QUICK else 128
WINDOW = 4 if QUICK else 12       # steps per timed round
ROUNDS = 1 if QUICK else 3
SUBSET = BATCH * (WINDOW + 4)

# name: (xla, amp, steps_per_call)
LOOP_CONFIGS = {
    "loop fp32 spc1": (False, False, 1),
    "loop fp32 spc10": (False, False, 10),
    "loop xla spc10": (True, False, 10),
    "loop amp spc10": (False, True, 10),
}


def _cfg(xla=False, amp=False, spc=10) -> Config:
    cfg = Config()
    cfg = cfg.replace("model", model=MODEL)
    cfg = cfg.replace("optim", batch_size=BATCH, lr=0.05, schedule="constant")
    return cfg.replace("run", xla=xla, amp=amp, steps_per_call=spc)


@pytest.fixture
def train_arrays(splits):
    x, y, _, _ = data.balanced_subset(splits.x_train, splits.y_train, SUBSET, seed=0)
    return x, y


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _record(benchmark, name, cfg):
    info = machine_info()
    info.update(model=MODEL, config=name, batch=BATCH, window_steps=WINDOW,
                precision=precision.policy_name(cfg.run.amp), xla=cfg.run.xla,
                steps_per_call=cfg.run.steps_per_call)
    benchmark.extra_info.update(info)


def _img_s(benchmark):
    benchmark.extra_info["img_s"] = WINDOW * BATCH / benchmark.stats.stats.mean


@pytest.mark.parametrize("name", list(LOOP_CONFIGS))
def test_loop(benchmark, train_arrays, name):
    xla, amp, spc = LOOP_CONFIGS[name]
    cfg = _cfg(xla, amp, spc)
    keras.utils.set_random_seed(0)
    policy = precision.apply(amp)
    x, y = train_arrays
    pipe = data.Pipeline(x, y)
    _, _, loop = build_training(cfg, 10, pipe.steps_per_epoch(BATCH), policy)
    iterator = iter(pipe.train(BATCH, seed=0, epoch=0).repeat())

    def window():
        done = 0
        while done < WINDOW:
            n = min(spc, WINDOW - done)
            loss, _, _ = loop.train_calls(iterator, tf.constant(n, tf.int32))
            float(loss)  # wait for the device
            done += n

    _record(benchmark, name, cfg)
    benchmark.pedantic(window, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    _img_s(benchmark)


def test_keras_fit(benchmark, train_arrays):
    """The seed experiments' way: preprocessing in a tf.data map on the host, float32 batches fed to
    `model.fit`, default `steps_per_execution=1`, no XLA. Same model, augmentation, loss, optimizer."""
    cfg = _cfg()
    keras.utils.set_random_seed(0)
    precision.apply(False)
    x, y = train_arrays
    from engine import models
    spec = models.get(MODEL)
    model = models.build(MODEL, 32, 10)
    o = cfg.optim
    model.compile(optimizer=make_optimizer(o, o.lr), jit_compile=False,
                  loss=lambda yt, yp: smoothed_cross_entropy(tf.cast(tf.reshape(yt, [-1]), tf.int32), yp, 10,
                                                             o.label_smoothing),
                  metrics=["sparse_categorical_accuracy"])

    def host_preprocess(images, labels, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        images = kernels.random_flip(kernels.random_crop(images, crop_seed, 4), flip_seed)
        return kernels.normalize(images, spec.normalization), labels

    pipe = data.Pipeline(x, y)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip(pipe.train(BATCH, 0, 0).repeat(), seeds)
    ds = ds.map(lambda b, s: host_preprocess(b[0], b[1], s), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    def window():
        model.fit(ds, epochs=1, steps_per_epoch=WINDOW, verbose=0)

    _record(benchmark, "keras fit", cfg)
    benchmark.pedantic(window, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    _img_s(benchmark)
