"""Input pipeline alone: how many img/s tf.data (permute, gather uint8 batches, prefetch) plus the
step's device preprocessing (augmentation, upsampling, normalisation; no model) can deliver, for the
same models and batches as the training benchmark. The report divides it by the training step's
img/s: a ratio well above 1 means training is not input-bound.

    pytest bench/test_input_pipeline.py --benchmark-json=bench-input.json
"""
import pytest
import tensorflow as tf

from bench.conftest import QUICK, machine_info
from bench.test_train_throughput import MODELS, _arrays, _cfg
from engine.data.pipeline import Pipeline
from engine.kernels import Preprocess
from engine.train.loop import StepConfig, augment

ROUNDS = 1 if QUICK else 3
STEPS = 4 if QUICK else 20  # batches per timed round


@pytest.mark.parametrize("label", list(MODELS))
def test_input_pipeline(benchmark, request, label):
    cfg = _cfg(label)
    _, size, batch, _, _ = MODELS[label]
    x, y = _arrays(request, label)
    from engine import models
    spec = models.get(cfg.model.model)
    step_cfg = StepConfig(num_classes=10, global_batch=batch,
                          preprocess=Preprocess(size, spec.normalization, cfg.model.upsample_method,
                                                cfg.image_shape[2]),
                          crop_pad=cfg.model.crop_pad,
                          pad_mode=cfg.model.pad_mode, flip=cfg.model.flip, train_size=len(x),
                          steps_per_epoch=len(x) // batch)
    pipe = Pipeline(x, y)
    iterator = iter(pipe.train(batch, seed=0, epoch=0).repeat())

    @tf.function
    def consume(n):
        total = tf.constant(0.0)
        for i in tf.range(n):
            images, labels, index = next(iterator)
            seed = tf.stack([tf.constant(0, tf.int64), tf.cast(i, tf.int64)])
            out = step_cfg.preprocess(augment(images, index, tf.cast(i, tf.int64), seed, step_cfg))
            total += tf.reduce_sum(out[:, 0, 0, 0])  # keep the work alive
        return total

    info = machine_info()
    info.update(kind="input", model=label, batch=batch, steps=STEPS)
    benchmark.extra_info.update(info)
    benchmark.pedantic(lambda: float(consume(tf.constant(STEPS))), rounds=ROUNDS, warmup_rounds=1, iterations=1)
    benchmark.extra_info["img_s"] = STEPS * batch / benchmark.stats.stats.mean
