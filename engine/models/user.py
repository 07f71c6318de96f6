"""Your own model as a registered one: `--model path/to/model.keras` or `--model pkg.module:function`
(a function returning an uncompiled Keras model). It takes float images at its own input size (the
engine upsamples the data's images to it and normalises with --normalization) and channels (1: grayscale data
as it is; 3: RGB, a grayscale image's channel repeated) and outputs logits, or
probabilities (a final softmax), which are turned into logits once, here: log(p) has the same argmax
and the same softmax."""
from __future__ import annotations

import importlib
import os
import zipfile

import keras
import tensorflow as tf

from engine.errors import EngineError


def load(name: str):
    """The user's Keras model (uncompiled), checked to take [H, W, C] images (C 1 or 3), in the
    global precision policy (in_global_policy)."""
    model = _load_file(name) if name.endswith(".keras") else _call(name)
    if not isinstance(model, keras.Model):
        raise EngineError(f"--model {name}: expected a Keras model, got {type(model).__name__}")
    check(model, f"--model {name}")
    return in_global_policy(model)


def check(model, what: str) -> None:
    """A one-line error unless `model` is what the engine trains and exports: one float input of
    [H, W, C] images (C 1 for grayscale, 3 for RGB), one float output of one vector of logits (or
    probabilities) per image.
    Checked on the model's declared inputs and outputs, before it is built into a run."""
    inputs, outputs = list(getattr(model, "inputs", None) or []), list(getattr(model, "outputs", None) or [])
    if len(inputs) > 1:
        raise EngineError(f"{what}: expected a model with one input ([H, W, C] images), got {len(inputs)} inputs")
    shape = tuple(inputs[0].shape[1:]) if inputs else None
    if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape) or shape[2] not in (1, 3):
        raise EngineError(f"{what}: expected a model taking images of a fixed [H, W, C], C 1 (grayscale) or 3 (RGB), "
                          f"got input {shape}")
    if not keras.backend.is_float_dtype(inputs[0].dtype):
        raise EngineError(f"{what}: expected a model taking float images, got input dtype {inputs[0].dtype}")
    if len(outputs) != 1:
        raise EngineError(f"{what}: expected a model with one output (a vector of logits per image), "
                          f"got {len(outputs)} outputs")
    out = tuple(outputs[0].shape[1:])
    if len(out) != 1:
        raise EngineError(f"{what}: expected one vector of logits per image, got output shape {out}")
    if not keras.backend.is_float_dtype(outputs[0].dtype):
        raise EngineError(f"{what}: expected float logits (or probabilities), got output dtype {outputs[0].dtype}")


def _load_file(path: str):
    if not os.path.isfile(path):
        raise EngineError(f"--model {path}: no such file")
    return load_keras_file(path, f"--model {path}")


