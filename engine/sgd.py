"""SGD with PyTorch's momentum convention.

Keras's SGD keeps a buffer of learning-rate-scaled steps (m = mu*m - lr*g), PyTorch's a buffer of
gradients that the current learning rate scales when it is applied (b = mu*b + g, step -lr*b, or
-lr*(g + mu*b) with Nesterov). With a constant learning rate the two are the same optimizer. Under a
schedule they are not: Keras's momentum still carries the larger steps of earlier, higher learning
rates. On airbench's triangle (476 steps, lr 0.2 -> 1 -> 0.07 of its peak, momentum 0.85), for a
constant gradient Keras's step is 5-9% smaller than PyTorch's during the warm-up, 5% larger 76 steps
before the end and 17% larger at the last step, where the final annealing happens. Recipes taken from PyTorch (airbench) use this class to keep their schedule's meaning.
"""
import keras
from keras import ops


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
