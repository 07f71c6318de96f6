"""Transfer learning: keras.applications backbones, freezing, heads, weights files, the feature
cache, the linear probe and the named recipes."""
import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.train import resolve
from engine import data, models, probe, recipes
from engine.train import cli as train
from engine.train import precision
from engine.errors import EngineError
from engine.models import backbones
from engine.train.build import build_training
from engine.train.trainer import Trainer
from tests.conftest import assert_one_line_error, run_cli


def _opts(name, **kw):
    return dataclasses.replace(resolve.defaults(name).model, weights="none", **kw)


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_backbone_builds_at_its_smallest_input_and_trains_a_step(name):
    keras.utils.set_random_seed(0)
    spec = models.get(name)
    cfg = resolve.defaults(name).replace("model", weights="none", freeze="none", head="gap", upsample=spec.min_size)
    cfg = cfg.replace("optim", batch_size=2, lr=1e-3)
    t = build_training(cfg, 10, 2, precision.apply(False))
    model, loop = t.model, t.loop
    assert model.input_shape == (None, spec.min_size, spec.min_size, 3)
    before = [v.numpy().copy() for v in model.trainable_variables]
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensors((x, np.array([1, 2], np.int32), np.arange(2, dtype=np.int32)))
    loss, _, bad, _ = loop.train_calls(iter(ds), tf.constant(1))
    assert np.isfinite(float(loss)) and int(bad) == -1
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


def test_inception_minimum_size_is_enforced():
    with pytest.raises(EngineError, match="inception_v3 needs inputs of at least 75x75"):
        models.input_size(models.get("inception_v3"), 74)


def test_freeze_from_a_named_layer():
    model = models.build("vgg16", 32, 10, _opts("vgg16", freeze="block5_conv1", head="dense512"))
    trainable = {v.path for v in model.trainable_variables}
    want = {f"block5_conv{i}/{w}" for i in (1, 2, 3) for w in ("kernel", "bias")}
    heads = {p for p in trainable if not p.startswith("block")}
    assert trainable - heads == want and len(heads) == 4  # two Dense layers, kernel + bias each
    frozen = models.build("vgg16", 32, 10, _opts("vgg16", freeze="all", head="dense512"))
    assert all(not v.path.startswith("block") for v in frozen.trainable_variables)
    with pytest.raises(EngineError, match="--freeze block9_conv1: vgg16 has no such layer"):
        models.build("vgg16", 32, 10, _opts("vgg16", freeze="block9_conv1"))


def test_frozen_batchnorm_runs_in_inference_mode():
    model = models.build("densenet121", 32, 10, _opts("densenet121", freeze="all", head="gap"))
    bn = [layer for layer in model.get_layer("backbone").layers if isinstance(layer, keras.layers.BatchNormalization)]
    mean0 = bn[0].moving_mean.numpy().copy()
    x = tf.random.uniform((4, 32, 32, 3))
    np.testing.assert_allclose(model(x, training=True).numpy(), model(x, training=False).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bn[0].moving_mean.numpy(), mean0)


