"""The feature cache: with a fully frozen backbone and no augmentation, a backbone model's features
do not change during training, so they are computed once per split (batched, on the device) and
kept in memory, and only the head trains on them, epoch after epoch. Whether a run uses it is
engine.train.resolve.feature_cache_applies.

The head model shares its layers (and so its variables) with the full model: checkpoints, the
best-epoch model and exports are the full model's, exactly as without the cache.

The pass through the backbone is most of a short run's time (minutes on a CPU for VGG16 at 64x64):
it shows its progress, and validation images that are test images (the default validation set is a
subset of the test split) go through it once.
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from engine.contract import inference_batch
from engine.models import BACKBONE
from engine.train.clock import Ticker


def split(model):
    """(backbone, head): the nested backbone layer, and a model from the backbone's output to the
    logits made of the full model's own head layers."""
    names = [layer.name for layer in model.layers]
    i = names.index(BACKBONE)
    base = model.layers[i]
    x = inputs = keras.Input(tuple(base.output.shape[1:]), name="features")
    for layer in model.layers[i + 1:]:
        x = layer(x)
    return base, keras.Model(inputs, x, name="head")


def extract(base, images: np.ndarray, preprocess, batch: int = 0, progress=None) -> np.ndarray:
    """Backbone features (inference mode) of uint8 images, `preprocess` = the model's device
    preprocessing (upsample + normalise); `batch` 0: inference_batch of the backbone's input.
    `progress(n)` is called after each batch with the images done so far."""
    batch = batch or inference_batch(base.input.shape[1])
    fn = tf.function(lambda x: base(preprocess(x), training=False))
    parts = []
    for i in range(0, len(images), batch):
        parts.append(fn(tf.constant(images[i:i + batch])).numpy())
        if progress is not None:
            progress(min(i + batch, len(images)))
    return np.concatenate(parts) if parts else np.zeros((0,) + tuple(base.output.shape[1:]), np.float32)


def find_rows(images: np.ndarray, among: np.ndarray) -> np.ndarray:
    """For each image, the index of an identical image in `among`, or -1."""
    where = {row.tobytes(): i for i, row in enumerate(among)}
    return np.array([where.get(row.tobytes(), -1) for row in images], dtype=np.int64)


def cache_splits(model, preprocess, train, val, test, val_is_test: bool, log=print, quiet: bool = False,
                 limit_test: int = 0):
    """The (features, labels) of each split through the model's frozen backbone, and the seconds it
    took. Validation images found in the test split take the test images' features."""
    t0 = time.perf_counter()
    base = model.get_layer(BACKBONE)
    rows = np.arange(len(val[0])) if val_is_test else find_rows(val[0], test[0])
    own = np.flatnonzero(rows < 0)  # validation images that are not test images (--val-split: all)
    n = len(train[0]) + len(test[0]) + len(own)
    test_note = "" if limit_test else " (the whole test split: --limit-test N shortens it)"
    log(f"feature cache: {n} images through the frozen backbone once: {len(train[0])} training, "
        f"{len(test[0])} test{test_note}" + (f", {len(own)} validation" if len(own) else ""))
    ticker = Ticker(n, "feature cache", quiet, log)
    done = 0

    def part(images):
        nonlocal done
        before = done
        out = extract(base, images, preprocess, progress=lambda k: ticker.update(before + k))
        done += len(images)
        return out

    ftr, fte = part(train[0]), part(test[0])
    if val_is_test:
        fva = fte
    else:
        fva = np.empty((len(rows),) + fte.shape[1:], fte.dtype)
        hit = rows >= 0
        fva[hit] = fte[rows[hit]]
        if len(own):
            fva[own] = part(val[0][own])
    seconds = time.perf_counter() - t0
    log(f"feature cache: {n} images in {seconds:.1f}s; the head trains on {ftr.shape[1:]} features "
        f"({(ftr.nbytes + fte.nbytes + (0 if val_is_test else fva.nbytes)) / 2**20:.0f} MiB in memory)")
    return (ftr, train[1]), (fva, val[1]), (fte, test[1]), seconds
