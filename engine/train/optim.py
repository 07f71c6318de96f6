"""Optimisation: the run's length in steps, learning-rate schedules and the optimizer.

TorchSGD is SGD with PyTorch's momentum convention. Keras's SGD keeps a buffer of
learning-rate-scaled steps (m = mu*m - lr*g), PyTorch's a buffer of gradients that the current
learning rate scales when it is applied (b = mu*b + g, step -lr*b, or -lr*(g + mu*b) with Nesterov).
With a constant learning rate the two are the same optimizer. Under a schedule they are not: Keras's
momentum still carries the larger steps of earlier, higher learning rates. On airbench's triangle
(476 steps, lr 0.2 -> 1 -> 0.07 of its peak, momentum 0.85), for a constant gradient Keras's step is
5-9% smaller than PyTorch's during the warm-up, 5% larger 76 steps before the end and 17% larger at
the last step, where the final annealing happens. Recipes taken from PyTorch (airbench) use it to
keep their schedule's meaning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import ops

from engine.errors import EngineError


@dataclass(frozen=True)
class RunLength:
    """How long a run is, in steps: the one place that turns --epochs into steps."""
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, o, train_size: int) -> "RunLength":
        """For optimizer config `o` (its epochs, batch size) over `train_size` training images."""
        spe = train_size // o.batch_size
        return cls(spe, total_steps(o, spe))

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        """Steps of 0-based `epoch` (the last one may be short)."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)


class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear interpolation between (step, lr) knots; flat outside them. XLA-friendly: a sum of
    clipped ramps, no data-dependent control flow."""

    def __init__(self, steps, values):
        self.steps = [float(s) for s in steps]
        self.values = [float(v) for v in values]

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        lr = tf.constant(self.values[0])
        for (x0, x1), (y0, y1) in zip(zip(self.steps, self.steps[1:]), zip(self.values, self.values[1:])):
            if x1 > x0:
                lr += (y1 - y0) / (x1 - x0) * tf.clip_by_value(s - x0, 0.0, x1 - x0)
        return lr

    def get_config(self):
        return {"steps": self.steps, "values": self.values}


def total_steps(o, steps_per_epoch: int) -> int:
    """Steps in a run of `o.epochs` (a fraction ends the last epoch early)."""
    return max(1, math.ceil(round(o.epochs * steps_per_epoch, 6)))


def make_schedule(o, steps_per_epoch: int):
    total = total_steps(o, steps_per_epoch)
    warm = int(round(o.warmup * total))
    # Always a schedule object, never a float: Keras keeps a float LR in a variable that a checkpoint
    # restore would overwrite, so a resumed run would ignore a changed --lr.
    if o.schedule == "constant":
        return PiecewiseLinear([0], [o.lr])
    if o.schedule == "step":
        every = o.lr_step_epochs * steps_per_epoch
        bounds = list(range(every, total, every)) if every > 0 else []
        if not bounds:
            return PiecewiseLinear([0], [o.lr])
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [o.lr * o.lr_decay ** i for i in range(len(bounds) + 1)])
    if o.schedule == "cosine":
        if warm:
            return keras.optimizers.schedules.CosineDecay(0.0, max(total - warm, 1), warmup_target=o.lr,
                                                          warmup_steps=warm)
        return keras.optimizers.schedules.CosineDecay(o.lr, max(total, 1))
    if o.schedule == "onecycle":  # linear up to the peak and down again (Page's ResNet-9, airbench)
        return PiecewiseLinear([0, warm, total], [o.lr * (o.lr_start if warm else 1.0), o.lr, o.lr * o.lr_end])
    raise EngineError(f"unknown schedule {o.schedule!r}")


def make_optimizer(o, schedule, horizons=None):
    """The Keras optimizer. With --weight-decay-mode l2 the decay is not the optimizer's: the train
    step adds it to the gradients (TrainLoop), as it does the BatchNorm-bias LR scale; except for muon,
    whose per-group LRs and decay are its own (`horizons`: {variable path: the step its LR reaches 0})."""
    if o.optimizer == "muon":
        from engine.train.muon import Muon
        return Muon(schedule, peak_lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, aux_lr=o.aux_lr,
                    aux_momentum=o.aux_momentum, bias_lr_scale=o.bias_lr_scale, weight_decay=o.weight_decay,
                    horizons=horizons)
    decoupled = o.weight_decay if o.weight_decay_mode == "decoupled" else 0.0
    kw = dict(learning_rate=schedule, weight_decay=decoupled or None)
    if o.optimizer == "sgd":
        sgd = TorchSGD if o.sgd_momentum == "pytorch" else keras.optimizers.SGD
        opt = sgd(momentum=o.momentum, nesterov=o.nesterov, **kw)
    elif o.optimizer == "adam":
        opt = keras.optimizers.Adam(**kw)
    elif o.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(momentum=o.momentum, **kw)
    else:
        raise EngineError(f"unknown optimizer {o.optimizer!r}")
    if decoupled:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def current_lr(optimizer) -> float:
    """The learning rate at the optimizer's current step, for the epoch line and history.json. Keras
    evaluates a schedule in float32, where the sum of ramps of a PiecewiseLinear ends a one-cycle
    at +-3e-8 instead of 0: knots are interpolated here in float64, and a rate is never negative."""
    import numpy as np
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    if isinstance(schedule, PiecewiseLinear):
        import tensorflow as tf  # (a distributed optimizer's step is a MirroredVariable: no float() of it)
        step = float(tf.convert_to_tensor(getattr(inner.iterations, "value", inner.iterations)))
        lr = float(np.interp(step, schedule.steps, schedule.values))
    else:
        lr = float(inner.learning_rate)  # Keras evaluates the schedule at the current step
    return max(lr, 0.0)


@keras.saving.register_keras_serializable(package="engine")
class TorchSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with PyTorch's momentum buffer (dampening 0). Same variables, so the
    same checkpoint layout; the buffer's meaning differs, so a run must not switch between the two."""

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        self.assign(buf, ops.add(ops.multiply(buf, momentum), gradient))  # first step: buf = g
        step = ops.add(gradient, ops.multiply(buf, momentum)) if self.nesterov else buf
        self.assign_sub(variable, ops.multiply(step, learning_rate))
