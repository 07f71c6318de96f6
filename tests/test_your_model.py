"""Your own model and your own config through the real `engine` command: a saved `.keras` file and
a `module:function` each train, resume, export to ONNX (parity checked) and evaluate; config files
and a run's own config.json resolve to the same config; bad models are one-line errors."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli, run_in_process

NETS = textwrap.dedent("""
    import keras

    def small_cnn():
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))  # probabilities out

    def upsampled():
        inputs = keras.Input((64, 64, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))

    def not_a_model():
        return 3

    def two_channels():
        inputs = keras.Input((32, 32, 2))
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))

    def no_logits():
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, keras.layers.Conv2D(10, 3)(inputs))

    def five_classes():
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))

    def two_inputs():
        a, b = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
        return keras.Model([a, b], keras.layers.Dense(10)(x))

    def two_outputs():
        a = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(a)
        return keras.Model(a, [keras.layers.Dense(10)(x), keras.layers.Dense(10)(x)])

    def int_outputs():
        a = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(a)
        return keras.Model(a, keras.ops.cast(keras.layers.Dense(10)(x), "int32"))
""")
SHORT = ["--data", "digits32", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    (d / "mynets.py").write_text(NETS)
    (d / "broken_syntax.py").write_text("def f(:\n    pass\n")
    (d / "fails_at_import.py").write_text("raise RuntimeError('import-time failure')\n")
    env = {"PYTHONPATH": f"{d}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", "import mynets; mynets.upsampled().save('up.keras')"], cwd=d, check=True,
                   env={**os.environ, **env}, capture_output=True, timeout=300)
    (d / "truncated.keras").write_bytes((d / "up.keras").read_bytes()[:2000])
    return d, env


def engine(*args, env=None):
    return run_cli("engine", *args, env=env)


@pytest.mark.parametrize("model,extra", [("mynets:small_cnn", []), ("up.keras", ["--normalization", "unit"])])
def test_your_model_trains_resumes_exports_and_evaluates(nets, tmp_path, model, extra):
    d, env = nets
    model = str(d / model) if model.endswith(".keras") else model
    out = tmp_path / "run"
    p = engine("train", "--model", model, *extra, *SHORT, "--epochs", 2, "--out", out, env=env)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["model"] == model and cfg["optim"]["epochs"] == 2
    # the run's own config; a module:function model and where a run writes come from the command line only
    p = engine("train", "--config", out / "config.json", "--model", model, "--out", out, "--print-config", env=env)
    assert p.returncode == 0 and json.loads(p.stdout) == cfg, p.stderr
    p = engine("train", "--resume", "--epochs", 3, "--out", out, "--quiet", env=env)
    assert p.returncode == 0, p.stderr
    assert "resumed at step 44 (epoch 3, step 0)" in p.stdout
    p = engine("export", "onnx", out, "--out", out / "model.onnx", env=env)  # parity <= 1e-3 is checked inside
    assert p.returncode == 0, p.stderr
    p = engine("evaluate", "--backend", "onnx", "--model", out / "model.onnx", "--against", f"tf:{out}",
               "--data", "digits32", env=env)
    assert p.returncode == 0, p.stderr
    report = json.loads((out / "evaluate-model-onnx.json").read_text())
    assert report["against"]["top1_agreement"] == 1.0 and report["against"]["max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize("model,extra,message", [
    ("mynets:not_a_model", [], "expected a Keras model, got int"),
    ("mynets:two_channels", [], "C 1 (grayscale) or 3 (RGB), got input (32, 32, 2)"),
    ("mynets:no_logits", [], "one vector of logits per image"),
    ("mynets:five_classes", [], "5 outputs but the data has 10 classes"),
    ("mynets:upsampled", ["--upsample", "96"], "takes 64x64 images"),
    ("mynets:missing", [], "cannot import 'missing'"),
    ("nomodule:fn", [], "cannot import 'fn' from 'nomodule'"),
    ("up.keras", [], "needs --normalization"),
    ("broken.keras", ["--normalization", "unit"], "not a .keras file"),
    ("truncated.keras", ["--normalization", "unit"], "not a .keras file (a .keras model is a zip archive"),
    ("mynets:two_inputs", [], "expected a model with one input ([H, W, C] images), got 2 inputs"),
    ("mynets:two_outputs", [], "expected a model with one output (a vector of logits per image), got 2 outputs"),
    ("mynets:int_outputs", [], "expected float logits (or probabilities), got output dtype int32"),
    ("broken_syntax:f", [], "importing 'broken_syntax' raised SyntaxError: invalid syntax"),
    ("fails_at_import:f", [], "importing 'fails_at_import' raised RuntimeError: import-time failure"),
    (":f", [], "expected pkg.module:function"),
    (".mynets:small_cnn", [], "expected pkg.module:function, an importable module (no leading dot)"),
    ("absent.keras", ["--normalization", "unit"], "no such file"),
])
def test_a_bad_model_is_one_line(nets, tmp_path, model, extra, message, capsys, monkeypatch):
    """In this process, through the CLI's own code path (run_in_process)."""
    d, env = nets
    monkeypatch.syspath_prepend(str(d))
    (d / "broken.keras").write_bytes(b"not a zip")
    model = str(d / model) if model.endswith(".keras") else model
    p = run_in_process(capsys, "engine.train", "--model", model, *extra, *SHORT, "--out", tmp_path / "r")
    assert_one_line_error(p, message)
    assert not (tmp_path / "r").exists()  # a failed start leaves nothing behind


