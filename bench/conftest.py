"""Shared fixtures for the throughput benchmarks.

ENGINE_DATA points at the data (CI: ../shared/data/cifar10-jpeg.tar.gz). ENGINE_BENCH_QUICK=1 runs
every benchmark with the tiny model, few steps and one round: it proves the suite runs, nothing more.
"""
import os
import platform

import pytest

from engine import data
from engine.config import default_cache_dir

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"


@pytest.fixture(scope="session")
def splits():
    source = os.environ.get("ENGINE_DATA")
    if not source:
        pytest.skip("set ENGINE_DATA to the CIFAR-10 data (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    return data.load(source, default_cache_dir(), log=lambda *a, **k: None)


def compile_seed_style(model, o) -> None:
    """`model.compile` as the seed experiments do it (no XLA, accuracy metric), with the engine's
    optimizer and label-smoothed loss for the optim config `o`, so fit rows differ only in the loop."""
    import tensorflow as tf

    from engine.loop import smoothed_cross_entropy
    from engine.trainer import make_optimizer
    num_classes = model.output_shape[-1]
    model.compile(optimizer=make_optimizer(o, o.lr), jit_compile=False,
                  loss=lambda yt, yp: smoothed_cross_entropy(tf.cast(tf.reshape(yt, [-1]), tf.int32), yp,
                                                             num_classes, o.label_smoothing),
                  metrics=["sparse_categorical_accuracy"])


def machine_info() -> dict:
    import tensorflow as tf

    from engine.trainer import device_name
    return {"device": device_name(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "python": platform.python_version()}
