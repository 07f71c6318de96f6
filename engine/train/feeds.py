"""The datasets a run's loop reads: the training split epoch by epoch, the validation and test
splits for evaluation, placed for the strategy (one device, several replicas, several workers)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from engine import devices
from engine.contract import inference_batch
from engine.data.pipeline import Pipeline
from engine.errors import EngineError
from engine.train import distribute


def staging_device(strategy, have_gpu: bool) -> str | None:
    """Where batches are staged ahead of the step: GPU memory on a GPU under the default strategy
    only. Any tf.distribute strategy places batches itself, and prefetch_to_device cannot be
    wrapped by one: a MirroredStrategy must serialise the dataset, which its copy-to-device stage
    does not support (even with a single replica)."""
    import tensorflow as tf
    default = strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()
    return "/gpu:0" if have_gpu and default else None


@dataclasses.dataclass(frozen=True)
class SelectiveTTA:
    """What Feeds.selective_tta measured on the test split."""
    loss: float           # of the plain predictions
    accuracy: float       # of the plain predictions
    tta_accuracy: float   # the chosen images with their TTA prediction, the others with their plain one
    tta_images: int       # the images the views were computed for


class Feeds:
    def __init__(self, strategy, train, val, test, val_is_test: bool, batch_size: int, input_side: int):
        self.strategy, self.batch_size = strategy, batch_size
        self.eval_batch = max(batch_size, inference_batch(input_side))
        self.pipes = {"train": Pipeline(*train), "val": Pipeline(*val)}
        self.pipes["test"] = self.pipes["val"] if val_is_test else Pipeline(*test)
        self.stage_on = staging_device(strategy, bool(devices.gpus()))
        replicas = strategy.num_replicas_in_sync
        for split in ("val", "test"):
            if self.pipes[split].n < replicas:
                raise EngineError(f"the {split} split has {self.pipes[split].n} images, fewer than the {replicas} "
                                  f"replicas that evaluate it; use more images or fewer workers")

    def train(self, seed: int, epoch: int, skip: int, keep=None):
        """One epoch of training batches, the first `skip` left out (a resume mid-epoch); `keep`: a
        pruned epoch's images (Pipeline.train)."""
        s, pipe, batch = self.strategy, self.pipes["train"], self.batch_size
        if s.num_replicas_in_sync == 1:
            return s.experimental_distribute_dataset(
                pipe.train(batch, seed, epoch, skip_batches=skip, device=self.stage_on, keep=keep))
        return s.distribute_datasets_from_function(lambda ctx: pipe.train(
            batch, seed, epoch, skip, shard=distribute.shard(ctx.num_replicas_in_sync, ctx.input_pipeline_id,
                                                             ctx.num_input_pipelines, batch), keep=keep))

    def evaluate(self, loop, split: str, tta: int = 0):
        """(mean loss, accuracy) of the loop's model on "val" or "test", with test-time augmentation `tta`."""
        return loop.evaluate(self._eval_dataset(self.pipes[split]), tta)

    def _eval_dataset(self, pipe, with_index: bool = False):
        """`pipe`'s split as a distributed dataset of (images, labels[, indices into the split]) batches."""
        s = self.strategy
        if s.num_replicas_in_sync == 1:
            if not with_index:
                return s.experimental_distribute_dataset(pipe.eval(self.eval_batch))
            import tensorflow as tf
            ds = tf.data.Dataset.from_tensor_slices((pipe.x, pipe.y, tf.range(pipe.n, dtype=tf.int32)))
            return s.experimental_distribute_dataset(ds.batch(self.eval_batch).prefetch(2))
        return s.distribute_datasets_from_function(lambda ctx: self._eval_part(pipe, ctx, with_index))

    def selective_tta(self, loop, level: int, fraction: float) -> "SelectiveTTA":
        """Test-time augmentation `level` on the `fraction` of the test split whose plain prediction
        is least confident (the lowest top softmax probability; ties: the lower index first); every
        other image keeps its plain prediction. One plain pass over the split (which also gives its
        loss and accuracy), then the views over the chosen images only. The choice is made from every
        replica's predictions gathered, so it is the same on every replica and worker."""
        pipe, n = self.pipes["test"], self.pipes["test"].n
        logits, labels = loop.predict(self._eval_dataset(pipe, with_index=True), n), pipe.y.numpy()
        logits = logits.astype(np.float64)
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = float(-log_probs[np.arange(n), labels].mean())
        correct = logits.argmax(1) == labels
        confidence = np.exp(log_probs.max(1))
        k = min(n, max(math.ceil(fraction * n - 1e-9), self.strategy.num_replicas_in_sync))
        chosen = np.sort(np.lexsort((np.arange(n), confidence))[:k])
        import tensorflow as tf
        subset = Pipeline(tf.gather(pipe.x, chosen).numpy(), labels[chosen])
        _, tta_correct, count = (float(t) for t in loop.eval_calls(self._eval_dataset(subset), level))
        assert int(count) == k
        kept = np.ones(n, bool)
        kept[chosen] = False
        return SelectiveTTA(loss, float(correct.mean()), (float(correct[kept].sum()) + tta_correct) / n, k)

    def _eval_part(self, pipe, ctx, with_index: bool = False):
        """One input pipeline's part of a split for evaluation over several replicas: every replica
        gets the same number of batches (none runs out while another still evaluates: under several
        workers a replica without a batch breaks the step), each of about eval_batch / replicas
        images. The pipelines take near-equal contiguous parts of the split, all of it once."""
        import tensorflow as tf
        parts, local = ctx.num_input_pipelines, ctx.num_replicas_in_sync // ctx.num_input_pipelines
        per_replica = -(-self.eval_batch // ctx.num_replicas_in_sync)
        bounds = np.linspace(0, pipe.n, parts + 1).astype(np.int64)
        smallest = int(np.diff(bounds).min())
        batches = local * max(1, -(-smallest // (per_replica * local)))  # <= smallest: no empty batch
        chunks = np.array_split(np.arange(bounds[ctx.input_pipeline_id], bounds[ctx.input_pipeline_id + 1]), batches)
        starts = np.array([c[0] for c in chunks], np.int64)
        sizes = np.array([len(c) for c in chunks], np.int64)
        x, y = pipe.x, pipe.y
        if with_index:
            ds = tf.data.Dataset.from_tensor_slices((starts, sizes)).map(
                lambda i, k: (x[i:i + k], y[i:i + k], tf.range(i, i + k, dtype=tf.int32)))
        else:
            ds = tf.data.Dataset.from_tensor_slices((starts, sizes)).map(lambda i, k: (x[i:i + k], y[i:i + k]))
        return ds.prefetch(2)
