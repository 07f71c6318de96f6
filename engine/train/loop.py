"""The compiled training mechanics: a per-replica train step, a driver that runs K steps per
tf.function call, and an eval step. Knows nothing about files, epochs or schedules (see trainer.py).

    uint8 batch -> kernels.random_crop / random_flip | alternating_flip -> kernels.upsample
                -> kernels.normalize -> [kernels.downsample: a --resize-schedule phase's side]
                -> kernels.color_jitter -> model -> label-smoothed cross entropy
                -> per-variable gradient transforms (BN-bias LR scale, coupled L2) -> optimizer
                -> every 5 steps: lookahead

Only the per-step function is jit-compiled with --xla: the driver holds the tf.data iterator,
which XLA cannot compile. Augmentation is keyed on (run seed, global step, image index), so an
image's augmentation is the same whatever the steps-per-call, after a resume, and whichever replica
or worker it lands on.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from engine import kernels
from engine.train import resize
from engine.train.lookahead import Lookahead


@dataclass(frozen=True)
class StepConfig:
    num_classes: int
    global_batch: int
    preprocess: kernels.Preprocess  # uint8 images -> the model's float input (upsample, normalise)
    crop_pad: int = 0
    pad_mode: str = "reflect"
    flip: str = "none"            # none | random | alternate
    train_size: int = 0           # images in the training set (alternate flips)
    steps_per_epoch: int = 1      # (alternate flips: the epoch of a step)
    label_smoothing: float = 0.0
    brightness: float = 0.0       # colour jitter of the model's input (kernels.color_jitter)
    contrast: float = 0.0
    l2: float = 0.0               # coupled weight decay: l2 * w added to every trainable gradient
    bias_lr_scale: float = 1.0    # gradient (= SGD step) multiplier for BatchNorm biases
    lookahead: bool = False
    total_steps: int = 1          # (lookahead: its decay schedule and its final copy)
    seed: int = 0
    xla: bool = False
    loss_scaling: bool = False    # the optimizer is a keras LossScaleOptimizer
    features: bool = False        # inputs are cached backbone features: no augmentation or preprocessing
    resize: tuple = ()            # progressive resizing: ((side, first step after its phase), ...) (train.resize)
    prune: bool = False           # sample pruning (train.prune): per-image loss weights and scores


def augment(images, index, step, seed, cfg: StepConfig):
    """Training augmentation of a uint8 batch; `index` is each image's position in the training set,
    `step` the global step and `seed` this step's seed."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if cfg.crop_pad:
        images = kernels.random_crop(images, crop_seed, cfg.crop_pad, cfg.pad_mode, index, cfg.train_size)
    if cfg.flip == "random":
        images = kernels.random_flip(images, flip_seed, index, cfg.train_size)
    elif cfg.flip == "alternate":
        images = kernels.alternating_flip(images, index, step // cfg.steps_per_epoch,
                                          tf.stack([tf.constant(cfg.seed, tf.int64), tf.constant(-1, tf.int64)]),
                                          cfg.train_size)
    return images


def tta_logits(model, images, cfg: StepConfig, level: int):
    """Test-time augmentation (airbench's levels). 0: the image; 1: mean of the image and its
    mirror; 2: half of level 1 plus half the mean of level 1 over the two 1-px diagonal
    translations (reflect padding) -- 6 views."""
    def view(x):
        return model(x if cfg.features else cfg.preprocess(x), training=False)

    def mirrored(x):
        return 0.5 * view(x) + 0.5 * view(kernels.flip_left_right(x))

    if level == 0:
        return view(images)
    logits = mirrored(images)
    if level >= 2:
        ones = tf.ones([tf.shape(images)[0]], tf.int32)
        shifted = [mirrored(kernels.translate(images, d * ones, d * ones, 1, "reflect")) for d in (1, -1)]
        logits = 0.5 * logits + 0.5 * tf.add_n(shifted) / 2.0
    return logits