def test_a_config_file_and_a_runs_config_json_resolve_to_the_same_config(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  model: resnet9\noptim:\n  epochs: 3\n  lr: 0.3\n")
    (tmp_path / "c.toml").write_text('"optim.epochs" = 3\n"optim.lr" = 0.3\n[model]\nmodel = "resnet9"\n')
    printed = []
    for f in ("c.yaml", "c.toml"):
        p = engine("train", "--config", tmp_path / f, "--batch-size", 64, "--print-config")
        assert p.returncode == 0, p.stderr
        printed.append(json.loads(p.stdout))
    assert printed[0] == printed[1]
    cfg = printed[0]
    assert (cfg["model"]["model"], cfg["optim"]["epochs"], cfg["optim"]["lr"]) == ("resnet9", 3.0, 0.3)
    assert cfg["optim"]["batch_size"] == 64 and cfg["optim"]["momentum"] == 0.9  # flag over file over recipe
    (tmp_path / "run.json").write_text(json.dumps(cfg))  # a run's config.json has the same shape
    p = engine("train", "--config", tmp_path / "run.json", "--print-config")
    assert json.loads(p.stdout) == cfg


@pytest.mark.parametrize("name", ["airbench", "resnet9", "tiny", "vgg16", "vgg19", "inception_v3", "densenet121",
                                  "resnet50"])
def test_print_config_shows_each_models_own_recipe(name, capsys):
    from engine.train import cli, resolve
    with pytest.raises(SystemExit) as e:
        cli.parse(["--model", name, "--print-config"])
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out) == resolve.defaults(name).to_dict()


def test_help_shows_the_chosen_models_defaults():
    p = engine("train", "--model", "resnet9", "--help")
    text = " ".join(p.stdout.split())
    assert "peak learning rate (the loss is the batch mean) (default: 0.4)" in text  # airbench's is 1.5


def test_a_two_phase_fine_tune_through_init_from(tmp_path):
    """Phase 1 trains the head on a frozen backbone (on cached features); phase 2 starts from its best
    weights with a new optimizer and schedule and trains from block5_conv1 on. Phase 2 has another
    seed, so its frozen layers keep phase 1's weights only if --init-from loaded them."""
    common = ["--model", "vgg16", "--weights", "none", "--upsample", 32, "--head", "gap", "--data", "digits",
              "--limit", 256, "--epochs", 1, "--batch-size", 64, "--quiet"]
    p = engine("train", *common, "--out", tmp_path / "head")
    assert p.returncode == 0, p.stderr
    p = engine("train", "--recipe", "vgg16-finetune-block5", *common, "--crop-pad", 0, "--seed", 1,
               "--init-from", f"{tmp_path / 'head'}:best", "--out", tmp_path / "ft")
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())  # the phase-2 recipe, under the flags given
    assert (cfg["model"]["freeze"], cfg["optim"]["optimizer"], cfg["optim"]["lr"]) == ("block5_conv1", "adam", 1e-5)
    assert cfg["run"]["recipe"] == "vgg16-finetune-block5@v1" and cfg["model"]["flip"] == "random"
    assert f"weights from {tmp_path / 'head'}/checkpoints/best/ckpt-4" in p.stdout
    from engine.export.load import load_run

    def layer(run, which, name):
        return load_run(str(tmp_path / run), which).model.get_layer("backbone").get_layer(name).get_weights()
    for a, b in zip(layer("head", "best", "block1_conv1"), layer("ft", "latest", "block1_conv1")):
        np.testing.assert_array_equal(a, b)  # untouched by phase 2: phase 1's values, not seed 1's init
    assert not np.array_equal(layer("head", "best", "block5_conv1")[0], layer("ft", "latest", "block5_conv1")[0])
    p = engine("train", "--model", "tiny", "--data", "digits", "--init-from", tmp_path / "head", "--out", tmp_path / "x")
    assert_one_line_error(p, "its model is not this one")


def test_a_saved_model_trains_in_the_runs_precision(nets):
    """A .keras file's layers keep the policy they were saved in (float32); under --amp they are rebuilt
    in mixed_bfloat16 with the same weights, nested models included."""
    import keras

    from engine.models import user
    d, _ = nets
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(d / "nested.keras")
    images = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    plain = user.load(str(d / "nested.keras"))
    assert {layer.dtype_policy.name for layer in user._all_layers(plain)} == {"float32"}
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        mixed = user.load(str(d / "nested.keras"))
        assert {layer.dtype_policy.name for layer in user._all_layers(mixed)} == {"mixed_bfloat16"}
        assert mixed(images).dtype == "bfloat16"
        np.testing.assert_allclose(np.asarray(mixed(images), np.float32), np.asarray(plain(images)), atol=0.05)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_your_models_batch_norm_trains_with_the_fused_kernel_on_a_cpu(nets):
    """A saved model's own BatchNormalization layers, nested ones included, get the fused training
    form too (docs/performance.md): the CPU training graph holds FusedBatchNormV3, the saved layers stay
    Keras's class."""
    import keras
    import tensorflow as tf

    from engine import models
    d, _ = nets
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(inner(inputs)))
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(d / "nested_bn.keras")
    from engine.models import cpu_step
    model = models.build(str(d / "nested_bn.keras"), 32, 10)
    cpu_step.apply(model, xla=False, cpu_flags=set(), has_gpu=False)  # a CPU training step's form
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(
        tf.TensorSpec([2, 32, 32, 3], tf.float32)).graph
    assert [op.type for op in graph.get_operations()].count("FusedBatchNormV3") == 2
    assert all(type(layer) is keras.layers.BatchNormalization
               for layer in model._flatten_layers() if "batch_normalization" in layer.name)
