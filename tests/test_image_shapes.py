"""Runs on images of another shape than CIFAR-10's: 28x28 grayscale and 64x64 RGB, trained, exported
and evaluated with the run's shape carried from the data to the export's input.

The arrays are made here (class-dependent noise) and given to the engine where it loads data
(engine.data.load), so these runs need no download and no data-set file."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from engine import data
from engine.config import Config
from engine.data import sources
from engine.data.splits import Splits
from engine.errors import EngineError
from engine.train import resolve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def synthetic(shape, n_train=192, n_test=96, classes=4, seed=0) -> Splits:
    """Images whose class sets their mean brightness (and, for RGB, their dominant channel)."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % classes
        base = 40 + 50 * y[:, None, None, None] + np.zeros((n, *shape))
        if shape[2] == 3:
            base[..., 0] += 20 * (y[:, None, None] == 1)
        x = np.clip(base + rng.normal(0, 30, (n, *shape)), 0, 255).astype(np.uint8)
        return x, y.astype(np.int32)
    (xt, yt), (xe, ye) = make(n_train), make(n_test)
    return Splits(xt, yt, xe, ye, [f"c{i}" for i in range(classes)])


@pytest.fixture
def shaped_data(monkeypatch):
    """`--data shape:HxWxC` gives synthetic arrays of that shape (other sources load as usual)."""
    real = data.load

    def load(source, cache_dir=None, log=print, **options):
        if source.startswith("shape:"):
            return synthetic(tuple(int(d) for d in source.split(":")[1].split("x")))
        return real(source, cache_dir, log=log, **options)
    monkeypatch.setattr(data, "load", load)
    real_check = sources.check_source
    monkeypatch.setattr(sources, "check_source",
                        lambda source, *a, **k: None if source.startswith("shape:") else real_check(source, *a, **k))


def train(tmp_path, model, shape, **model_opts) -> str:
    from engine.train import run
    out = str(tmp_path / f"{model}-{shape}")
    cfg = resolve.defaults(model).replace("data", data=f"shape:{shape}", val_images=0) \
        .replace("optim", epochs=1, batch_size=32).replace("run", out=out, amp=False, xla=False, quiet=True) \
        .replace("model", **model_opts)
    run(cfg, log=lambda *a: None)
    return out


@pytest.mark.parametrize("model,shape", [("tiny", "28x28x1"), ("airbench", "28x28x1"), ("tiny", "64x64x3"),
                                         ("airbench", "64x64x3")])
