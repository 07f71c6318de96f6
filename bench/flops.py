"""FLOPs per image of a Keras model, counted from its layers: the work a training step does per
image, to set a step's achieved FLOP/s against the machine's measured peak (bench/test_peak.py).

A multiply-add is 2 FLOPs. Convolutions and dense layers only (the rest is a rounding error for these
models); nested models are counted through. In a training step a layer costs its forward pass, and
from the first layer with trainable weights on also the backward pass (the gradients for its input
and its weights: 2 more forward passes' worth); a frozen backbone before any trainable layer costs
its forward pass only."""
from __future__ import annotations

import math


def layer_flops(model) -> list[tuple[int, bool]]:
    """[(forward FLOPs per image, trainable)] of the conv and dense layers, in order."""
    import keras
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += layer_flops(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            positions = math.prod(layer.output.shape[1:-1])  # output pixels (1 for a dense layer on vectors)
            out.append((2 * positions * math.prod(layer.kernel.shape), bool(layer.trainable_weights)))
    return out


def forward_flops(model) -> int:
    return sum(f for f, _ in layer_flops(model))


def train_flops(model) -> int:
    """FLOPs per image of a training step."""
    total, backward = 0, False
    for flops, trainable in layer_flops(model):
        backward = backward or trainable
        total += 3 * flops if backward else flops
    return total
