"""Seed experiment 1's model (VGG16 frozen, 32->64, the seed head, batch 128): a 30-epoch run the
seed way (`model.fit`, preprocessing and upsampling in the tf.data map) against the engine's feature
cache (backbone features once for the training and test images, then only the head each epoch).

Measured parts, projected to the full data set (50,000 training + 10,000 test images):
  fit:   30 epochs x 50,000 / fit img/s  (evaluation time left out: that flatters fit)
  cache: 60,000 / feature-extraction img/s + 30 x one head epoch over 50,000 cached feature rows

    pytest bench/test_feature_cache.py --benchmark-json=bench-cache.json
"""
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine import kernels
from engine.data.pipeline import Pipeline
from bench.conftest import QUICK, FitWindows, compile_seed_style, machine_info
from engine import data, models
from engine.train import feature_cache as features
from engine.train import precision
from engine.train.resolve import defaults
from engine.train.build import build_training

SIZE = 32 if QUICK else 64
BATCH = 32 if QUICK else 128
FIT_STEPS = 2 if QUICK else 6
EXTRACT_IMAGES = 128 if QUICK else 1024
TRAIN, TEST, EPOCHS = (2048, 512, 30) if QUICK else (50000, 10000, 30)


def _cfg():
    cfg = defaults("vgg16").replace("model", weights="none", upsample=SIZE, head="seed")
    return cfg.replace("optim", batch_size=BATCH).replace("run", amp=False, xla=False)  # float32, as the seed


@pytest.fixture(autouse=True)
def _float32():
    keras.mixed_precision.set_global_policy("float32")


def test_feature_cache_vs_seed_fit(benchmark, splits):
    cfg = _cfg()
    keras.utils.set_random_seed(0)
    policy = precision.apply(False)
    spec = models.get("vgg16")
    x, y, _, _ = data.balanced_subset(splits.x_train, splits.y_train, max(EXTRACT_IMAGES, BATCH * (FIT_STEPS + 2)))

    # The seed way: host-side preprocessing + upsampling in tf.data, model.fit, the whole model each step.
    model = models.build("vgg16", SIZE, 10, cfg.model)
    compile_seed_style(model, cfg.optim)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(BATCH, drop_remainder=True)
    ds = ds.map(lambda im, lb: (kernels.normalize(kernels.upsample(im, SIZE), spec.normalization), lb),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    fit = FitWindows(model, ds, 1 + FIT_STEPS)
    fit.window(1)  # warm-up: tracing
    t0 = time.perf_counter()
    fit.window(FIT_STEPS)
    fit_img_s = FIT_STEPS * BATCH / (time.perf_counter() - t0)
    fit.close()

    # The cache: features once (timed by pytest-benchmark), then head epochs on feature rows.
    t = build_training(cfg, 10, TRAIN, policy)
    assert t.feature_cache
    loop, base, prep = t.loop, t.model.get_layer(models.BACKBONE), t.preprocess
    features.extract(base, x[:BATCH], prep)  # warm-up: tracing
    benchmark.pedantic(features.extract, args=(base, x[:EXTRACT_IMAGES], prep), rounds=1 if QUICK else 2,
                       iterations=1)
    extract_img_s = EXTRACT_IMAGES / benchmark.stats.stats.mean

    rows = np.random.default_rng(0).normal(size=(TRAIN,) + tuple(base.output.shape[1:])).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 10, TRAIN).astype(np.int32)
    pipe = Pipeline(rows, labels)
    steps = len(rows) // BATCH
    float(loop.train_calls(iter(pipe.train(BATCH, 0, 0)), tf.constant(2))[0])  # warm-up: tracing
    t0 = time.perf_counter()
    it = iter(pipe.train(BATCH, 0, 1))
    done = 0
    while done < steps:
        n = min(50, steps - done)
        float(loop.train_calls(it, tf.constant(n))[0])
        done += n
    head_epoch_s = time.perf_counter() - t0

    fit_run_s = EPOCHS * TRAIN / fit_img_s
    cache_run_s = (TRAIN + TEST) / extract_img_s + EPOCHS * head_epoch_s
    info = machine_info()
    info.update(kind="feature_cache", model=f"vgg16@{SIZE}", batch=BATCH, epochs=EPOCHS, train_images=TRAIN,
                fit_img_s=fit_img_s, extract_img_s=extract_img_s, head_epoch_s=head_epoch_s,
                fit_epoch_s=TRAIN / fit_img_s, fit_run_s=fit_run_s, cache_run_s=cache_run_s,
                speedup=fit_run_s / cache_run_s, epoch2_speedup=(TRAIN / fit_img_s) / head_epoch_s)
    benchmark.extra_info.update(info)
