"""The model registry: what each registered model is, without building it.

A model is a `ModelSpec` in engine/models/catalog.py; its Keras code is a family module in this
package (airbench, resnet9, tiny, backbones), imported only when a model of that family is built, so
that listing models or checking a config loads no TensorFlow. A family module defines
`body(inputs, num_classes, opts, name) -> logits tensor` and, if its models have an init from
training data, `data_init(model, images, preprocess)`.

Every model takes float32 images at its input size, already upsampled and normalised (a
kernels.Preprocess: the training step and the export graph both apply it), and returns float32
logits: `build` appends the float32 cast once, so mixed-precision models need no care of their own.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from engine.errors import EngineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str             # the module of this package that builds it (body, data_init)
    normalization: str      # a kernels.normalize mode
    description: str
    recipe: str = "classic"  # the engine.recipes.MODEL_RECIPES entry its training flags default to
    default_size: int = 32  # input side the model is trained at unless --upsample says otherwise
    min_size: int = 32
    # An init from training data, run once before training (not on resume): the family's
    # data_init(model, uint8 training images, kernels.Preprocess).
    data_init: bool = False
    data_init_frozen: tuple = ()  # variable paths data_init sets and freezes (trained without it)
    # {variable path: N}: that variable trains only in the first N epochs, then stays frozen.
    train_epochs: dict = field(default_factory=dict)
    # The model options (config.ModelConfig fields) this model's body reads.
    options: tuple = ()
    backbone: bool = False  # holds a nested keras.applications model named BACKBONE (transfer learning)


BACKBONE = "backbone"  # the layer name of a transfer model's nested backbone
_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    return sorted(_REGISTRY)


def specs() -> list[ModelSpec]:
    return [_REGISTRY[n] for n in names()]


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


def preprocess_for(spec: ModelSpec, opts):
    """The kernels.Preprocess that turns uint8 32x32 images into this model's input (`opts`: a
    config.ModelConfig, for --upsample and --upsample-method)."""
    from engine.kernels import Preprocess
    return Preprocess(input_size(spec, opts.upsample), spec.normalization, opts.upsample_method)


def _family(spec: ModelSpec):
    return importlib.import_module(f"{__package__}.{spec.family}")


def build(name: str, size: int, num_classes: int, opts=None, *, xla: bool = False, sync_bn: bool = False):
    """A functional Keras model: float32 [N,size,size,3] normalised images -> float32 logits.
    `opts` (a config.ModelConfig) carries the options some models take (--weights, --freeze, --head,
    --width) and --no-data-init (the weights data_init would set and freeze train instead). `xla`:
    layers take their XLA-friendly training form; `sync_bn`: BatchNorm statistics over the global
    batch of several replicas, as one replica would compute them."""
    import keras
    spec = get(name)
    family = _family(spec)
    inputs = keras.Input((size, size, 3), name="images")
    x = family.body(inputs, num_classes, opts, spec.name)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    model = keras.Model(inputs, logits, name=name)
    if opts is not None and not opts.data_init:
        for v in model.weights:
            v.trainable = v.trainable or v.path in spec.data_init_frozen
    from engine.models.layers import MaxPool2
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and sync_bn:
            layer.synchronized = True
        if isinstance(layer, MaxPool2):
            layer.xla_training = xla
    return model


def data_init(spec: ModelSpec, model, images, preprocess) -> None:
    """Run the model's init from training data (uint8 images, a kernels.Preprocess)."""
    _family(spec).data_init(model, images, preprocess)


def variable(model, path: str):
    for v in model.weights:
        if v.path == path:
            return v
    raise EngineError(f"model {model.name} has no variable {path!r}")
