"""The datasets a run's loop reads: the training split epoch by epoch, the validation and test
splits for evaluation, placed for the strategy (one device, several replicas, several workers)."""
from __future__ import annotations

from engine import devices
from engine.contract import inference_batch
from engine.data.pipeline import Pipeline
from engine.train import distribute


def staging_device(strategy, have_gpu: bool) -> str | None:
    """Where batches are staged ahead of the step: GPU memory on a GPU under the default strategy
    only. Any tf.distribute strategy places batches itself, and prefetch_to_device cannot be
    wrapped by one: a MirroredStrategy must serialise the dataset, which its copy-to-device stage
    does not support (even with a single replica)."""
    import tensorflow as tf
    default = strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()
    return "/gpu:0" if have_gpu and default else None


class Feeds:
    def __init__(self, strategy, train, val, test, val_is_test: bool, batch_size: int, input_side: int):
        self.strategy, self.batch_size = strategy, batch_size
        self.eval_batch = max(batch_size, inference_batch(input_side))
        self.pipes = {"train": Pipeline(*train), "val": Pipeline(*val)}
        self.pipes["test"] = self.pipes["val"] if val_is_test else Pipeline(*test)
        self.stage_on = staging_device(strategy, bool(devices.gpus()))

    def train(self, seed: int, epoch: int, skip: int):
        """One epoch of training batches, the first `skip` left out (a resume mid-epoch)."""
        s, pipe, batch = self.strategy, self.pipes["train"], self.batch_size
        if s.num_replicas_in_sync == 1:
            return s.experimental_distribute_dataset(
                pipe.train(batch, seed, epoch, skip_batches=skip, device=self.stage_on))
        return s.distribute_datasets_from_function(lambda ctx: pipe.train(
            batch, seed, epoch, skip, shard=distribute.shard(ctx.num_replicas_in_sync, ctx.input_pipeline_id,
                                                             ctx.num_input_pipelines, batch)))

    def evaluate(self, loop, split: str, tta: int = 0):
        """(mean loss, accuracy) of the loop's model on "val" or "test", with test-time augmentation `tta`."""
        s, pipe = self.strategy, self.pipes[split]
        if s.num_replicas_in_sync == 1:
            return loop.evaluate(s.experimental_distribute_dataset(pipe.eval(self.eval_batch)), tta)
        per_replica = -(-self.eval_batch // s.num_replicas_in_sync)
        return loop.evaluate(s.distribute_datasets_from_function(
            lambda ctx: pipe.eval(per_replica, (ctx.input_pipeline_id, ctx.num_input_pipelines))), tta)
