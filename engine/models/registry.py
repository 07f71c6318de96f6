"""The model registry: what each registered model is, without building it.

A model is a `ModelSpec` in engine/models/catalog.py; its Keras code is a family module in this
package (airbench, resnet9, tiny, backbones), imported only when a model of that family is built, so
that listing models or checking a config loads no TensorFlow. A family module defines
`body(inputs, num_classes, opts, name) -> logits tensor` and, if its models have an init from
training data, `data_init(model, images, preprocess)`.

Every model takes float32 images at its input size, already upsampled and normalised (a
kernels.Preprocess: the training step and the export graph both apply it): the run's images' own
side and channels (engine.contract; keras.applications backbones: at least their default side, and
RGB, a grayscale channel repeated in the graph), and returns float32
logits: `build` appends the float32 cast once, so mixed-precision models need no care of their own.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
from dataclasses import dataclass, field

from engine.contract import IMAGE_SHAPE
from engine.errors import EngineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str             # the module of this package that builds it (body, data_init)
    normalization: str      # a kernels.normalize mode
    description: str
    recipe: str = "classic"  # the engine.recipes.MODEL_RECIPES entry its training flags default to
    # Input side the model is trained at unless --upsample says otherwise: 0 the images' own side;
    # a backbone's is a floor (larger images are not shrunk).
    default_size: int = 0
    # The smallest input side its layers take: smaller images are upsampled to it (input_size), and a
    # smaller --upsample is refused.
    min_size: int = 32
    # An init from training data, run once before training (not on resume): the family's
    # data_init(model, uint8 training images, kernels.Preprocess).
    data_init: bool = False
    data_init_frozen: tuple = ()  # variable paths data_init sets and freezes (trained without it)
    # {variable path: model option}: that variable trains only in the first N epochs (N: the option's value,
    # a config.ModelConfig field; fractional: up to the step rounded up), then stays frozen.
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


def is_user_model(name: str) -> bool:
    """`--model path/to/model.keras` or `--model pkg.module:function`: a model of the user's."""
    return name.endswith(".keras") or ":" in name


def user_spec(name: str) -> ModelSpec:
    return ModelSpec(name, "user", normalization="cifar10", description="your model (engine.models.user)",
                     recipe="user", default_size=0, min_size=1, options=("normalization",))


def get(name: str) -> ModelSpec:
    if is_user_model(name):
        return user_spec(name)
    if name not in _REGISTRY:
        raise EngineError(f"unknown model {name!r}; choose from {', '.join(names())}")
    return _REGISTRY[name]


