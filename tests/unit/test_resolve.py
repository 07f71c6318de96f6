"""Config resolution and every config rule, checked before anything is built (no TensorFlow)."""
import dataclasses
import json

import pytest

from engine import config as C
from engine.errors import EngineError
from engine.train import resolve


def flags(*argv):
    from engine.train.cli import parse
    return parse(list(argv))


def test_resolution_order_model_recipe_then_named_recipe_then_flags():
    assert flags("--model", "resnet9").optim.lr == 0.4  # the classic recipe, not airbench's 1.5
    cfg = flags("--recipe", "vgg16-frozen-64", "--epochs", "2")
    assert cfg.model.model == "vgg16" and cfg.model.upsample == 64  # the named recipe
    assert cfg.optim.epochs == 2  # the flag over it
    assert cfg.run.recipe == "vgg16-frozen-64@v1"
    assert flags().optim.lr == C.Config().optim.lr


def test_environment_defaults_sit_under_the_flags(monkeypatch):
    monkeypatch.setenv("ENGINE_DATA", "/somewhere/cifar.tar.gz")
    assert flags().data.data == "/somewhere/cifar.tar.gz" == C.data_default()
    assert flags("--data", "digits").data.data == "digits"


def test_resume_starts_from_the_saved_config(tmp_path):
    saved = resolve.defaults("tiny").replace("optim", epochs=3).replace("run", strategy="multiworker")
    saved.save(str(tmp_path / "config.json"))
    cfg = flags("--resume", "--out", str(tmp_path), "--epochs", "5")
    assert cfg.model.model == "tiny" and cfg.optim.epochs == 5 and cfg.run.resume
    assert cfg.run.strategy == "auto"  # where it continues is this launch's choice
    with pytest.raises(EngineError, match="--batch-size differs from the run being resumed"):
        flags("--resume", "--out", str(tmp_path), "--batch-size", "8")
    with pytest.raises(EngineError, match="nothing to resume"):
        flags("--resume", "--out", str(tmp_path / "none"))