def test_a_run_trains_exports_and_evaluates_at_its_data_shape(tmp_path, shaped_data, model, shape, capsys):
    from engine import evaluate
    from engine.export.cli import main as export
    from engine.runtime import open_predictor
    dims = tuple(int(d) for d in shape.split("x"))
    out = train(tmp_path, model, shape)
    cfg = Config.load(os.path.join(out, "config.json"))
    assert cfg.data.image_shape == shape and cfg.image_shape == dims  # stored once, when the run started
    onnx_path = os.path.join(out, "model.onnx")
    export(["onnx", out, "--out", onnx_path])
    assert f"[N,{','.join(map(str, dims))}]" in capsys.readouterr().out
    p = open_predictor(onnx_path)
    assert p.image_shape == dims and json.loads(p.metadata["input_shape"]) == list(dims)
    assert p.metadata["contract"] == f"uint8 NHWC [N,{','.join(map(str, dims))}] images -> float32 [N,classes] logits"
    with pytest.raises(EngineError, match=rf"NHWC \[N,{','.join(map(str, dims))}\]"):
        p.predict(np.zeros((1, 32, 32, 3), np.uint8))
    report = str(tmp_path / "eval.json")
    evaluate.main([onnx_path, "--data", f"shape:{shape}", "--against", f"tf:{out}", "--report", report])
    with open(report) as f:
        r = json.load(f)
    assert r["images"] == 96 and r["against"]["top1_agreement"] >= 0.999, r["against"]
    with pytest.raises(SystemExit) as e:  # data of another shape: one line
        evaluate.main([onnx_path, "--data", "shape:32x32x3"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"takes {shape}: evaluate it on the data it was trained on")
    if model == "tiny":  # a SavedModel and OpenVINO's IR of the same run: the same input shape, the same top-1
        saved = os.path.join(out, "model.savedmodel")
        export(["savedmodel", out, "--out", saved])
        sm = open_predictor(saved)
        assert sm.image_shape == dims
        np.testing.assert_allclose(sm.predict(synthetic(dims).x_test[:8]), p.predict(synthetic(dims).x_test[:8]),
                                   atol=1e-3)
        pytest.importorskip("openvino")
        xml = os.path.join(out, "model.xml")
        export(["openvino", out, "--out", xml])
        ov = open_predictor(xml)
        assert ov.image_shape == dims and json.loads(ov.metadata["input_shape"]) == list(dims)
        evaluate.main([xml, "--data", f"shape:{shape}", "--against", onnx_path, "--report", report + "2"])
        with open(report + "2") as f:
            assert json.load(f)["against"]["top1_agreement"] >= 0.999


def test_grayscale_reaches_an_rgb_backbone_through_the_graph(tmp_path, shaped_data):
    """A keras.applications backbone takes 28x28 grayscale: the channel repeated, upsampled to its
    default side, in the graph that is exported."""
    from engine.export.load import load_run
    out = train(tmp_path, "vgg16", "28x28x1", weights="none", head="gap")
    exp = load_run(out)
    assert exp.image_shape == (28, 28, 1) and exp.preprocess.size == 64 and exp.preprocess.channels == 3
    assert exp.model.input_shape == (None, 64, 64, 3)
    logits = exp.serve_fn()(np.zeros((2, 28, 28, 1), np.uint8))["logits"]
    assert logits.shape == (2, 4)


def test_the_start_takes_the_shape_from_the_data_and_holds_a_resume_to_it():
    from engine.train.startup import with_image_shape
    cfg = resolve.defaults("tiny")
    assert with_image_shape(cfg, (28, 28, 1), False).data.image_shape == "28x28x1"
    old = cfg.replace("data", image_shape="")  # a run saved before shapes were stored: 32x32x3
    assert with_image_shape(old, (32, 32, 3), True).image_shape == (32, 32, 3)
    with pytest.raises(EngineError, match="has 28x28x1 images but the run being resumed trained on 32x32x3"):
        with_image_shape(old, (28, 28, 1), True)
    with pytest.raises(EngineError, match=r"--crop-pad 28 must be below the images' side \(28\)"):
        with_image_shape(cfg.replace("model", crop_pad=28), (28, 28, 1), False)
    with pytest.raises(EngineError, match="C 1 \\(grayscale\\) or 3 \\(RGB\\)"):
        with_image_shape(cfg, (28, 28, 2), False)


def test_predict_converts_a_png_to_the_runs_shape_and_says_so(tmp_path, shaped_data, capsys, monkeypatch):
    from PIL import Image

    from engine import predict
    from engine.export.cli import main as export
    out = train(tmp_path, "tiny", "28x28x1")
    onnx_path = os.path.join(out, "model.onnx")
    export(["onnx", out, "--out", onnx_path])
    monkeypatch.chdir(tmp_path)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save("photo.png")
    Image.fromarray(rgb[:28, :28, 0]).save("digit.png")  # grey, at the run's size: taken as it is
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        predict.main(["photo.png", "--model", onnx_path])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert err == "error: image photo.png is 40x40x3, the model takes 28x28x1 grayscale; pass --resize to scale it"
    predict.main(["photo.png", "digit.png", "--model", onnx_path, "--resize", "--json"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [r["image"] for r in results] == ["photo.png", "digit.png"] and len(results[0]["top"]) == 4
    predict.main(["digit.png", "--model", onnx_path])
    assert capsys.readouterr().err == ""  # nothing converted
    x, mode, _ = predict.decode("photo.png", True, (28, 28, 1))
    assert x.shape == (28, 28, 1) and mode == "RGB"
    gray = np.asarray(Image.fromarray(rgb).convert("L").resize((28, 28), Image.BILINEAR))
    np.testing.assert_array_equal(x[..., 0], gray)  # luminance, then the size
    x, mode, _ = predict.decode("digit.png", True, (64, 64, 3))  # grey to an RGB model: repeated
    assert x.shape == (64, 64, 3) and mode == "L" and np.all(x[..., 0] == x[..., 1])


def test_a_grayscale_image_is_the_rgb_image_of_its_repeated_channel_for_an_rgb_model():
    """Preprocess repeats a 1-channel image before normalising (each mode's RGB statistics per copy),
    and a 1-channel model normalises by the mean of those statistics."""
    import tensorflow as tf

    from engine.kernels import Preprocess
    gray = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    rgb = np.repeat(gray, 3, axis=-1)
    for mode in ("caffe", "torch", "tf", "cifar10"):
        p = Preprocess(64, mode, "bilinear", channels=3)
        np.testing.assert_array_equal(p(tf.constant(gray)).numpy(), p(tf.constant(rgb)).numpy())
    one = Preprocess(28, "cifar10", channels=1)(tf.constant(gray)).numpy()
    assert one.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(one, (gray / 255.0 - np.mean((0.4914, 0.4822, 0.4465))) / np.mean((0.2470, 0.2435, 0.2616)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3)])
@pytest.mark.parametrize("name", ["tiny", "airbench", "airbench-muon", "resnet9", "vgg16"])
def test_every_model_family_builds_for_the_runs_shape(name, shape):
    """Each family at 28x28 grayscale and 64x64 RGB: its input, its data init (airbench's whitening
    stem: 8 filters of 2x2x1 for grayscale), and logits for uint8 images of that shape."""
    import tensorflow as tf

    from engine import models
    spec = models.get(name)
    opts = resolve.defaults(name).replace("model", weights="none").model  # (no download)
    pre = models.preprocess_for(spec, opts, shape)
    model = models.build(name, pre.size, 10, opts, channels=pre.channels)
    want = (64, 64, 3) if spec.backbone else shape
    assert model.input_shape == (None, *want) and (pre.size, pre.channels) == (want[0], want[2])
    x = np.random.default_rng(0).integers(0, 256, (16, *shape), dtype=np.uint8)
    if spec.data_init:
        models.data_init(spec, model, x, pre)
        assert tuple(model.get_layer("whiten").kernel.shape) == (2, 2, shape[2], 8 * shape[2])
    assert model(pre(tf.constant(x)), training=False).shape == (16, 10)