def input_size(spec: ModelSpec, upsample: int, image_shape: tuple | None = IMAGE_SHAPE) -> int | tuple[int, int]:
    """The side length the model sees: --upsample if given, else the model's default for images of
    `image_shape` [H, W, C] (None: not known yet, only --upsample is checked): their own side, a
    backbone's default side if larger, and for images below the model's min_size their side times
    the least whole factor that reaches it (8x8 digits: 16 for airbench); images that are not square
    at their own (H, W) (a tuple) by the engine's nets; a user's model: its own input size, which
    loading it tells. A --upsample below min_size is a one-line error."""
    side = None if image_shape is None else image_shape[0]
    if image_shape is not None and image_shape[0] != image_shape[1] and not upsample and spec.backbone:
        raise EngineError(f"the images are {image_shape[0]}x{image_shape[1]}, not square: give --upsample N to "
                          f"train {spec.name} on NxN inputs")
    if upsample:
        size = upsample
        if side is not None and upsample < max(image_shape[:2]):
            raise EngineError(f"--upsample {upsample} is smaller than the images ({image_shape[0]}x{image_shape[1]}): "
                              f"it enlarges them only")
    elif spec.family == "user":
        size = _family(spec).input_side(spec.name)
        h, w = (size, size) if isinstance(size, int) else size
        if image_shape is not None and (h < image_shape[0] or w < image_shape[1]):
            raise EngineError(f"--model {spec.name} takes {h}x{w} images, smaller than the data's "
                              f"{image_shape[0]}x{image_shape[1]}: the engine enlarges images only")
        return size
    elif side is None:
        return 0
    elif image_shape[0] != image_shape[1]:
        size = (int(image_shape[0]), int(image_shape[1]))
        if min(size) < spec.min_size:
            raise EngineError(f"model {spec.name} needs inputs of at least {spec.min_size}x{spec.min_size}, got "
                              f"images of {size[0]}x{size[1]}; give --upsample {max(spec.min_size, *size)} or more")
        return size
    else:
        size = max(spec.default_size, side)
        if size < spec.min_size:  # smaller images: enlarged by the least whole factor that reaches min_size
            size = side * -(-spec.min_size // side)  # (nearest upsampling then repeats each pixel, as digits32)
    if size < spec.min_size:
        given = f"--upsample {size}" if upsample else f"images of {side}x{side}"
        raise EngineError(f"model {spec.name} needs inputs of at least {spec.min_size}x{spec.min_size} (its "
                          f"smallest side), got {given}; give --upsample {spec.min_size} or more"
                          + (" or leave it out (smaller images are enlarged to it)" if upsample else ""))
    return size


def input_channels(spec: ModelSpec, image_shape: tuple = IMAGE_SHAPE) -> int:
    """The channels the model takes: the images' own, but RGB for a keras.applications backbone, and a
    model of yours its own input's (for either, a grayscale channel is repeated in the graph where the
    model takes RGB, kernels.Preprocess)."""
    if spec.family == "user":
        return _family(spec).input_channels(spec.name, int(image_shape[2]))
    return 3 if spec.backbone else int(image_shape[2])


def preprocess_for(spec: ModelSpec, opts, image_shape: tuple = IMAGE_SHAPE):
    """The kernels.Preprocess that turns uint8 images of `image_shape` [H, W, C] into this model's
    input (`opts`: a config.ModelConfig, for --upsample and --upsample-method)."""
    from engine.kernels import Preprocess
    normalization = getattr(opts, "normalization", "") or spec.normalization
    return Preprocess(input_size(spec, opts.upsample, image_shape), normalization, opts.upsample_method,
                      input_channels(spec, image_shape))


def _family(spec: ModelSpec):
    return importlib.import_module(f"{__package__}.{spec.family}")


def build(name: str, size: int, num_classes: int, opts=None, *, sync_bn: bool = False, channels: int = 3):
    """A functional Keras model: float32 [N,size,size,channels] normalised images (`size` (height, width):
    [N,height,width,channels]) -> float32 logits, every
    layer in its own Keras form (engine.models.cpu_step rewrites a training step's layers for speed;
    engine.train.build applies it). `opts` (a config.ModelConfig) carries the options some models take
    (--weights, --freeze, --head, --width) and --no-data-init (the weights data_init would set and
    freeze train instead). `sync_bn`: BatchNorm statistics over the global batch of several replicas,
    as one replica would compute them."""
    import keras
    spec = get(name)
    family = _family(spec)
    height, width = (size, size) if isinstance(size, int) else size
    inputs = keras.Input((height, width, channels), name="images")
    x = family.body(inputs, num_classes, opts, spec.name)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    model = keras.Model(inputs, logits, name=_keras_name(spec))
    if opts is not None and not opts.data_init:
        for v in model.weights:
            v.trainable = v.trainable or v.path in spec.data_init_frozen
    if sync_bn:
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    return model


@contextlib.contextmanager
def global_policy(name: str):
    """Keras layers made inside take the precision policy `name` (a model built for a graph, a trial step);
    the caller's global policy is back after, whatever happens inside."""
    import keras
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _keras_name(spec: ModelSpec) -> str:
    """The Keras model's name: the registered name, or one made of a user model's file or function."""
    if spec.family != "user":
        return spec.name
    base = os.path.basename(spec.name).removesuffix(".keras")
    return re.sub(r"[^A-Za-z0-9_.]", "_", base) or "user_model"


def data_init(spec: ModelSpec, model, images, preprocess) -> None:
    """Run the model's init from training data (uint8 images, a kernels.Preprocess)."""
    _family(spec).data_init(model, images, preprocess)


def variable(model, path: str):
    for v in model.weights:
        if v.path == path:
            return v
    raise EngineError(f"model {model.name} has no variable {path!r}")
