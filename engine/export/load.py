"""What every exporter starts from: a model with the preprocessing it was trained with, loaded from a
run directory (its best or latest checkpoint) or from a saved `.keras` model."""
from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from engine import __version__, models
from engine.config import CONFIG_FILE, Config, data_default, is_run_dir
from engine.contract import CIFAR10_CLASSES, CONTRACT, IMAGE_SHAPE, INPUT, NORMALIZATIONS, OUTPUT
from engine.errors import EngineError
from engine.kernels import Preprocess
from engine.models.user import ends_in_softmax


class Exportable:
    """A model with the preprocessing it was trained with: what every exporter starts from."""

    def __init__(self, model, preprocess: Preprocess, class_names: list, metadata: dict, data_source: str):
        self.model = model
        self.preprocess = preprocess
        self.class_names = class_names
        self.metadata = metadata
        self.data_source = data_source  # where int8 calibration images come from unless told

    @property
    def size(self) -> int:
        return self.preprocess.size

    def serve_fn(self):
        model, preprocess = self.model, self.preprocess

        @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name=INPUT)])
        def serve(images):
            return {OUTPUT: tf.identity(model(preprocess(images), training=False), name=OUTPUT)}
        return serve


def load_run(path: str, checkpoint: str = "best") -> Exportable:
    """Rebuild a run's model in float32 and restore its best (or latest) checkpoint."""
    if not is_run_dir(path):
        raise EngineError(f"{path} is not a run directory (no {CONFIG_FILE})")
    cfg = Config.load(os.path.join(path, CONFIG_FILE))
    try:
        with open(os.path.join(path, "classes.json")) as f:
            class_names = json.load(f)
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot read the class names of {path}: {e}") from None
    ckpt_dir = os.path.join(path, "checkpoints", "best" if checkpoint == "best" else "")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest is None:
        raise EngineError(f"no {checkpoint} checkpoint in {path}")
    keras.mixed_precision.set_global_policy("float32")
    spec = models.get(cfg.model.model)
    preprocess = models.preprocess_for(spec, cfg.model)
    # The checkpoint holds every weight: never download or read the run's starting weights again.
    model = models.build(spec.name, preprocess.size, len(class_names), dataclasses.replace(cfg.model, weights="none"))
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise EngineError(f"cannot restore {latest}: {type(e).__name__}") from None
    meta = {"engine_version": __version__, "source_run": os.path.abspath(path), "checkpoint": latest,
            "class_names": class_names, "config": cfg.to_dict(), "contract": CONTRACT, "input_side": preprocess.size}
    return Exportable(model, preprocess, class_names, meta, cfg.data.data)


def load_keras(path: str, normalization: str | None, upsample_method: str = "nearest",
               class_names: list | None = None) -> Exportable:
    """A saved `.keras` model (e.g. from a `model.fit` script) with the input scaling it was trained
    with (`normalization`, a kernels.normalize mode). Its input side sets the upsampling (32 -> side).
    A model ending in softmax is exported as logits = log(probabilities): same argmax, same softmax."""
    from engine.models import airbench, layers  # noqa: F401 - register the engine's layers and initializers
    if not os.path.isfile(path):
        raise EngineError(f"model not found: {path}")
    if normalization not in NORMALIZATIONS:
        raise EngineError(f"a .keras model needs --normalization, the input scaling it was trained with: "
                          f"one of {', '.join(NORMALIZATIONS)}")
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt zip, a missing custom layer, a wrong format
        raise EngineError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}") \
            from None
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3 or (shape[0] or 0) < 32:
        raise EngineError(f"{path}: expected a model taking square RGB images of side >= 32, got input {shape}")
    outputs = int(model.outputs[0].shape[-1])
    names = class_names or (list(CIFAR10_CLASSES) if outputs == 10 else [str(i) for i in range(outputs)])
    if len(names) != outputs:
        raise EngineError(f"--classes names {len(names)} classes but {path} has {outputs} outputs")
    softmax = ends_in_softmax(model)
    net = model
    if softmax:  # probabilities -> logits, once, here
        inputs = keras.Input(shape, name=INPUT)
        net = keras.Model(inputs, keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(p, 1e-30)),
                                                       name=OUTPUT)(model(inputs)))
    meta = {"engine_version": __version__, "source_model": os.path.abspath(path), "class_names": names,
            "normalization": normalization, "softmax_to_logits": softmax, "contract": CONTRACT,
            "input_side": int(shape[0])}
    return Exportable(net, Preprocess(int(shape[0]), normalization, upsample_method), names, meta, data_default())