def norm_biases(model) -> list:
    """The bias (beta) variables of every BatchNormalization layer, nested models included."""
    import keras
    return [layer.beta for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization) and layer.center]


def smoothed_cross_entropy(labels, logits, num_classes, smoothing):
    """Per-example cross entropy against one-hot labels smoothed by `smoothing` (float32 logits)."""
    target = tf.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)


# Consecutive steps a LossScaleOptimizer may skip for non-finite gradients before the run counts as
# diverged: each skip halves the loss scale, so 20 take Keras's initial 2^15 down to 2^-5.
MAX_SKIPS = 20


def _skip_together(grads):
    """Every replica skips a step if any replica's gradients are not finite. Keras's
    LossScaleOptimizer decides from replica 0's gradients before they are all-reduced, so an
    overflow on another replica alone would be applied (inf weights everywhere); all-reducing one
    flag and making every replica's gradients non-finite with it makes the decision the same on all."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    any_bad = tf.distribute.get_replica_context().all_reduce("SUM", tf.cast(tf.logical_not(finite), tf.float32))
    factor = tf.where(any_bad > 0, float("nan"), 1.0)
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]


def _own(fn):
    """`fn` as its own object for tf.function's retracing count. TensorFlow counts the traces of every
    tf.function made from the same code together (its key is the code object), so each new loop of a
    process -- the speed choice builds one per setting it times before the run builds its own, a
    --seeds run one per seed -- counted as a retrace of the previous ones, and the fifth in ten calls
    printed "triggered tf.function retracing". A functools.partial has no code object: the count is
    then this loop's own, and a real retrace (new shapes in one loop) still warns."""
    return functools.partial(fn)