def test_weights_from_a_file(tmp_path):
    keras.utils.set_random_seed(1)
    a = backbones.backbone("vgg16", 32, "none")
    path = str(tmp_path / "vgg16.weights.h5")
    a.save_weights(path)
    keras.utils.set_random_seed(2)
    b = backbones.backbone("vgg16", 32, path)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    with pytest.raises(EngineError, match="no such file"):
        backbones.backbone("vgg16", 32, str(tmp_path / "missing.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(EngineError, match="cannot load --weights"):
        backbones.backbone("vgg16", 32, str(tmp_path / "junk.h5"))


def test_imagenet_offline_is_one_line(tmp_path, shared_data):
    # A dead proxy makes the download fail here and on machines with internet alike.
    env = {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    p = run_cli("engine.train", "--model", "vgg16", "--data", shared_data, "--limit", 64, "--batch-size", 32,
                "--epochs", 1,
                "--out", tmp_path / "r", env=env)
    assert_one_line_error(p, "cannot download the ImageNet weights of vgg16", "--weights FILE")


def test_feature_cache_matches_training_the_full_model(tmp_path, shared_data):
    """Same seed, frozen backbone, no augmentation, a head without dropout: the head trained on cached
    features equals the head trained through the full model, up to float tolerance."""
    def run(cache):
        cfg = resolve.defaults("vgg16").replace("data", data=shared_data, limit=256, limit_test=100)
        cfg = cfg.replace("model", weights="none", upsample=32, head="dense512", feature_cache=cache)
        cfg = cfg.replace("optim", batch_size=32, epochs=2, lr=1e-3)
        t = Trainer(cfg.replace("run", out=str(tmp_path / f"c{cache}"), quiet=True, deterministic=True),
                    log=lambda *a: None)
        return t, t.run()
    cached, m_cached = run(True)
    full, m_full = run(False)
    assert m_cached["feature_cache"] and not m_full["feature_cache"]
    head = [v for v in full.model.trainable_variables]
    assert len(head) == 4
    for a, b in zip(cached.model.trainable_variables, head):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)
    assert abs(m_cached["test_accuracy"] - m_full["test_accuracy"]) <= 0.02


def test_probe_on_digits(tmp_path):
    """scikit-learn's digits (offline): both the raw-pixel and a random-VGG16-feature probe separate the
    10 classes well (measured 0.96 and 0.98 on 5 folds of all 1,438 training images); a probe with
    scrambled labels or features would sit near 0.1."""
    report = tmp_path / "probe.json"
    p = run_cli("engine.probe", "--data", "digits", "--backbone", "vgg16", "--weights", "none", "--folds", 3,
                "--limit", 600, "--report", report)
    assert p.returncode == 0, p.stderr
    r = json.loads(report.read_text())
    assert r["images"] == 600 and len(r["results"]["pixels"]["folds"]) == 3
    assert r["results"]["pixels"]["mean"] >= 0.9
    assert r["results"]["vgg16"]["mean"] >= 0.85
    assert "accuracy" in p.stdout and "±" in p.stdout


def test_probe_on_cifar10_classes(tmp_path, shared_data):
    """Experiment 3 on real CIFAR-10: two classes picked by name and index (frog and ship, as the
    seed's 6 vs 8), 3 folds of 600 images. Measured: raw pixels 0.86, random-weight VGG16 features
    0.91; scrambled labels or features would sit near 0.5."""
    report = tmp_path / "probe.json"
    p = run_cli("engine", "probe", "--data", shared_data, "--model", "vgg16", "--weights", "none",  # today's names
                "--class-subset", "frog,8", "--folds", 3, "--limit", 600, "--out", report)
    assert p.returncode == 0, p.stderr
    r = json.loads(report.read_text())
    assert r["classes"] == ["frog", "ship"] and r["images"] == 600
    assert r["results"]["pixels"]["mean"] >= 0.8
    assert r["results"]["vgg16"]["mean"] >= 0.8


def test_probe_random_backbone_is_the_same_every_run():
    """--weights none: the random backbone comes from --seed, so a README figure can be reproduced."""
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    keras.utils.set_random_seed(123)  # whatever state the process was left in
    a = probe.backbone_features("vgg16", "none", 32, images, seed=0)[0]  # (features, input shape, output shape)
    b = probe.backbone_features("vgg16", "none", 32, images, seed=0)[0]
    c = probe.backbone_features("vgg16", "none", 32, images, seed=1)[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_probe_class_selection():
    names = ["a", "b", "c"]
    assert probe.select_classes("c,0", names) == [0, 2]
    assert probe.select_classes("", names) == [0, 1, 2]


def test_recipes_resolve_with_flag_overrides():
    cfg = train.parse(["--recipe", "vgg16-frozen-64", "--epochs", "2"])
    assert cfg.model.model == "vgg16" and cfg.model.upsample == 64 and cfg.model.head == "seed"
    assert cfg.optim.optimizer == "adam" and cfg.optim.lr == pytest.approx(0.001 / 31)
    assert cfg.optim.epochs == 2 and cfg.run.recipe == "vgg16-frozen-64@v1"
    with pytest.raises(EngineError, match="unknown recipe"):
        train.parse(["--recipe", "nope"])
    for r in recipes.RECIPES.values():
        cfg = resolve.defaults(r.values["model.model"]).with_overrides(recipes.overrides(r))
        models.input_size(models.get(cfg.model.model), cfg.model.upsample)  # every recipe is buildable


def test_list_recipes():
    p = run_cli("engine.train", "--list-recipes")
    assert p.returncode == 0
    assert all(name in p.stdout for name in recipes.RECIPES)


def test_digits32_source():
    s = data.load("digits32")
    assert s.x_train.shape[1:] == (32, 32, 3) and s.x_train.dtype == np.uint8
    assert len(s.x_train) + len(s.x_test) == 1797 and s.num_classes == 10
