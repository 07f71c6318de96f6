"""The compiled training mechanics: a per-replica train step, a driver that runs K steps per
tf.function call, and an eval step. Knows nothing about files, epochs or schedules (see trainer.py).

    uint8 batch -> kernels.random_crop / random_flip -> kernels.upsample -> kernels.normalize
                -> model -> label-smoothed cross entropy -> optimizer

Only the per-step function is jit-compiled with --xla: the driver holds the tf.data iterator,
which XLA cannot compile. Augmentation seeds are (run seed, global step, replica), so a step's
augmentation is the same whatever the steps-per-call and after a resume.
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

import kernels


@dataclass(frozen=True)
class StepConfig:
    num_classes: int
    global_batch: int
    size: int                     # model input side after upsampling
    normalization: str = "cifar10"
    upsample_method: str = "nearest"
    crop_pad: int = 0
    pad_mode: str = "reflect"
    flip: bool = False
    label_smoothing: float = 0.0
    seed: int = 0
    xla: bool = False
    loss_scaling: bool = False    # the optimizer is a keras LossScaleOptimizer


def preprocess(images, cfg: StepConfig):
    """Inference preprocessing, shared with the export graph: upsample then normalise."""
    return kernels.normalize(kernels.upsample(images, cfg.size, cfg.upsample_method), cfg.normalization)


def augment(images, seed, cfg: StepConfig):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if cfg.crop_pad:
        images = kernels.random_crop(images, crop_seed, cfg.crop_pad, cfg.pad_mode)
    if cfg.flip:
        images = kernels.random_flip(images, flip_seed)
    return images


def smoothed_cross_entropy(labels, logits, num_classes, smoothing):
    """Per-example cross entropy against one-hot labels smoothed by `smoothing` (float32 logits)."""
    target = tf.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)


class TrainLoop:
    def __init__(self, model, optimizer, cfg: StepConfig, strategy=None):
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            # Keras 3 creates optimizer slots lazily; do it now, outside any trace.
            optimizer.build(model.trainable_variables)
        self._step_fn = tf.function(self._train_step, jit_compile=cfg.xla)
        self._eval_fn = tf.function(self._eval_step, jit_compile=cfg.xla)
        self.train_calls = tf.function(self._train_calls)
        self.eval_calls = tf.function(self._eval_calls)

    # -- per replica ---------------------------------------------------------------------------
    def _train_step(self, images, labels, seed):
        cfg = self.cfg
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = tf.random.experimental.stateless_fold_in(seed, replica)
        x = preprocess(augment(images, seed, cfg), cfg)
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            per_example = smoothed_cross_entropy(labels, logits, cfg.num_classes, cfg.label_smoothing)
            loss = tf.reduce_sum(per_example) / cfg.global_batch
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss) if cfg.loss_scaling else loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        if cfg.loss_scaling:
            self.optimizer.apply(grads, variables)  # unscales; skips the step if not finite
        else:
            self.optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                        tf.float32))
        return tf.reduce_sum(per_example), correct

    def _eval_step(self, images, labels):
        logits = self.model(preprocess(images, self.cfg), training=False)
        per_example = smoothed_cross_entropy(labels, logits, self.cfg.num_classes, 0.0)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct), tf.cast(tf.size(labels), tf.float32)

    # -- drivers (not jitted: they hold the iterator) ------------------------------------------
    def _train_calls(self, iterator, num_steps):
        """Run `num_steps` train steps. Returns (loss sum, correct, first non-finite step or -1)."""
        s = self.strategy
        loss_total = tf.constant(0.0)
        correct_total = tf.constant(0.0)
        first_bad = tf.constant(-1, tf.int64)
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            step = tf.cast(self.optimizer.iterations, tf.int64)
            seed = tf.stack([tf.constant(self.cfg.seed, tf.int64), step])
            loss, correct = s.run(self._step_fn, args=(images, labels, seed))
            loss = s.reduce("SUM", loss, axis=None)
            loss_total += loss
            correct_total += s.reduce("SUM", correct, axis=None)
            bad = tf.logical_and(first_bad < 0, tf.logical_not(tf.math.is_finite(loss)))
            first_bad = tf.where(bad, step, first_bad)
        return loss_total, correct_total, first_bad

    def _eval_calls(self, dataset):
        s = self.strategy
        loss_total = correct_total = count_total = tf.constant(0.0)
        for images, labels in dataset:
            loss, correct, count = s.run(self._eval_fn, args=(images, labels))
            loss_total += s.reduce("SUM", loss, axis=None)
            correct_total += s.reduce("SUM", correct, axis=None)
            count_total += s.reduce("SUM", count, axis=None)
        return loss_total, correct_total, count_total

    # -- conveniences ----------------------------------------------------------------------------
    def evaluate(self, dataset) -> tuple[float, float]:
        """(mean loss, accuracy) over a (distributed) dataset."""
        loss, correct, count = (float(t) for t in self.eval_calls(dataset))
        return loss / max(count, 1.0), correct / max(count, 1.0)
