"""Model registry. A model family is one file in this package that calls `register(...)`.

Every model takes float32 images at its input size, already upsampled and normalised by
`kernels/` (the training step and the export graph both do that part), and returns float32 logits:
the registry appends the float32 cast once, so mixed-precision models need no care of their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from engine.errors import EngineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    body: Callable          # body(inputs, num_classes, opts: ModelConfig | None) -> logits KerasTensor
    normalization: str      # a kernels.normalize mode
    description: str
    default_size: int = 32  # input side the model is trained at unless --upsample says otherwise
    min_size: int = 32
    # The training recipe this model was tuned with: {"section.field": value} applied over the
    # config defaults (which are the default model's recipe) and under any flag the user gives.
    recipe: dict = field(default_factory=dict)
    # Optional init from training data, run once before training (not on resume):
    # data_init(model, images, preprocess): uint8 training images and the device preprocessing
    # (upsample + normalise) that turns them into what the model sees.
    data_init: Optional[Callable] = None
    data_init_frozen: tuple = ()  # variable paths data_init sets and freezes (trained without it)
    # {variable path: N}: that variable trains only in the first N epochs, then stays frozen.
    train_epochs: dict = field(default_factory=dict)
    # The model options (config.ModelConfig fields) this model's body reads.
    options: tuple = ()
    # --xla's measured training speed-ups on 2-core AVX-512 CPU hosts, one per host
    # (bench/test_train_throughput.py: 'loop xla' / 'loop fp32'); empty = not measured. Drives the
    # start-of-run advice on CPUs.
    cpu_xla_speedups: tuple = ()


_REGISTRY: dict[str, ModelSpec] = {}

# Page's ResNet-9 recipe (DAWNBench): one-cycle SGD to 0.4, decoupled weight decay, 24 epochs of
# random 4-px crops and random flips. Models that do not say otherwise train with it.
CLASSIC_RECIPE = {
    "model.crop_pad": 4, "model.pad_mode": "reflect", "model.flip": "random", "model.tta": 0,
    "optim.optimizer": "sgd", "optim.lr": 0.4, "optim.momentum": 0.9, "optim.nesterov": True,
    "optim.sgd_momentum": "keras",
    "optim.weight_decay": 5e-4, "optim.weight_decay_mode": "decoupled", "optim.bias_lr_scale": 1.0,
    "optim.schedule": "onecycle", "optim.warmup": 0.2, "optim.lr_start": 0.0, "optim.lr_end": 0.0,
    "optim.label_smoothing": 0.2, "optim.epochs": 24, "optim.batch_size": 512, "optim.lookahead": False,
}


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


OPTIONS = ("weights", "freeze", "head", "width")


def check_options(spec: ModelSpec, opts) -> None:
    """A model option set away from its default on a model that does not read it is an error, not
    something silently ignored."""
    from engine.config import ModelConfig
    base = ModelConfig()
    for name in OPTIONS:
        if name not in spec.options and getattr(opts, name) != getattr(base, name):
            takers = [s.name for s in _REGISTRY.values() if name in s.options]
            raise EngineError(f"--{name} does not apply to model {spec.name}; it is for {', '.join(takers)}")


def build(name: str, size: int, num_classes: int, opts=None):
    """A functional Keras model: float32 [N,size,size,3] normalised images -> float32 logits.
    `opts` (a config.ModelConfig) carries the options some models take (--weights, --freeze, --head)."""
    import keras
    spec = get(name)
    inputs = keras.Input((size, size, 3), name="images")
    x = spec.body(inputs, num_classes, opts)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


# Each family registers itself on import.
from engine.models import airbench, backbones, resnet9, tiny  # noqa: E402,F401