def test_a_run_saved_before_a_field_existed_gets_the_value_it_was_trained_with(tmp_path):
    d = resolve.defaults("airbench").to_dict()
    del d["optim"]["sgd_momentum"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert C.Config.load(str(tmp_path / "config.json")).optim.sgd_momentum == "keras"


@pytest.mark.parametrize("change,message", [
    (("optim", {"batch_size": 0}), "at least 1"),
    (("run", {"steps_per_call": 0}), "at least 1"),
    (("optim", {"epochs": 0}), "--epochs must be above 0"),
    (("optim", {"optimizer": "adam"}), "--bias-lr-scale has no effect with adam"),
    (("run", {"deterministic": True, "xla": True}), "cannot be combined with --xla"),
    (("run", {"resume": True, "overwrite": True}), "contradict"),
    (("data", {"val_split": 1.0}), "--val-split must be in [0, 1)"),
    (("model", {"upsample": 8}), "at least 9x9"),
    (("model", {"width": 2.0, "model": "tiny"}), "--width does not apply to model tiny"),
    (("model", {"head": "gap"}), "--head does not apply to model airbench; it is for densenet121"),
    (("run", {"strategy": "ring"}), "unknown --strategy"),
])
def test_check_refuses_each_bad_config_in_one_line(change, message):
    section, values = change
    cfg = resolve.defaults("airbench").replace(section, **values)
    with pytest.raises(EngineError) as e:
        resolve.check(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_check_accepts_every_models_own_defaults():
    from engine import models
    for name in models.names():
        resolve.check(resolve.defaults(name))


def test_batch_split_over_replicas():
    assert resolve.check_batch_split(1024, 4) == 256
    with pytest.raises(EngineError, match="use a multiple of 3"):
        resolve.check_batch_split(1024, 3)


def test_the_feature_cache_applies_only_to_a_frozen_backbone_without_augmentation():
    frozen = resolve.defaults("vgg16")
    assert resolve.feature_cache_applies(frozen)
    assert not resolve.feature_cache_applies(frozen.replace("model", crop_pad=2))
    assert not resolve.feature_cache_applies(frozen.replace("model", freeze="block5_conv1"))
    assert not resolve.feature_cache_applies(frozen.replace("model", feature_cache=False))
    assert not resolve.feature_cache_applies(resolve.defaults("tiny").replace("model", crop_pad=0, flip="none"))


@pytest.mark.parametrize("name,text,message", [
    ("c.yaml", "optim:\n  epochs: three\n", "optim.epochs is 'three', expected a float"),
    ("c.yaml", "optim:\n  lrr: 3\n", "optim.lrr is not a config field"),
    ("c.yaml", "optim: [\n", "is not valid"),
    ("c.toml", "[optim]\nepochs = \n", "is not valid"),
    ("c.yaml", "model:\n  flip: sideways\n", "expected one of none, random, alternate"),
    ("c.yaml", "speed: 3\n", "'speed' is not a config field; did you mean seed (run.seed"),
    ("c.ini", "x", "expected a .yaml, .yml, .toml or .json file"),
])
def test_a_bad_config_file_is_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(".", r"\.")):
        resolve.read_config_file(str(tmp_path / name))


def test_a_config_file_sits_between_the_recipe_and_the_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("run:\n  recipe: vgg16-frozen-64\n  resume: true\noptim:\n  epochs: 4\n")
    values = resolve.read_config_file(str(tmp_path / "c.yaml"))
    assert ("run", "resume") not in values  # whether to continue a run is the command line's
    cfg = resolve.resolve({("optim", "lr"): 0.01}, values)
    assert cfg.model.model == "vgg16" and cfg.optim.epochs == 4 and cfg.optim.lr == 0.01
    assert cfg.run.recipe == "vgg16-frozen-64@v1"


def test_a_keras_model_path_is_recorded_absolute_and_needs_its_normalization(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve.resolve({("model", "model"): "net.keras"})
    assert cfg.model.model == str(tmp_path / "net.keras")
    with pytest.raises(EngineError, match="needs --normalization"):
        resolve.check(cfg)
    resolve.check(cfg.replace("model", normalization="unit"))  # the file is looked at when built
    with pytest.raises(EngineError, match="--normalization does not apply to model airbench"):
        resolve.check(resolve.defaults("airbench").replace("model", normalization="unit"))


def test_every_config_field_is_in_exactly_one_help_group():
    names = [f.name for dc in C.SECTIONS.values() for f in dataclasses.fields(dc) if not f.metadata.get("internal")]
    grouped = [name for group in C.HELP_GROUPS.values() for name in group]
    assert sorted(grouped) == sorted(names)  # none missing, none twice, none unknown


def test_the_image_shape_is_stored_not_a_flag():
    assert C.Config().image_shape == (32, 32, 3)  # a run saved without one: CIFAR-10's
    cfg = C.Config.from_dict({"data": {"image_shape": "28x28x1"}})
    assert cfg.image_shape == (28, 28, 1) and cfg.data.image_shape == "28x28x1"
    with pytest.raises(EngineError, match=r"data.image_shape is '28x28x2', expected HxWxC with sides >= 1 and C 1 or 3"):
        C.Config.from_dict({"data": {"image_shape": "28x28x2"}})
    with pytest.raises(EngineError, match="unrecognized arguments: --image-shape"):
        resolve.build_parser("engine train", "").parse_args(["--image-shape", "28x28x1"])


def test_a_second_phase_recipe_needs_the_first_phases_run():
    with pytest.raises(EngineError, match="second phase of a fine-tune: give --init-from RUN, a run of --recipe "
                                          "vgg16-frozen-64"):
        flags("--recipe", "vgg16-finetune-block5")


def test_amp_and_xla_are_on_off_or_auto(monkeypatch, tmp_path):
    cfg = flags()
    assert (cfg.run.amp, cfg.run.xla) == ("auto", "auto") or C.env_defaults()  # the suite sets ENGINE_AMP/XLA
    monkeypatch.delenv("ENGINE_AMP", raising=False)
    monkeypatch.delenv("ENGINE_XLA", raising=False)
    assert (flags().run.amp, flags().run.xla) == ("auto", "auto")  # the product's default
    assert (flags("--amp").run.amp, flags("--no-amp").run.amp, flags("--amp", "off").run.amp) == (True, False, False)
    assert flags("--xla", "auto", "--amp", "on").run.xla == "auto"
    monkeypatch.setenv("ENGINE_AMP", "on")
    assert flags().run.amp is True and flags("--amp", "auto").run.amp == "auto"  # a flag over the environment
    monkeypatch.setenv("ENGINE_AMP", "sometimes")
    with pytest.raises(EngineError, match="ENGINE_AMP='sometimes': expected on, off or auto"):
        flags()
    monkeypatch.delenv("ENGINE_AMP")
    (tmp_path / "c.yaml").write_text("run:\n  amp: auto\n  xla: true\n")
    cfg = flags("--config", str(tmp_path / "c.yaml"))
    assert (cfg.run.amp, cfg.run.xla) == ("auto", True)
    (tmp_path / "bad.yaml").write_text("run:\n  amp: 3\n")
    with pytest.raises(EngineError, match="run.amp is 3, expected true, false or auto"):
        flags("--config", str(tmp_path / "bad.yaml"))
    with pytest.raises(EngineError, match="--no-amp takes no value"):
        flags("--no-amp", "on")


def test_the_recipes_first_names_still_work():
    old, new = flags("--recipe", "seed-vgg16-frozen"), flags("--recipe", "vgg16-frozen-64")
    assert old == new and new.run.recipe == "vgg16-frozen-64@v1"
    assert flags("--recipe", "seed-inception-frozen").model.model == "inception_v3"


def test_recipe_help_shows_the_recipes_defaults(capsys):
    """`engine train --recipe X --help` shows X's values (and its model's), not the default model's."""
    from engine.train import cli
    with pytest.raises(SystemExit):
        cli.parse(["--recipe", "vgg16-frozen-64", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 3.226e-05)" in text and "(default: imagenet)" in text
    with pytest.raises(SystemExit):
        cli.parse(["--help"])
    assert "(default: 3.226e-05)" not in " ".join(capsys.readouterr().out.split())
