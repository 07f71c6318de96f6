"""The feature cache: with a fully frozen backbone and no augmentation, a backbone model's features
do not change during training, so they are computed once per split (batched, on the device) and
kept in memory, and only the head trains on them, epoch after epoch. Whether a run uses it is
engine.train.resolve.feature_cache_applies.

The head model shares its layers (and so its variables) with the full model: checkpoints, the
best-epoch model and exports are the full model's, exactly as without the cache.
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from engine.contract import inference_batch
from engine.models import BACKBONE


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


def extract(base, images: np.ndarray, preprocess, batch: int = 0) -> np.ndarray:
    """Backbone features (inference mode) of uint8 images, `preprocess` = the model's device
    preprocessing (upsample + normalise); `batch` 0: inference_batch of the backbone's input."""
    batch = batch or inference_batch(base.input.shape[1])
    fn = tf.function(lambda x: base(preprocess(x), training=False))
    parts = [fn(tf.constant(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,) + tuple(base.output.shape[1:]), np.float32)


def cache_splits(model, preprocess, train, val, test, val_is_test: bool, log=print):
    """The (features, labels) of each split through the model's frozen backbone, and the seconds it took."""
    t0 = time.perf_counter()
    base = model.get_layer(BACKBONE)
    ftr, fva = extract(base, train[0], preprocess), extract(base, val[0], preprocess)
    fte = fva if val_is_test else extract(base, test[0], preprocess)
    seconds = time.perf_counter() - t0
    n = len(train[0]) + len(val[0]) + (0 if val_is_test else len(test[0]))
    log(f"feature cache: {n} images through the frozen backbone in {seconds:.1f}s; "
        f"the head trains on {ftr.shape[1:]} features ({ftr.nbytes / 2**20:.0f} MiB in memory)")
    return (ftr, train[1]), (fva, val[1]), (fte, test[1]), seconds
