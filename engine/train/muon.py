"""Muon for convolution filters, SGD for the rest: the optimizer of airbench94_muon (Keller Jordan).

Every trainable variable of rank >= 3 (a convolution filter) takes a Muon step:

    b  <- mu * b + g                        momentum buffer of gradients (PyTorch's convention)
    u  <- g + mu * b                        (Nesterov; b without it)
    w  <- w * sqrt(C_out) / ||w||_F         the filter renormalised before each step
    w  <- w - lr * NS(reshape(u, [k*k*C_in, C_out]))

NS is the quintic Newton-Schulz iteration (coefficients 3.4445, -4.7750, 2.0315; 3 steps from u / ||u||)
that maps a matrix to roughly its orthogonal factor: the step's singular values are all near 1, whatever
the gradient's scale. Permuting rows or columns, or transposing, commutes with it, so the [k*k*C_in,
C_out] layout of a Keras kernel gives the transpose of what the reference computes on PyTorch's [C_out,
C_in*k*k]. The reference runs NS in bfloat16 for GPU speed; here it runs in the variables' dtype, float32
under every precision policy: on GPUs of compute capability >= 8.0 (A100, H100, ...) TensorFlow computes
float32 matrix products in TF32 by default (10-bit mantissa: still finer than bfloat16's 7), full
float32 on CPUs and older GPUs (the run's metrics.json says which: speed_choice.tf32_matmuls).

Every other variable (dense kernels, biases, norm parameters) takes PyTorch's SGD with Nesterov momentum
`aux_momentum` at `aux_lr` (biases and norm parameters at `aux_lr * bias_lr_scale`), with coupled L2:
`weight_decay / peak LR of the variable` is added to its gradient, so each step shrinks it by
weight_decay times the schedule's current fraction, whatever its LR. Keras's own `keras.optimizers.Muon`
sends every variable that is not 2-D to AdamW, so it would not orthogonalise conv filters at all.

All learning rates follow one schedule, `learning_rate` (the Muon LR; the auxiliary LRs are scaled by its
fraction of `peak_lr`), except variables given a horizon: their LR falls linearly to zero at that step
(airbench94_muon's whitening bias, trained for its first 3 epochs). Both are read at `iterations`, which
the training loop keeps equal to its own step also where loss scaling skips steps (TrainLoop).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3
NS_EPS = 1e-7


def newton_schulz(g, steps: int = NS_STEPS, eps: float = NS_EPS):
    """The approximate orthogonal factor of a 2-D matrix `g` (float32), as airbench94_muon computes it."""
    a, b, c = NS_COEFFICIENTS
    x = g / (tf.norm(g) + eps)
    tall = g.shape[0] > g.shape[1]
    if tall:  # iterate on the smaller Gram matrix
        x = tf.transpose(x)
    for _ in range(steps):
        gram = tf.matmul(x, x, transpose_b=True)
        x = a * x + tf.matmul(b * gram + c * tf.matmul(gram, gram), x)
    return tf.transpose(x) if tall else x


def is_filter(variable) -> bool:
    """The variables Muon orthogonalises: convolution filters (rank >= 3)."""
    return len(variable.shape) >= 3


@keras.saving.register_keras_serializable(package="engine")
class Muon(keras.optimizers.Optimizer):
    """See the module docstring. Biases and norm parameters are the 1-D variables; `horizons`: {variable
    path: step at which its LR reaches zero}."""

    def __init__(self, learning_rate, peak_lr: float, momentum: float = 0.6, nesterov: bool = True,
                 aux_lr: float = 1.0, aux_momentum: float = 0.85, bias_lr_scale: float = 1.0,
                 weight_decay: float = 0.0, horizons=None, ns_steps: int = NS_STEPS,
                 name: str = "muon", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.peak_lr = float(peak_lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.aux_lr = float(aux_lr)
        self.aux_momentum = float(aux_momentum)
        self.bias_lr_scale = float(bias_lr_scale)
        self.aux_weight_decay = float(weight_decay)
        self.horizons = dict(horizons or {})
        self.ns_steps = int(ns_steps)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]
        # update_step sees the backend's variables, which have no Keras path: key them as Keras does.
        self._horizons = {self._var_key(v): self.horizons[v.path] for v in variables if v.path in self.horizons}

    def _momentum_step(self, buf, gradient, mu):
        self.assign(buf, ops.add(ops.multiply(buf, mu), gradient))
        return ops.add(gradient, ops.multiply(buf, mu)) if self.nesterov else buf

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.cast(gradient, variable.dtype)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        key = self._var_key(variable)
        if key in self._horizons:
            step = ops.cast(self.iterations, variable.dtype)
            fraction = ops.clip(1.0 - step / float(self._horizons[key]), 0.0, 1.0)
        else:
            fraction = learning_rate / self.peak_lr
        if is_filter(variable):
            lr = fraction * self.peak_lr
            u = self._momentum_step(buf, gradient, ops.cast(self.momentum, variable.dtype))
            cout = variable.shape[-1]
            w = ops.multiply(variable, float(cout) ** 0.5 / (ops.norm(ops.reshape(variable, [-1])) + NS_EPS))
            update = newton_schulz(ops.reshape(u, [-1, cout]), self.ns_steps)
            self.assign(variable, ops.subtract(w, ops.multiply(ops.reshape(update, variable.shape), lr)))
            return
        peak = self.aux_lr * (self.bias_lr_scale if len(variable.shape) <= 1 else 1.0)
        if self.aux_weight_decay:
            gradient = ops.add(gradient, ops.multiply(variable, self.aux_weight_decay / peak))
        u = self._momentum_step(buf, gradient, ops.cast(self.aux_momentum, variable.dtype))
        self.assign_sub(variable, ops.multiply(u, fraction * peak))

    def get_config(self):
        config = super().get_config()
        config.update(peak_lr=self.peak_lr, momentum=self.momentum, nesterov=self.nesterov, aux_lr=self.aux_lr,
                      aux_momentum=self.aux_momentum, bias_lr_scale=self.bias_lr_scale,
                      weight_decay=self.aux_weight_decay,
                      horizons=dict(self.horizons), ns_steps=self.ns_steps)
        return config
