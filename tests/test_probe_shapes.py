"""The MNIST write-up end to end, offline, through the CLI from a temporary working directory with relative
paths: `engine probe` (VGG16 features + logistic regression, stratified k-fold) on 28x28 grayscale digits in
Keras's official mnist.npz, and `engine train` on that file for tiny, resnet9 and airbench (resnet9 exported
to ONNX with input uint8 [N,28,28,1]). The Keras downloads are made to fail (a proxy on a closed port), as
they do on a machine without internet: each says in one line which official file to fetch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error

# urllib honours these: every download fails at once, with or without internet.
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


def engine(cwd, *args, **env):
    e = {**os.environ, "ENGINE_CACHE": str(cwd / "cache"), "HOME": str(cwd / "home"),
         "KERAS_HOME": str(cwd / "home" / ".keras"), **OFFLINE, **env}
    e.pop("ENGINE_DATA", None)
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=600)


def write_mnist_npz(folder, n_train=200, n_test=100, classes=10, seed=0):
    """Keras's mnist.npz: x_train uint8 [N,28,28], y_train uint8 [N], x_test, y_test. Each digit class is a
    bright bar at its own height on noise: learnable by a linear probe of a few dozen images."""
    rng = np.random.default_rng(seed)

    def digits(n):
        y = (np.arange(n) % classes).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(y):
            x[i, 2 + 2 * c:5 + 2 * c, 4:24] = 220
        return x, y
    (xtr, ytr), (xte, yte) = digits(n_train), digits(n_test)
    np.savez_compressed(folder / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return "mnist.npz"


@pytest.fixture
def cwd(tmp_path):
    write_mnist_npz(tmp_path)
    return tmp_path


def test_probe_scores_vgg16_features_and_raw_pixels_of_28x28x1_digits_per_fold(cwd):
    """--weights none: a random VGG16 (the offline path). The grey digits reach the backbone as RGB at its
    default 64x64 (2x2x512 features); the pixel baseline reads the 784 pixels of 28x28x1."""
    p = engine(cwd, "probe", "--data", "mnist.npz", "--weights", "none", "--folds", "3", "--limit", "60",
               "--out", "probe.json")
    assert p.returncode == 0, p.stderr
    r = json.loads((cwd / "probe.json").read_text())
    assert r["image_shape"] == "28x28x1" and r["images"] == 60 and r["folds"] == 3 and r["classes"][9] == "9"
    vgg, pixels = r["results"]["vgg16"], r["results"]["pixels"]
    assert vgg["input_shape"] == [64, 64, 3] and vgg["feature_shape"] == [2, 2, 512] and vgg["features"] == 2048
    assert pixels["input_shape"] == [28, 28, 1] and pixels["features"] == 28 * 28
    for result in (vgg, pixels):
        assert len(result["folds"]) == 3 and result["mean"] == pytest.approx(np.mean(result["folds"]))
        assert result["mean"] >= 0.9, result  # a bar per class: separable by both
    assert "28x28x1" in p.stdout and "64x64x3 input" in p.stdout


def test_probe_loads_a_weights_file_into_vgg16_at_its_minimum_side_32(cwd):
    """A weights file (the offline path to pretrained weights) is what the features come from: all-zero
    weights give all-zero features, so the probe scores chance (each fold's equal classes: a tie, 1/10)."""
    import keras
    vgg16 = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    for w in vgg16.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    vgg16.save_weights(str(cwd / "zero.weights.h5"))
    p = engine(cwd, "probe", "--data", "mnist.npz", "--weights", "zero.weights.h5", "--upsample", "32",
               "--no-pixels", "--folds", "3", "--limit", "60", "--out", "probe.json")
    assert p.returncode == 0, p.stderr
    vgg = json.loads((cwd / "probe.json").read_text())["results"]["vgg16"]
    assert vgg["input_shape"] == [32, 32, 3] and vgg["feature_shape"] == [1, 1, 512]
    assert vgg["mean"] == pytest.approx(0.1), vgg


@pytest.mark.parametrize("args, fragments", [
    (["--weights", "imagenet"], ["cannot download the ImageNet weights of vgg16", "--weights FILE"]),
    (["--weights", "missing.h5"], ["--weights missing.h5: no such file"]),
    (["--upsample", "30"], ["vgg16 needs inputs of at least 32x32"]),
], ids=["imagenet-offline", "no-such-weights-file", "below-vgg16-minimum"])
def test_probe_refusals_on_mnist_are_one_line(cwd, args, fragments):
    p = engine(cwd, "probe", "--data", "mnist.npz", "--folds", "3", "--limit", "60", *args)
    assert_one_line_error(p, *fragments)
    assert p.returncode == 2


def test_train_data_mnist_offline_names_the_official_file_in_one_line(cwd):
    p = engine(cwd, "train", "--model", "tiny", "--data", "mnist", "--epochs", "1", "--out", "runs/m")
    assert_one_line_error(p, "could not download MNIST", "fetch mnist.npz from "
                          "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz", "--data PATH")
    assert p.returncode == 2 and not (cwd / "runs" / "m" / "config.json").exists()


def test_resnet9_trains_on_an_mnist_npz_path_and_its_onnx_export_takes_28x28x1(cwd):
    """One epoch on 200 digits; the run exported to ONNX takes uint8 [N,28,28,1]. (tiny trains on an
    mnist.npz in tests/journey/test_journey_image_shapes.py, airbench in tests/test_derived_shapes.py.)"""
    model = "resnet9"
    p = engine(cwd, "train", "--model", model, "--data", "mnist.npz", "--epochs", "1", "--batch-size", "50",
               "--val-images", "0", "--no-amp", "--no-xla", "--quiet", "--out", f"runs/{model}")
    assert p.returncode == 0, p.stderr
    run = cwd / "runs" / model
    assert json.loads((run / "config.json").read_text())["data"]["image_shape"] == "28x28x1"
    assert (run / "metrics.json").is_file()
    p = engine(cwd, "export", "onnx", f"runs/{model}")
    assert p.returncode == 0, p.stderr
    import onnx
    graph = onnx.load(str(run / "model.onnx")).graph
    (images,) = graph.input
    dims = images.type.tensor_type.shape.dim
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [28, 28, 1]


def test_probe_resizes_a_tree_of_mixed_sizes_with_image_size(tmp_path):
    """--image-size reaches the probe's data as engine train's: the pixel baseline reads 24x24x3 images."""
    from tests.test_evaluate_as_trained import mixed_size_tree
    mixed_size_tree(tmp_path / "photos", n=(6, 2))
    p = engine(tmp_path, "probe", "--model", "pixels", "--data", "photos", "--image-size", "24x24", "--folds", "2",
               "--out", "probe.json")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "probe.json").read_text())
    assert r["image_shape"] == "24x24x3" and r["image_size"] == "24x24" and r["images"] == 12
    assert r["results"]["pixels"]["features"] == 24 * 24 * 3 and len(r["results"]["pixels"]["folds"]) == 2
