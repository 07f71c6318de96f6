"""Data: sources -> uint8 arrays [N,H,W,C] (one shape per data set, C = 1 or 3) + int labels (host side,
no TensorFlow) -> tf.data pipelines of uint8 batches (engine.data.pipeline, which imports TensorFlow when first used).

    sources.py        --data: the Keras downloads, digits, folder trees, tar archives, CIFAR pickles
    cifar_batches.py  the official CIFAR-10 / CIFAR-100 python pickles, through a restricted unpickler
    mnist.py          mnist.npz and the MNIST / Fashion-MNIST IDX files
    images.py         opening untrusted image files: regular files only, sizes checked from the header
    cache.py          decoded arrays cached on disk, keyed by the source's path, size and mtime
    splits.py         Splits, class-balanced subsets, the train/val/test split of a run, the memory limit
    pipeline.py       Pipeline: epochs of batches by index, sharded for distributed runs
"""
from engine.data.sources import OFFLINE_HINT, load, load_digits  # noqa: F401
from engine.data.splits import Splits, balanced_subset, prepare  # noqa: F401

