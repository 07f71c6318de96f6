"""The training-step rewrites: which layers of a built model train in a faster form, applied and undone
in one place.

`apply(model, xla=..., cpu_flags=..., has_gpu=...)` gives the model's layers the faster training forms
their step takes on this hardware (engine.train.build calls it for every training run) and returns the
`Changes` it made; `Changes.undo(kinds)` gives the layers their own Keras training forms back (what the
benchmarks' A/B rows and a plain Keras script train). Every rewrite is of a training call only: a
layer's variables, config and inference call are untouched, so a saved or exported model is plain
Keras either way.

| kind            | layers                                 | when                                          |
|-----------------|----------------------------------------|-----------------------------------------------|
| `fused-bn`      | BatchNormalization: FusedBatchNormV3   | a CPU step outside XLA, no GPU                |
| `compiled-gelu` | GELU: forward and gradient compiled    | a CPU step outside XLA, no GPU                |
| `matmul-dw`     | 3x3 Conv2D: weight gradient as matmuls | as above, on a CPU with AVX-512 BF16, no AMX  |
| `xla-maxpool`   | MaxPool2: reshape + reduce_max         | --xla, on any device                          |

The measurements behind each rule are in bench/results/2026-12-05-amd-avx512/ (fused-bn/,
compiled-gelu/, matmul-weight-gradient/, matmul-weight-gradient-8x8/) and
bench/results/2026-11-30-airbench-runs/ (the max pool under XLA); `python -m bench.ab --undo KIND`
measures one rewrite against its layers' own form on another machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import keras
import tensorflow as tf

from engine import devices
from engine.models.layers import GELU, MaxPool2, conv3x3_same_matmul_weight_gradient, fused_batch_norm_training

FUSED_BN, COMPILED_GELU, MATMUL_DW, XLA_MAXPOOL = "fused-bn", "compiled-gelu", "matmul-dw", "xla-maxpool"
KINDS = (FUSED_BN, COMPILED_GELU, MATMUL_DW, XLA_MAXPOOL)
CPU_KINDS = (FUSED_BN, COMPILED_GELU, MATMUL_DW)  # the rewrites of a CPU step outside XLA

# The matmul weight gradient is faster than oneDNN's bfloat16 kernel on maps of H*W <= 64 (3x3, 4x4,
# 7x7, 8x8; not at 10x10, 15x15, 16x16) with >= 128 input and output channels (slower at 64):
# bench/results/2026-12-05-amd-avx512/matmul-weight-gradient/ and matmul-weight-gradient-8x8/.
# Read when a step is traced.
MATMUL_DW_MAX_MAP = 64
MATMUL_DW_MIN_CHANNELS = 128


@dataclass(frozen=True)
class Change:
    kind: str
    layer: object
    undo: Callable[[], None]


@dataclass
class Changes:
    """The rewrites `apply` made to one model, each undoable once."""
    changes: list = field(default_factory=list)

    @property
    def kinds(self) -> tuple:
        """The kinds of rewrite the model has, in KINDS order."""
        present = {c.kind for c in self.changes}
        return tuple(k for k in KINDS if k in present)

    def layers(self, kind: str) -> list:
        return [c.layer for c in self.changes if c.kind == kind]

    def undo(self, kinds=KINDS) -> int:
        """Give the layers rewritten by `kinds` their own training form back (before the step is
        traced); returns how many layers changed back."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown step rewrite {sorted(unknown)}; choose from {', '.join(KINDS)}")
        undone = [c for c in self.changes if c.kind in kinds]
        for c in undone:
            c.undo()
        self.changes = [c for c in self.changes if c.kind not in kinds]
        return len(undone)


def apply(model, *, xla: bool, cpu_flags, has_gpu: bool) -> Changes:
    """Rewrite `model`'s layers for its training step: under `xla` (on any device) the max pools, on a
    CPU step outside XLA (`has_gpu` False) the BatchNorms, GELUs and, where `cpu_flags` (the CPU's
    /proc/cpuinfo flags) have AVX-512 BF16 and no AMX, the 3x3 convolutions. A BatchNorm with
    cross-replica statistics keeps Keras's form."""
    cpu_graph = not xla and not has_gpu
    matmul_dw = cpu_graph and devices.bf16_without_amx(cpu_flags)
    changes = Changes()
    for layer in model._flatten_layers():
        change = None
        if isinstance(layer, keras.layers.BatchNormalization) and cpu_graph and not layer.synchronized:
            change = Change(FUSED_BN, layer, fuse_batch_norm_training(layer))
        elif isinstance(layer, MaxPool2) and xla:
            change = Change(XLA_MAXPOOL, layer, _set_flag(layer, "xla_training"))
        elif isinstance(layer, GELU) and cpu_graph:
            change = Change(COMPILED_GELU, layer, _set_flag(layer, "compiled_training"))
        elif matmul_dw and type(layer) is keras.layers.Conv2D:
            undo = matmul_weight_gradient(layer)
            change = undo and Change(MATMUL_DW, layer, undo)
        if change:
            changes.changes.append(change)
    return changes


def _set_flag(layer, name: str) -> Callable[[], None]:
    setattr(layer, name, True)
    return lambda: setattr(layer, name, False)


def fuse_batch_norm_training(layer) -> Callable[[], None]:
    """Train a `keras.layers.BatchNormalization` with TensorFlow's fused kernel (layers.
    fused_batch_norm_training): only a training call of a 4-D NHWC input with no mask, renorm or
    cross-replica statistics takes it; every other call is Keras's own. Returns the undo."""
    own = layer.call

    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable and mask is None and not layer.renorm and not layer.synchronized
                and len(inputs.shape) == 4 and layer.axis in (-1, 3)):
            return own(inputs, training=training, mask=mask)
        return fused_batch_norm_training(layer, inputs)

    layer.call = call
    return lambda: delattr(layer, "call")


def matmul_weight_gradient(layer) -> Callable[[], None] | None:
    """Give a 3x3, stride-1, 'same' `keras.layers.Conv2D` the matmul weight gradient (layers.
    conv3x3_same_matmul_weight_gradient) in bfloat16 on maps of at most MATMUL_DW_MAX_MAP pixels with
    at least MATMUL_DW_MIN_CHANNELS input and output channels; other dtypes and shapes take Keras's own
    path. Returns the undo, or None for a layer of other settings (left as it is)."""
    if not (tuple(layer.kernel_size) == (3, 3) and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1) and layer.padding == "same" and layer.groups == 1
            and layer.data_format == "channels_last"):
        return None
    own = layer.convolution_op

    def convolution_op(inputs, kernel):
        h, w, channels = inputs.shape[1], inputs.shape[2], min(inputs.shape[3] or 0, kernel.shape[3])
        if inputs.dtype != tf.bfloat16 or h is None or w is None or h * w > MATMUL_DW_MAX_MAP \
                or channels < MATMUL_DW_MIN_CHANNELS:
            return own(inputs, kernel)
        return conv3x3_same_matmul_weight_gradient(inputs, tf.cast(kernel, inputs.dtype))

    layer.convolution_op = convolution_op
    return lambda: delattr(layer, "convolution_op")
