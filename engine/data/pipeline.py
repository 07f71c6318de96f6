"""tf.data pipelines over a split held on the host: uint8 batches only; all float work happens on
the device (engine.kernels)."""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def _without_autotuner(ds):
    """tf.data's autotuner thread made deleting an epoch's iterator wait for its next wake-up, whose
    period doubles while the iterator lives: 6-16 s per epoch of a full CIFAR-10 run (measured in
    metrics.json's wall_breakdown, 'input pipeline start/stop'). Gathering a batch by index is >100x
    faster than a training step, so fixed parallelism (one call per core) and a 2-batch prefetch
    lose nothing."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


class Pipeline:
    """Holds one split on the host as uint8 tensors and serves batches of it.

    Training order is a permutation drawn from (seed, epoch), so epoch E is the same whether the run
    got there directly or through a resume, and a resume mid-epoch skips exactly the batches done.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.n = len(x)
        with tf.device("/cpu:0"):
            self.x = tf.constant(x)
            self.y = tf.constant(y.astype(np.int32))

    def train(self, batch_size: int, seed: int, epoch: int, skip_batches: int = 0, device: str | None = None,
              shard: tuple[int, int, int] | None = None, keep: np.ndarray | None = None):
        """One epoch of (uint8 images, labels, indices into the split) batches. `device` (e.g.
        "/gpu:0", single-device runs only: a tf.distribute strategy places batches itself) stages
        the next batches in device memory.

        `shard` = (first replica, replicas, per-replica batch) serves one input pipeline of a
        distributed run (distribute.shard): each global batch of `batch_size` (the same images, in
        the same order, as one process would train on) is cut into per-replica batches, and this
        pipeline yields the ones of its replicas, step by step.

        `keep` (a bool per image: sample pruning) leaves the other images out of the epoch's
        permutation, which keeps its order."""
        perm = np.random.default_rng([seed, epoch]).permutation(self.n)
        if keep is not None:
            perm = perm[keep[perm]]
        steps = len(perm) // batch_size  # drop_remainder: static shapes for XLA and TensorRT
        idx = perm[:steps * batch_size].reshape(steps, batch_size)[skip_batches:].astype(np.int32)
        if shard is not None:
            first, local, per_replica = shard
            idx = idx.reshape(len(idx), -1, per_replica)[:, first:first + local].reshape(-1, per_replica)
        x, y = self.x, self.y
        ds = tf.data.Dataset.from_tensor_slices(idx)
        ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i), i),
                    num_parallel_calls=os.cpu_count() or 2, deterministic=True)
        ds = _without_autotuner(ds)
        if device:
            return ds.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
        return ds.prefetch(2)

    def eval(self, batch_size: int, shard: tuple[int, int] | None = None):
        """Batches of (uint8 images, labels); with `shard` = (pipeline, pipelines), every
        pipelines-th batch from the pipeline-th (a distributed run sums the results)."""
        ds = tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(batch_size)
        if shard is not None:
            ds = ds.shard(shard[1], shard[0])
        return _without_autotuner(ds).prefetch(2)