def load_keras_file(path: str, what: str):
    """`keras.saving.load_model` of an existing file, uncompiled; a one-line error naming the cause
    otherwise. Keras says "File not found" for any file that is not a readable zip: a `.keras` model is
    a zip archive, and one that is truncated or of another format is said to be so here."""
    from engine.models import airbench, layers  # noqa: F401 - register the engine's layers and initializers
    try:
        readable = zipfile.is_zipfile(path)
    except OSError as e:
        raise EngineError(f"{what}: cannot read it: {e.strerror or e}") from None
    if not readable:
        raise EngineError(f"{what}: cannot load it: not a .keras file (a .keras model is a zip archive; this file "
                          f"is not one, or is truncated)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt zip, a missing custom layer, a wrong format
        first = str(e).splitlines()[0][:150] if str(e) else ""
        raise EngineError(f"{what}: cannot load it: {type(e).__name__}: {first}") from None


def in_global_policy(model):
    """The model with every layer, nested models' too, computing in the global precision policy (--amp):
    a saved model's layers keep the policy they were saved with, so under mixed precision it would
    train in float32. Same weights, new layers. Two kinds of layer stay in float32, as Keras's
    mixed-precision guide advises (float16's range ends at 6e-8 and 65504):
    - a final softmax (the model's last layer, ends_in_softmax): its probabilities are turned into
      logits by a log, and float16 would round the small ones to 0 and overflow their gradient;
    - where the model was built under a mixed policy (some layer's policy is mixed_*), a layer it
      pinned to float32. In a model saved in plain float32 every layer is float32, and nothing tells
      a pinned layer from the others: they all take the global policy but the final softmax."""
    policy = keras.mixed_precision.global_policy()
    # (an InputLayer or a nested model takes the policy in force when the file is loaded: it says
    # nothing of the policy the model was built in)
    mixed = any(layer.dtype_policy.name.startswith("mixed_") for layer in _all_layers(model)
                if not isinstance(layer, (keras.layers.InputLayer, keras.Model)))
    last = model.layers[-1] if model.layers and ends_in_softmax(model) else None

    def wanted(layer):
        keep = layer is last or (mixed and layer.dtype_policy.name == "float32")
        return keras.DTypePolicy("float32") if keep else policy

    if all(layer.dtype_policy.name == wanted(layer).name for layer in _all_layers(model)):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": wanted(layer)})
    try:
        copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
        copy.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 - a layer whose config does not round-trip
        pin = " (or give its final softmax dtype=\"float32\")" if last is not None and mixed else ""
        raise EngineError(f"--model {model.name}: cannot rebuild it in {policy.name} for --amp "
                          f"({type(e).__name__}: {str(e)[:120]}); train it without --amp{pin}") from None
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _call(name: str):
    module_name, _, attr = name.partition(":")
    if not module_name or module_name.startswith(".") or not attr:
        raise EngineError(f"--model {name}: expected pkg.module:function, an importable module (no leading dot) "
                          f"and the function in it that returns the model")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EngineError(f"--model {name}: cannot import {attr!r} from {module_name!r} ({e}); is its folder on "
                          f"PYTHONPATH?") from None
    except Exception as e:  # noqa: BLE001 - the user's module: a SyntaxError, or whatever its import raises
        raise EngineError(f"--model {name}: importing {module_name!r} raised {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:150]}") from None
    try:
        fn = getattr(module, attr)
    except AttributeError as e:
        raise EngineError(f"--model {name}: cannot import {attr!r} from {module_name!r} ({e}); is its folder on "
                          f"PYTHONPATH?") from None
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the user's code: whatever it raises is reported in one line
        raise EngineError(f"--model {name}: {attr}() raised {type(e).__name__}: {str(e)[:150]}") from None


def input_side(name: str) -> int | tuple[int, int]:
    """The model's input side, or (height, width) where it is not square."""
    h, w, _ = input_shape(name)
    return h if h == w else (h, w)


def input_shape(name: str) -> tuple[int, int, int]:
    return tuple(int(d) for d in load(name).inputs[0].shape[1:])


def input_channels(name: str, data_channels: int) -> int:
    """The channels the model takes: 1 trains on grayscale data as it is, 3 takes RGB (a grayscale
    channel repeated in the graph); a one-line error for a grayscale model on RGB data."""
    channels = input_shape(name)[2]
    if channels == 1 and data_channels == 3:
        raise EngineError(f"--model {name} takes grayscale images [H,W,1] but the data is RGB: give it a model "
                          f"taking [H,W,3], or grayscale data")
    return channels


def ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


def body(x, num_classes, opts=None, name=""):
    model = load(name)
    (h, w, c), outputs = (int(d) for d in model.inputs[0].shape[1:]), int(model.outputs[0].shape[-1])
    if tuple(x.shape[1:3]) != (h, w):
        raise EngineError(f"--model {name} takes {h}x{w} images; drop --upsample" + (f" or set it to {h}" if h == w else ""))
    if x.shape[3] != c:
        raise EngineError(f"--model {name} takes {c}-channel images, got {x.shape[3]}")
    if outputs != num_classes:
        raise EngineError(f"--model {name} has {outputs} outputs but the data has {num_classes} classes")
    y = model(x)
    if ends_in_softmax(model):  # probabilities -> logits, in float32 (a layer's inputs are cast to its dtype)
        y = keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(tf.cast(p, tf.float32), 1e-30)), dtype="float32")(y)
    return y
