"""A `.keras` model of your own on grayscale data: one taking [28,28,1] trains on MNIST-shaped digits as
they are (one channel in, the run's export takes [N,28,28,1]); one taking [28,28,3] gets the grey channel
repeated to RGB in the graph, and the run says so in one line; one taking [H,W,1] on RGB data is refused
in one line. The models are built here with plain Keras, the data is a small mnist.npz."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.errors import EngineError

GREY_LINE = "grayscale images: their channel is repeated to RGB in the graph"


def _save_model(path, shape):
    import keras
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)


def _mnist_npz(path, n_train=256, n_test=64):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = np.clip(rng.normal(20 * y[:, None, None], 30, (n, 28, 28)), 0, 255).astype(np.uint8)
        arrays.update({f"x_{split}": x, f"y_{split}": y})
    np.savez_compressed(path, **arrays)


def _engine(cwd, *args):
    env = {**os.environ, "ENGINE_AMP": "off", "ENGINE_XLA": "off", "ENGINE_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    d = tmp_path_factory.mktemp("grey")
    _mnist_npz(d / "mnist.npz")
    _save_model(d / "grey.keras", (28, 28, 1))
    _save_model(d / "rgb.keras", (28, 28, 3))
    return d


@pytest.mark.parametrize("model,channels", [("grey.keras", 1), ("rgb.keras", 3)])
def test_a_user_model_trains_on_grayscale_with_its_own_channels(grey, model, channels):
    out = f"runs/{model}"
    p = _engine(grey, "train", "--model", model, "--normalization", "unit", "--data", "mnist.npz", "--epochs", "1",
                "--batch-size", "64", "--out", out)
    assert p.returncode == 0, p.stderr
    config = json.loads((grey / out / "config.json").read_text())
    assert config["data"]["image_shape"] == "28x28x1"
    said = (p.stdout + p.stderr).count(GREY_LINE)
    assert said == (1 if channels == 3 else 0), p.stdout  # repeated (and said once) only for an RGB model
    from engine.export.load import load_run
    exp = load_run(str(grey / out))
    assert exp.image_shape == (28, 28, 1) and exp.preprocess.channels == channels
    assert exp.model.input_shape == (None, 28, 28, channels)
    x = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    assert exp.serve_fn()(x)["logits"].shape == (4, 10)


def test_a_grayscale_user_model_on_rgb_data_is_one_line(grey):
    from engine import models
    spec = models.get(str(grey / "grey.keras"))
    with pytest.raises(EngineError, match=r"takes grayscale images \[H,W,1\] but the data is RGB"):
        models.registry.input_channels(spec, (28, 28, 3))
    assert models.registry.input_channels(spec, (28, 28, 1)) == 1
    assert models.registry.input_channels(models.get(str(grey / "rgb.keras")), (28, 28, 1)) == 3


def test_a_user_model_smaller_than_the_images_is_one_line(grey):
    from engine import models
    with pytest.raises(EngineError, match=r"takes 28x28 images, smaller than the data's 32x32"):
        models.input_size(models.get(str(grey / "grey.keras")), 0, (32, 32, 1))
