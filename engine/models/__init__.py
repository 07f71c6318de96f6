"""Model registry. A model family is one file in this package that calls `register(...)`.

Every model takes float32 images at its input size, already upsampled and normalised by
`kernels/` (the training step and the export graph both do that part), and returns float32 logits:
the registry appends the float32 cast once, so mixed-precision models need no care of their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.errors import EngineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    body: Callable          # body(inputs: KerasTensor, num_classes: int) -> logits KerasTensor
    normalization: str      # a kernels.normalize mode
    description: str
    default_size: int = 32  # input side the model is trained at unless --upsample says otherwise
    min_size: int = 32


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise EngineError(f"unknown model {name!r}; choose from {', '.join(names())}")
    return _REGISTRY[name]


def input_size(spec: ModelSpec, upsample: int) -> int:
    """The side length the model sees: --upsample if given, else the model's default."""
    size = upsample or spec.default_size
    if size < spec.min_size:
        raise EngineError(f"model {spec.name} needs inputs of at least {spec.min_size}x{spec.min_size}, "
                          f"got --upsample {size}")
    return size


def build(name: str, size: int, num_classes: int):
    """A functional Keras model: float32 [N,size,size,3] normalised images -> float32 logits."""
    import keras
    spec = get(name)
    inputs = keras.Input((size, size, 3), name="images")
    x = spec.body(inputs, num_classes)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


# Each family registers itself on import.
from engine.models import resnet9, tiny  # noqa: E402,F401