class TrainLoop:
    """The compiled train and eval steps of one model and optimizer. `train_calls(iterator, n)` runs n
    steps in one tf.function call; `evaluate(dataset, tta)` returns (loss, accuracy). It owns the
    lookahead: `begin()` starts its slow copy from the current weights, `trackables()` is what a
    checkpoint must hold besides the model and optimizer, and the last step copies the slow weights
    into the model. `at_step(step)` freezes the variables whose training has ended by that global step
    (`train_steps`: [(variable, steps it trains)]) and sets the side the steps from there train at
    (`cfg.resize`); `train_calls` is the compiled call of that side, traced once per side."""

    def __init__(self, model, optimizer, cfg: StepConfig, strategy=None, train_steps: list | None = None):
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.strategy = strategy or tf.distribute.get_strategy()
        self.train_steps = list(train_steps or [])
        with self.strategy.scope():
            # Keras 3 creates optimizer slots lazily; do it now, outside any trace.
            optimizer.build(model.trainable_variables)
            self.lookahead = Lookahead(model, cfg.total_steps) if cfg.lookahead else None
            # The engine's own step counter: every step counts, also one a LossScaleOptimizer skips
            # (whose `iterations` does not move), so seeds, lookahead and resume stay on schedule.
            # Under loss scaling the optimizer's `iterations` is set to it at every step (_train_calls):
            # Keras evaluates the LR schedule, and Muon its horizons, at `iterations`.
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="consecutive_skips")
            if cfg.prune:  # (train.prune) every image's loss when last trained (+inf: never), its loss weight
                # this epoch (0: pruned), and this epoch's (base, span, steps)
                self.scores = tf.Variable(tf.fill([cfg.train_size], float("inf")), trainable=False, name="scores")
                self.weights = tf.Variable(tf.ones([cfg.train_size]), trainable=False, name="loss_weights")
                spe = cfg.steps_per_epoch
                self.epoch_map = tf.Variable(tf.constant([0, spe, spe], tf.int64), trainable=False, name="epoch_map")
        self._bias_ids = {id(v) for v in norm_biases(model)}
        self.side = resize.side_at(cfg.resize, 0)  # the side the next train call trains at (None: full size)
        if cfg.resize:  # the model takes the smaller sides too (each Functional's input check: the channels only)
            for layer in [model, *model._flatten_layers()]:
                if isinstance(layer, keras.Model) and layer.inputs:
                    layer.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: layer.inputs[0].shape[-1]})
        self._trace()
        self._eval_fns = {}
        self._predict_fn = None

    def _trace(self):
        """(Re)create the compiled train functions; they read the trainable set when traced."""
        self._calls = {}  # {side: the train call of that side}, each made when first needed

    @property
    def compiled(self) -> bool:
        """Whether the train call of the loop's side and trainable set has been made (and traced) yet."""
        return self.side in self._calls

    @property
    def train_calls(self):
        """The compiled train call (`train_calls(iterator, n)`) of the side the loop is at."""
        if self.side not in self._calls:
            step = tf.function(functools.partial(self._train_step, side=self.side), jit_compile=self.cfg.xla)
            self._calls[self.side] = tf.function(functools.partial(self._train_calls, step_fn=step))
        return self._calls[self.side]

    def set_trainable(self, variable, trainable: bool) -> None:
        """Freeze or unfreeze one variable between calls (the train step is retraced)."""
        if variable.trainable != trainable:
            variable.trainable = trainable
            self._trace()

    def begin(self) -> None:
        """Before the first step of a new run (after any data-dependent init)."""
        if self.lookahead is not None:
            self.lookahead.reset()

    def at_step(self, step: int) -> None:
        """Before a train call starting at global step `step` (which the trainer cuts at every
        `train_steps` horizon, so that a variable freezes at its own step)."""
        for variable, steps in self.train_steps:
            self.set_trainable(variable, step < steps)
        self.side = resize.side_at(self.cfg.resize, step)

    def horizons(self) -> list[int]:
        """The global steps at which a variable freezes or a resizing phase ends."""
        return sorted({steps for _, steps in self.train_steps} | {end for _, end in self.cfg.resize})

    def trackables(self) -> dict:
        """What a checkpoint holds of the loop besides the model and the optimizer."""
        out = {"step": self.step}
        if self.lookahead is not None:
            out["lookahead"] = self.lookahead.slow
        if self.cfg.prune:
            out.update(prune_scores=self.scores, prune_weights=self.weights)
        return out

    def begin_epoch(self, epoch_map, weights=None) -> None:
        """Before an epoch of a pruning run: its steps' positions (prune.EpochMap), and, at its start (not
        a resume inside it, whose checkpoint holds them), its loss weights."""
        self.epoch_map.assign(tf.constant([epoch_map.base, epoch_map.span, epoch_map.steps], tf.int64))
        if weights is not None:
            self.weights.assign(tf.constant(weights, tf.float32))

    def eval_calls(self, dataset, tta: int = 0):
        if tta not in self._eval_fns:
            step = tf.function(lambda x, y: self._eval_step(x, y, tta), jit_compile=self.cfg.xla)
            self._eval_fns[tta] = tf.function(_own(lambda ds: self._eval_calls(ds, step)))
        return self._eval_fns[tta](dataset)

    # -- per replica ---------------------------------------------------------------------------
    def _transform_grads(self, grads, variables):
        """BN-bias LR scale and coupled L2, per variable (SGD is linear in the gradient, so scaling a
        gradient is scaling that variable's learning rate)."""
        cfg = self.cfg
        if cfg.bias_lr_scale == 1.0 and not cfg.l2:
            return grads
        # Gradients given to a LossScaleOptimizer are scaled by its current loss scale: so is L2.
        loss_scale = self.optimizer.scale_loss(tf.constant(1.0)) if cfg.loss_scaling else 1.0
        out = []
        for g, v in zip(grads, variables):
            if g is None:
                out.append(g)
                continue
            if id(v) in self._bias_ids and cfg.bias_lr_scale != 1.0:
                g = g * tf.cast(cfg.bias_lr_scale, g.dtype)
            if cfg.l2:
                g = g + tf.cast(cfg.l2 * loss_scale, g.dtype) * tf.cast(v.value, g.dtype)
            out.append(g)
        return out

    def _train_step(self, images, labels, index, seed, step, side=None):
        cfg = self.cfg
        x = images if cfg.features else cfg.preprocess(augment(images, index, step, seed, cfg))
        if side is not None:  # a --resize-schedule phase: the augmented batch, shrunk
            x = kernels.downsample(x, side)
        if cfg.brightness or cfg.contrast:  # (its own stream of draws: the crops' and flips' stay as they were)
            x = kernels.color_jitter(x, tf.random.experimental.stateless_fold_in(seed, 1), cfg.brightness,
                                     cfg.contrast, index, cfg.train_size)
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            per_example = smoothed_cross_entropy(labels, logits, cfg.num_classes, cfg.label_smoothing)
            if cfg.prune:  # a pruning epoch's kept well-learned images: 1/(1-R) (train.prune)
                loss = tf.reduce_sum(per_example * tf.cast(tf.gather(self.weights, index), per_example.dtype))
                loss = loss / cfg.global_batch
            else:
                loss = tf.reduce_sum(per_example) / cfg.global_batch
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss) if cfg.loss_scaling else loss
        variables = self.model.trainable_variables
        grads = self._transform_grads(tape.gradient(scaled, variables), variables)
        if cfg.loss_scaling:
            if self.strategy.num_replicas_in_sync > 1:
                grads = _skip_together(grads)
            self.optimizer.apply(grads, variables)  # unscales; skips the step if not finite
        else:
            self.optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                        tf.float32))
        if cfg.prune:
            return tf.reduce_sum(per_example), correct, tf.cast(per_example, tf.float32), index
        return tf.reduce_sum(per_example), correct

    def _eval_step(self, images, labels, tta=0):
        logits = tta_logits(self.model, images, self.cfg, tta)
        per_example = smoothed_cross_entropy(labels, logits, self.cfg.num_classes, 0.0)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct), tf.cast(tf.size(labels), tf.float32)

    # -- drivers (not jitted: they hold the iterator) ------------------------------------------
    def _train_calls(self, iterator, num_steps, step_fn):
        """Run `num_steps` train steps. Returns (loss sum, correct, first bad step or -1, why): a bad
        step is a non-finite loss (why 0) or, under loss scaling, where a step skipped for
        non-finite gradients is normal, weights that became non-finite (1) or MAX_SKIPS consecutive
        skipped steps (2: the loss scale collapsed)."""
        if not tf.is_tensor(num_steps):  # (checked when traced: a Python int would trace a new call per value)
            raise TypeError(f"train_calls: num_steps must be a tf.Tensor, e.g. tf.constant({num_steps!r}, tf.int32), "
                            f"not {type(num_steps).__name__}: each new Python value traces the call again")
        s = self.strategy
        loss_total = tf.constant(0.0)
        correct_total = tf.constant(0.0)
        first_bad, why = tf.constant(-1, tf.int64), tf.constant(-1, tf.int64)
        for _ in tf.range(num_steps):
            images, labels, index = next(iterator)
            step = self.step.read_value()
            seed = tf.stack([tf.constant(self.cfg.seed, tf.int64), step])
            if self.cfg.prune:  # the step after this one: its position in a pruned epoch (train.prune.EpochMap)
                base, span, steps = tf.unstack(self.epoch_map.read_value())
                after = base + (-(-(step - base) * steps // span) + 1) * span // steps
            else:
                after = step + 1
            if self.cfg.loss_scaling or self.cfg.prune:
                # A skipped step does not advance the optimizer's `iterations`, where Keras evaluates
                # the LR schedule (and Muon its horizons): it is the engine's step, on every replica
                # (assigned here, outside the replicas' step), also for a checkpoint whose
                # `iterations` lags behind (written before it was kept equal).
                self.optimizer.iterations.assign(tf.cast(step, self.optimizer.iterations.dtype))
            applied = tf.cast(self.optimizer.iterations, tf.int64)
            if self.cfg.prune:  # every replica's losses: the scores are the same on every replica and worker
                loss, correct, per_example, trained = s.run(step_fn, args=(images, labels, index, seed, step))
                self.scores.scatter_update(tf.IndexedSlices(s.gather(per_example, 0), s.gather(trained, 0)))
            else:
                loss, correct = s.run(step_fn, args=(images, labels, index, seed, step))
            self.step.assign(after)
            if self.lookahead is not None:
                if after // Lookahead.EVERY > step // Lookahead.EVERY:  # (a pruned epoch's steps skip positions)
                    self.lookahead.update(after)
                elif after == self.cfg.total_steps:
                    self.lookahead.finish()  # the slow weights are the final model
            loss = s.reduce("SUM", loss, axis=None)
            loss_total += loss
            correct_total += s.reduce("SUM", correct, axis=None)
            reason = self._bad_step(loss, applied)
            if self.cfg.loss_scaling or self.cfg.prune:  # skipped or not, the next step's: checkpoints, the epoch's LR
                self.optimizer.iterations.assign(tf.cast(after, self.optimizer.iterations.dtype))
            bad = tf.logical_and(first_bad < 0, reason >= 0)
            first_bad, why = tf.where(bad, step, first_bad), tf.where(bad, reason, why)
        return loss_total, correct_total, first_bad, why

    def _bad_step(self, loss, applied_before):
        """Why the step just run went wrong (see _train_calls), or -1."""
        if not self.cfg.loss_scaling:
            return tf.where(tf.math.is_finite(loss), tf.constant(-1, tf.int64), tf.constant(0, tf.int64))
        skipped = tf.equal(tf.cast(self.optimizer.iterations, tf.int64), applied_before)
        self._skipped.assign(tf.where(skipped, self._skipped + 1, tf.constant(0, tf.int64)))
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v.value)) for v in self.model.trainable_variables])
        return tf.where(tf.logical_not(finite), tf.constant(1, tf.int64),
                        tf.where(self._skipped >= MAX_SKIPS, tf.constant(2, tf.int64), tf.constant(-1, tf.int64)))

    def _eval_calls(self, dataset, step_fn):
        s = self.strategy
        loss_total = correct_total = count_total = tf.constant(0.0)
        for images, labels in dataset:
            loss, correct, count = s.run(step_fn, args=(images, labels))
            loss_total += s.reduce("SUM", loss, axis=None)
            correct_total += s.reduce("SUM", correct, axis=None)
            count_total += s.reduce("SUM", count, axis=None)
        return loss_total, correct_total, count_total

    def predict(self, dataset, n: int):
        """The plain logits (float32, numpy [n, classes]) of the images of a distributed dataset of
        (images, labels, indices into the split) batches, gathered from every replica, in split order."""
        if self._predict_fn is None:
            self._predict_fn = tf.function(
                _own(lambda x: tf.cast(tta_logits(self.model, x, self.cfg, 0), tf.float32)), jit_compile=self.cfg.xla)
        s, out = self.strategy, None
        for images, _, index in dataset:
            logits = s.gather(s.run(self._predict_fn, args=(images,)), axis=0).numpy()
            index = s.gather(index, axis=0).numpy()
            if out is None:
                out, seen = np.zeros((n, logits.shape[1]), np.float32), np.zeros(n, bool)
            out[index], seen[index] = logits, True
        if out is None or not seen.all():
            raise RuntimeError("predict: the dataset did not cover every image of the split")
        return out

    # -- conveniences ----------------------------------------------------------------------------
    def evaluate(self, dataset, tta: int = 0) -> tuple[float, float]:
        """(mean loss, accuracy) over a (distributed) dataset, with test-time augmentation `tta`."""
        loss, correct, count = (float(t) for t in self.eval_calls(dataset, tta))
        return loss / max(count, 1.0), correct / max(count, 1.0)
