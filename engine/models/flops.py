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


def layer_flops(model, side: int | None = None) -> list[tuple[int, bool]]:
    """[(forward FLOPs per image, trainable)] of the conv and dense layers, in order; at the model's
    own input size, or given `side`, for side x side inputs (progressive resizing: the layers' output
    shapes are worked out again for that input, nothing is built or run). ValueError: the model does
    not take side x side inputs (a layer refuses the shape, or a map shrinks to nothing)."""
    import keras
    if side is not None:
        return _layer_flops_at(model, side)
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += layer_flops(layer)
        elif isinstance(layer, _counted()):
            out.append(_flops(layer, layer.output.shape))
    return out


def _counted() -> tuple:
    import keras
    return keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense


def _flops(layer, output_shape) -> tuple[int, bool]:
    positions = math.prod(output_shape[1:-1])  # output pixels (1 for a dense layer on vectors)
    return 2 * positions * math.prod(layer.kernel.shape), bool(layer.trainable_weights)


def _layer_flops_at(model, side: int) -> list[tuple[int, bool]]:
    """layer_flops at side x side inputs: the model's graph run on a symbolic [1, side, side, C] input,
    each layer's output shape from its compute_output_spec (Keras's own shape inference)."""
    import keras
    out = []

    def walk(functional, inputs):
        if isinstance(functional, keras.Sequential):
            functional = functional._functional  # (a built Sequential runs as its Functional)

        def operation_fn(op):
            def call(*args, **kwargs):
                _same_features(op, args, side)
                if isinstance(op, keras.Model):
                    return walk(op, args[0])
                kwargs.pop("training", None)
                result = op.compute_output_spec(*args, **kwargs)
                for t in keras.tree.flatten(result):
                    if len(t.shape) == 4 and any(d is not None and d < 1 for d in t.shape[1:3]):
                        raise ValueError(f"layer {op.name} would shrink a {side}x{side} input to "
                                         f"{t.shape[1]}x{t.shape[2]}")
                if isinstance(op, _counted()):
                    out.append(_flops(op, result.shape))
                return result
            return call
        # (Functional's own graph walk, as its call and compute_output_spec take it; private in Keras 3)
        return functional._run_through_graph(inputs, operation_fn=operation_fn)

    channels = model.inputs[0].shape[-1]
    walk(model, keras.KerasTensor((1, side, side, channels), dtype=model.inputs[0].dtype))
    return out


def _same_features(op, args, side: int) -> None:
    """ValueError if a layer gets inputs whose last axis (channels, features) differs from what it was
    built for: the side changed something only the side may change (a Flatten before a Dense)."""
    import keras
    try:
        built = keras.tree.flatten(op.input)
    except (AttributeError, ValueError):  # (a layer called in several places: no one input to compare)
        return
    given = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
    for now, was in zip(given, built):
        if now.shape[-1] != was.shape[-1]:
            raise ValueError(f"layer {op.name} takes inputs of {was.shape[-1]} features; {side}x{side} images give "
                             f"it {now.shape[-1]}")


def forward_flops(model, side: int | None = None) -> int:
    """FLOPs per image of one forward pass (at side x side inputs, given `side`)."""
    return sum(f for f, _ in layer_flops(model, side))


def train_flops(model, side: int | None = None) -> int:
    """FLOPs per image of a training step (at side x side inputs, given `side`)."""
    total, backward = 0, False
    for flops, trainable in layer_flops(model, side):
        backward = backward or trainable
        total += 3 * flops if backward else flops
    return total
