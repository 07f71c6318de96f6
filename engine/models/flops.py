"""FLOPs of a Keras model, counted from its layers: what a run's metrics.json reports as its
training and evaluation cost, and what the benchmarks set a step's achieved FLOP/s against.

A multiply-add is 2 FLOPs. Convolutions and dense layers only (the rest is a rounding error for these
models); nested models are counted through. In a training step a layer costs its forward pass, and
from the first layer with trainable weights on also the backward pass (the gradients for its input
and its weights: 2 more forward passes' worth); a frozen backbone before any trainable layer costs
its forward pass only. This is Keller Jordan's convention (a training image costs 3x its forward
pass), so a run's count compares with the published ones. Evaluation counts one forward pass per
image and view (test-time augmentation level 1: 2 views, level 2: 6)."""
from __future__ import annotations

import math

TTA_VIEWS = {0: 1, 1: 2, 2: 6}  # forward passes per image at each test-time augmentation level (loop.tta_logits)


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
    """FLOPs per image of one forward pass."""
    return sum(f for f, _ in layer_flops(model))


def train_flops(model) -> int:
    """FLOPs per image of a training step."""
    total, backward = 0, False
    for flops, trainable in layer_flops(model):
        backward = backward or trainable
        total += 3 * flops if backward else flops
    return total
