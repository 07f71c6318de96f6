"""Your own model as a registered one: `--model path/to/model.keras` or `--model pkg.module:function`
(a function returning an uncompiled Keras model). It takes float images at its own input side (the
engine upsamples 32x32 to it and normalises with --normalization) and outputs logits, or
probabilities (a final softmax), which are turned into logits once, here: log(p) has the same argmax
and the same softmax."""
from __future__ import annotations

import importlib
import os

import keras
import tensorflow as tf

from engine.errors import EngineError


def load(name: str):
    """The user's Keras model (uncompiled), checked to take square RGB images of side >= 32."""
    model = _load_file(name) if name.endswith(".keras") else _call(name)
    if not isinstance(model, keras.Model):
        raise EngineError(f"--model {name}: expected a Keras model, got {type(model).__name__}")
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3 or (shape[0] or 0) < 32:
        raise EngineError(f"--model {name}: expected a model taking square RGB images of side >= 32, got input {shape}")
    out = tuple(model.outputs[0].shape[1:])
    if len(out) != 1:
        raise EngineError(f"--model {name}: expected one vector of logits per image, got output shape {out}")
    return model


def _load_file(path: str):
    from engine.models import airbench, layers  # noqa: F401 - register the engine's layers and initializers
    if not os.path.isfile(path):
        raise EngineError(f"--model {path}: no such file")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt zip, a missing custom layer, a wrong format
        first = str(e).splitlines()[0][:150] if str(e) else ""
        raise EngineError(f"--model {path}: cannot load it: {type(e).__name__}: {first}") from None
    return in_global_policy(model) if isinstance(model, keras.Model) else model


def in_global_policy(model):
    """The model with every layer, nested models' too, computing in the global precision policy (--amp):
    a saved model's layers keep the policy they were saved with (float32), so under mixed precision
    it would train in float32. Same weights, new layers."""
    policy = keras.mixed_precision.global_policy()
    if all(layer.dtype_policy.name == policy.name for layer in _all_layers(model)):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})
    try:
        copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
        copy.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 - a layer whose config does not round-trip
        raise EngineError(f"--model {model.name}: cannot rebuild it in {policy.name} for --amp "
                          f"({type(e).__name__}: {str(e)[:120]}); train it without --amp") from None
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _call(name: str):
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise EngineError(f"--model {name}: cannot import {attr!r} from {module_name!r} ({e}); is its folder on "
                          f"PYTHONPATH?") from None
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the user's code: whatever it raises is reported in one line
        raise EngineError(f"--model {name}: {attr}() raised {type(e).__name__}: {str(e)[:150]}") from None


def input_side(name: str) -> int:
    return int(load(name).inputs[0].shape[1])


def ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


def body(x, num_classes, opts=None, name=""):
    model = load(name)
    side, outputs = int(model.inputs[0].shape[1]), int(model.outputs[0].shape[-1])
    if x.shape[1] != side:
        raise EngineError(f"--model {name} takes {side}x{side} images; drop --upsample or set it to {side}")
    if outputs != num_classes:
        raise EngineError(f"--model {name} has {outputs} outputs but the data has {num_classes} classes")
    y = model(x)
    if ends_in_softmax(model):  # probabilities -> logits
        y = keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(tf.cast(p, tf.float32), 1e-30)))(y)
    return y
