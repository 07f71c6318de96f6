"""Data that is not CIFAR-10's shape, as a user brings it: MNIST's official mnist.npz (28x28 grayscale) and a
folder of 64x64 colour PNGs, each trained, exported to ONNX and OpenVINO, evaluated against the run and predicted
on a PNG of its shape and on one of the other channel count (converted, said in a line), all through the installed `engine` command from the user's working directory with relative paths."""
import json

import numpy as np
import pytest
from PIL import Image


def _digits_like(n: int, side: int, channels: int, seed: int):
    """Images whose class is a bright square in one of 4 places: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.integers(0, 40, (n, side, side, channels), dtype=np.uint8)
    half = side // 2
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * half:(r + 1) * half, q * half:(q + 1) * half] = 220
    return x, y.astype(np.uint8)


def _mnist_npz(folder):
    xtr, ytr = _digits_like(512, 28, 1, 0)
    xte, yte = _digits_like(128, 28, 1, 1)
    np.savez_compressed(folder / "mnist.npz", x_train=xtr[..., 0], y_train=ytr, x_test=xte[..., 0], y_test=yte)
    return "mnist.npz", xte[0, ..., 0], "L"


def _tree_64(folder):
    for split, (n, seed) in {"train": (256, 0), "test": (64, 1)}.items():
        x, y = _digits_like(n, 64, 3, seed)
        for i, (img, c) in enumerate(zip(x, y)):
            d = folder / "shapes" / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    return "./shapes", _digits_like(1, 64, 3, 2)[0][0], "RGB"


@pytest.mark.parametrize("make,shape", [(_mnist_npz, [28, 28, 1]), (_tree_64, [64, 64, 3])],
                         ids=["mnist-npz-28x28x1", "tree-64x64x3"])
def test_a_data_set_of_another_shape_trains_exports_evaluates_and_predicts(engine, tmp_path, make, shape):
    data, sample, mode = make(tmp_path)
    Image.fromarray(sample, mode).save(tmp_path / "mine.png")
    p = engine.run("train", "--model", "tiny", "--data", data, "--epochs", "2", "--batch-size", "64",
                   "--out", "runs/s", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    config = json.loads((tmp_path / "runs/s/config.json").read_text())
    assert config["data"]["image_shape"] == "x".join(map(str, shape))

    p = engine.run("export", "onnx", "runs/s", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    import onnx
    dims = [d.dim_value for d in onnx.load(tmp_path / "runs/s/model.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == shape  # the export takes the run's images, not CIFAR-10's

    p = engine.run("evaluate", "runs/s/model.onnx", "--against", "runs/s", "--data", data, "--out", "eval.json",
                   cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["against"]["top1_agreement"] >= 0.999, report

    p = engine.run("export", "openvino", "runs/s", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # f32: on a CPU with fast bfloat16 OpenVINO's default is bf16, whose rounding flips the near-ties of a
    # 2-epoch model; the parity asked for is the export's, at the precision it was exported in
    p = engine.run("evaluate", "runs/s/model.xml", "--against", "runs/s/model.onnx", "--data", data,
                   "--openvino-precision", "f32", "--out", "eval-ov.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "eval-ov.json").read_text())
    assert report["against"]["top1_agreement"] >= 0.999, report

    p = engine.run("predict", "mine.png", "--model", "runs/s/model.onnx", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "mine.png" in p.stdout and "convert" not in p.stdout + p.stderr

    other = "RGBA" if mode == "L" else "L"  # the other channel count (with alpha for the grey model)
    Image.fromarray(sample, mode).convert(other).save(tmp_path / "other.png")
    p = engine.run("predict", "other.png", "--model", "runs/s/model.xml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "other.png" in p.stdout
    assert "convert" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr  # says what it did
