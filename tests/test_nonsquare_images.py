"""Images that are not square (H != W): a tree of 24x40 PNGs trains at 24x40 without --upsample, exports
with input uint8 [N,24,40,3], evaluates in agreement with its run and predicts a PNG (one of another size
with --resize); every engine net builds and takes a training step at H x W; the augmentation crops and
flips each axis at its own size."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine.errors import EngineError

H, W = 24, 40


def _quadrant_images(n: int, h: int, w: int, channels: int, seed: int):
    """Class c (0-3) is a bright quadrant of the image: learnable in an epoch."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.integers(0, 40, (n, h, w, channels), dtype=np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * h // 2:(r + 1) * h // 2, q * w // 2:(q + 1) * w // 2] = 220
    return x, y


def _engine(cwd, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("ENGINE_AMP", "ENGINE_XLA")}
    env.update(ENGINE_AMP="off", ENGINE_XLA="off", ENGINE_CACHE=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_tree_of_24x40_pngs_trains_exports_evaluates_and_predicts_at_24x40(tmp_path):
    for split, (n, seed) in {"train": (128, 0), "test": (32, 1)}.items():
        x, y = _quadrant_images(n, H, W, 3, seed)
        for i, (img, c) in enumerate(zip(x, y)):
            d = tmp_path / "shapes" / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    sample = _quadrant_images(4, 2 * H, 2 * W, 3, 2)[0][3]  # class 3, twice the size: predicted with --resize
    Image.fromarray(sample).save(tmp_path / "big.png")

    p = _engine(tmp_path, "train", "--model", "tiny", "--data", "./shapes", "--epochs", "1", "--batch-size", "32",
                "--out", "runs/s")
    assert p.returncode == 0, p.stderr
    config = json.loads((tmp_path / "runs/s/config.json").read_text())
    assert config["data"]["image_shape"] == f"{H}x{W}x3" and config["model"]["upsample"] == 0

    p = _engine(tmp_path, "export", "onnx", "runs/s")
    assert p.returncode == 0, p.stderr
    import onnx
    dims = [d.dim_value for d in onnx.load(tmp_path / "runs/s/model.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [H, W, 3]

    p = _engine(tmp_path, "evaluate", "runs/s/model.onnx", "--against", "runs/s", "--data", "./shapes",
                "--out", "eval.json")
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["against"]["top1_agreement"] >= 0.999, report

    p = _engine(tmp_path, "predict", "big.png", "--resize", "--model", "runs/s/model.onnx", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["top"][0]["class"].startswith("class")


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", ["tiny", "airbench", "resnet9"])
def test_every_engine_net_builds_and_steps_at_h_by_w(name, channels):
    """The model input is [H, W, C] (no square upsampling), the data init (airbench's whitening) runs on
    it, and a training step of the run's loop (crop, flip, preprocess) gives a finite loss."""
    import tensorflow as tf

    from engine import models
    from engine.train import resolve
    from engine.train.build import build_training
    shape = (H, W, channels)
    cfg = resolve.defaults(name).replace("data", image_shape=f"{H}x{W}x{channels}") \
        .replace("optim", batch_size=16, epochs=1).replace("run", amp=False, xla=False)
    spec = models.get(name)
    training = build_training(cfg, 4, 32, "float32")
    assert training.preprocess.size == (H, W) and training.model.input_shape == (None, H, W, channels)
    x, y = _quadrant_images(32, H, W, channels, 0)
    if spec.data_init:
        models.data_init(spec, training.model, x, training.preprocess)
    from engine.data.pipeline import Pipeline
    training.loop.begin()
    batches = iter(Pipeline(x, y.astype(np.int64)).train(16, seed=0, epoch=0).repeat())
    loss = float(training.loop.train_calls(batches, tf.constant(1, tf.int32))[0])
    assert np.isfinite(loss)


def test_the_crop_shifts_each_axis_of_a_non_square_image_within_its_own_size():
    """translate/random_crop on [N,24,40,C]: each output is the image shifted by (dy, dx), reflected
    at its own height and width; flips mirror the width."""
    import tensorflow as tf

    from engine import kernels
    x = np.random.default_rng(0).integers(0, 256, (3, H, W, 1), dtype=np.uint8)
    dy, dx, pad = np.array([-4, 0, 3]), np.array([4, -2, 0]), 4
    out = kernels.translate(tf.constant(x), tf.constant(dy), tf.constant(dx), pad).numpy()
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
    for i in range(3):
        want = padded[i, pad - dy[i]:pad - dy[i] + H, pad - dx[i]:pad - dx[i] + W]
        np.testing.assert_array_equal(out[i], want)
    crops = kernels.random_crop(tf.constant(x), tf.constant([1, 2]), pad=pad).numpy()
    assert crops.shape == x.shape
    np.testing.assert_array_equal(kernels.flip_left_right(tf.constant(x)).numpy(), x[:, :, ::-1])


def test_the_upsampling_takes_a_height_and_a_width():
    import tensorflow as tf

    from engine import kernels
    x = np.arange(2 * 3 * 1).reshape(1, 2, 3, 1).astype(np.uint8)
    assert kernels.upsample(tf.constant(x), (4, 9)).numpy()[0, :, :, 0].tolist() == \
        np.repeat(np.repeat(x[0, :, :, 0], 2, 0), 3, 1).tolist()
    bilinear = kernels.upsample(tf.constant(x), (4, 6), "bilinear").numpy()
    np.testing.assert_allclose(bilinear, tf.image.resize(x.astype(np.float32), (4, 6)).numpy(), atol=1e-5)


def test_non_square_images_below_a_nets_smallest_side_or_for_a_backbone_are_one_line():
    from engine import models
    with pytest.raises(EngineError, match=r"airbench needs inputs of at least 9x9, got images of 8x40; "
                                          r"give --upsample 40"):
        models.input_size(models.get("airbench"), 0, (8, 40, 3))
    with pytest.raises(EngineError, match=r"not square: give --upsample N to train vgg16 on NxN inputs"):
        models.input_size(models.get("vgg16"), 0, (24, 40, 3))
    assert models.input_size(models.get("vgg16"), 64, (24, 40, 3)) == 64
