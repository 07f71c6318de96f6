"""`engine train --config FILE` and a run's config.json: data only, bounded, every value checked as
its flag is (no TensorFlow)."""
import json
import os
import sys

import pytest

from engine import config as C
from engine.errors import EngineError
from engine.train import resolve


def flags(*argv):
    from engine.train.cli import parse
    return parse([str(a) for a in argv])


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# -- a config file is data: it names no code to run ---------------------------------------------------

def test_a_module_function_model_in_a_file_is_refused_without_importing_it(tmp_path, monkeypatch):
    (tmp_path / "evilmod.py").write_text("open(__file__ + '.imported', 'w').close()\ndef fn():\n    raise SystemExit(9)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, "c.yaml", "model:\n  model: evilmod:fn\n")
    with pytest.raises(EngineError) as e:
        flags("--config", path)
    assert "names Python code" in one_line(e) and "give --model evilmod:fn on the command line" in str(e.value)
    assert "evilmod" not in sys.modules and not (tmp_path / "evilmod.py.imported").exists()
    # the command line decides: --model over the file's value is the user's own choice
    assert flags("--config", path, "--model", "tiny").model.model == "tiny"
    assert flags("--config", path, "--model", "evilmod:fn").model.model == "evilmod:fn"
    # a file may name a registered model, or a .keras file (loaded in Keras's safe mode)
    monkeypatch.chdir(tmp_path)
    assert flags("--config", write(tmp_path, "k.yaml", "model: net.keras\n")).model.model == str(tmp_path / "net.keras")
    assert flags("--config", write(tmp_path, "r.yaml", "model: resnet9\n")).model.model == "resnet9"


# -- a config file is small and regular ---------------------------------------------------------------

def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path):
    os.symlink("/dev/zero", tmp_path / "zero.yaml")
    with pytest.raises(EngineError, match="is not a regular file"):
        resolve.read_config_file(str(tmp_path / "zero.yaml"))
    os.mkfifo(tmp_path / "fifo.yaml")  # nobody writes it: an open that waited would never return
    with pytest.raises(EngineError, match="is not a regular file"):
        resolve.read_config_file(str(tmp_path / "fifo.yaml"))
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(EngineError, match="is not a regular file"):
        resolve.read_config_file(str(tmp_path / "dir.yaml"))


def test_a_config_larger_than_a_mebibyte_is_refused(tmp_path):
    path = write(tmp_path, "big.yaml", "# comment\n" * 110_000 + "optim:\n  lr: 0.1\n")
    with pytest.raises(EngineError) as e:
        resolve.read_config_file(path)
    assert "is larger than 1024 KiB" in one_line(e)
    assert resolve.read_config_file(write(tmp_path, "ok.yaml", "# comment\n" * 50_000 + "lr: 0.1\n")) == \
        {("optim", "lr"): 0.1}


@pytest.mark.parametrize("name,text", [
    ("deep.json", '{"optim": {"lr": ' + "[" * 100_000 + "]" * 100_000 + "}}"),
    ("deep.yaml", "optim:\n  lr: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
])
def test_a_deeply_nested_config_is_one_line(tmp_path, name, text):
    with pytest.raises(EngineError) as e:
        resolve.read_config_file(write(tmp_path, name, text))
    assert "nested too deeply" in one_line(e)


def test_a_value_of_the_wrong_kind_is_named_not_printed(tmp_path):
    # YAML aliases make a small file that names a huge structure: the error says its kind only
    text = "lr:\n  - &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  - &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    with pytest.raises(EngineError) as e:  # 9**9 items if printed
        resolve.read_config_file(write(tmp_path, "laughs.yaml", text))
    assert one_line(e).endswith("optim.lr is a list, expected a float")


# -- the same checks for a value wherever it comes from ---------------------------------------------------

@pytest.mark.parametrize("yaml_text,argv,rule", [
    ("run:\n  seed: -1\n", ["--seed", "-1"], "must be in [0, 4294967295]"),
    ("optim:\n  epochs: .inf\n", ["--epochs", "inf"], "expected a finite number"),
    ("optim:\n  epochs: -1\n", ["--epochs", "-1"], "must be above 0"),
    ("run:\n  checkpoint_every: -3\n", ["--checkpoint-every", "-3"], "must be at least 0"),
    ("optim:\n  lr: .nan\n", ["--lr", "nan"], "expected a finite number"),
    ("optim:\n  lr: .inf\n", ["--lr", "inf"], "expected a finite number"),
    ("optim:\n  lr: -0.1\n", ["--lr", "-0.1"], "must be at least 0"),
    ("optim:\n  warmup: 7\n", ["--warmup", "7"], "must be in [0, 1] (a fraction of the training steps, not a number "
                                                 "of epochs)"),
    ("optim:\n  warmup: -0.1\n", ["--warmup", "-0.1"], "must be in [0, 1]"),
    ("optim:\n  label_smoothing: 1.5\n", ["--label-smoothing", "1.5"], "must be in [0, 1)"),
    ("optim:\n  label_smoothing: 1\n", ["--label-smoothing", "1"], "must be in [0, 1)"),
    ("data:\n  val_images: -1\n", ["--val-images", "-1"], "must be at least 0"),
    ("optim:\n  early_stop: -1\n", ["--early-stop", "-1"], "must be at least 0"),
    ("run:\n  profile: -2\n", ["--profile", "-2"], "must be at least 0"),
    ("run:\n  keep_checkpoints: -1\n", ["--keep-checkpoints", "-1"], "must be at least 1"),
    ("run:\n  keep_checkpoints: 0\n", ["--keep-checkpoints", "0"], "must be at least 1"),
    ("optim:\n  batch_size: 0\n", ["--batch-size", "0"], "must be at least 1"),
    ("data:\n  val_split: 1.0\n", ["--val-split", "1"], "must be in [0, 1)"),
])
def test_a_file_value_gets_the_checks_its_flag_gets(tmp_path, yaml_text, argv, rule):
    section, name = yaml_text.split(":")[0], yaml_text.split("\n")[1].split(":")[0].strip()
    with pytest.raises(EngineError) as e:
        flags("--config", write(tmp_path, "c.yaml", yaml_text))
    assert f"{section}.{name} is " in one_line(e) and rule in str(e.value)
    with pytest.raises(EngineError) as e:
        flags(*argv)
    assert f"argument {argv[0]}: " in one_line(e) and rule in str(e.value)


def test_each_bad_number_names_its_own_flag():
    with pytest.raises(EngineError) as e:
        flags("--epochs", "-1")
    assert str(e.value) == "engine train: argument --epochs: must be above 0, got -1"
    with pytest.raises(EngineError) as e:  # a config made in code gets the same rule from check()
        resolve.check(resolve.defaults("tiny").replace("optim", epochs=-1.0))
    assert str(e.value) == "--epochs must be above 0, got -1.0"
    with pytest.raises(EngineError, match=r"^--warmup must be in \[0, 1\] \(a fraction"):
        resolve.check(resolve.defaults("tiny").replace("optim", warmup=5.0))


def test_every_models_recipe_keeps_the_ranges():
    from engine import models, recipes
    for name in models.names():
        resolve.check(resolve.defaults(name))
    for name, recipe in recipes.RECIPES.items():
        cfg = resolve.defaults().with_overrides(recipes.overrides(recipe))
        for (section, field), value in recipes.overrides(recipe).items():
            C.coerce(section, field, value)  # raises if a recipe left a range
        assert cfg.optim.epochs > 0, name


def test_flag_prefixes_are_not_taken_for_flags():
    with pytest.raises(EngineError, match="unrecognized arguments: --epoch 1"):
        flags("--epoch", "1")
    assert flags("--epochs", "1").optim.epochs == 1


# -- where a launch writes, and whether it continues a run, is the command line's ----------------------------

def test_a_run_config_json_never_decides_where_a_rerun_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = resolve.defaults("tiny").replace("run", out="runs/a", overwrite=True, resume=True, seed=3)
    os.makedirs("runs/a")
    saved.save("runs/a/config.json")
    values = resolve.read_config_file("runs/a/config.json")
    assert not {("run", "out"), ("run", "overwrite"), ("run", "resume")} & set(values)
    cfg = flags("--config", "runs/a/config.json", "--overwrite")
    assert cfg.run.out == "" and cfg.run.overwrite and cfg.run.seed == 3  # a new folder when it starts
    assert flags("--config", "runs/a/config.json", "--out", "runs/b").run.out == "runs/b"
    assert flags("--config", write(tmp_path, "o.yaml", "out: runs/a\n")).run.out == ""
    assert resolve.with_out(cfg).run.out.startswith("runs/tiny-")


def test_config_with_resume_is_refused(tmp_path):
    resolve.defaults("tiny").save(str(tmp_path / "config.json"))
    path = write(tmp_path, "change.yaml", "optim:\n  optimizer: adam\n")
    with pytest.raises(EngineError) as e:
        flags("--config", path, "--resume", "--out", tmp_path)
    assert "--config starts a new run; --resume continues the run in --out" in one_line(e)


# -- the forms a file may take ----------------------------------------------------------------------------

def test_flat_field_and_flag_names_are_taken_beside_sections_and_dotted_keys(tmp_path):
    flat = resolve.read_config_file(write(tmp_path, "flat.yaml", "model: tiny\nlr: 0.2\nepochs: 3\nbatch-size: 256\n"
                                                                  "--label-smoothing: 0.1\ndata: digits\n"))
    assert flat == {("model", "model"): "tiny", ("optim", "lr"): 0.2, ("optim", "epochs"): 3.0,
                    ("optim", "batch_size"): 256, ("optim", "label_smoothing"): 0.1, ("data", "data"): "digits"}
    sectioned = resolve.read_config_file(write(tmp_path, "s.yaml", "model:\n  model: tiny\noptim:\n  lr: 0.2\n"
                                                                   "  epochs: 3\n  batch-size: 256\n"
                                                                   "  label_smoothing: 0.1\ndata:\n  data: digits\n"))
    dotted = resolve.read_config_file(write(tmp_path, "d.toml", '"model.model" = "tiny"\n"optim.lr" = 0.2\n'
                                                                '"optim.epochs" = 3\n"optim.batch-size" = 256\n'
                                                                '"optim.label_smoothing" = 0.1\n"data.data" = "digits"\n'))
    assert flat == sectioned == dotted
    cfg = flags("--config", str(tmp_path / "flat.yaml"), "--lr", "0.3")
    assert (cfg.model.model, cfg.optim.lr, cfg.optim.batch_size) == ("tiny", 0.3, 256)


@pytest.mark.parametrize("text,message", [
    ("learning_rate: 0.1\n", "'learning_rate' is not a config field; did you mean lr (optim.lr)?"),
    ("batchsize: 64\n", "'batchsize' is not a config field; did you mean batch_size (optim.batch_size)?"),
    ("optim:\n  limit: 5\n", "optim.limit is not a config field: limit is in section data (data.limit, or plain limit)"),
    ("optim:\n  learning_rate: 0.1\n", "optim.learning_rate is not a config field; did you mean lr (optim.lr)?"),
    ("optimizer:\n  lr: 0.1\n", "'optimizer' is not a config section (data, model, optim, run)"),
    ("optim: 3\n", "optim is a config section: give it a mapping of its fields"),
    ("lr: 0.1\noptim:\n  lr: 0.2\n", "optim.lr is given twice"),
    ("- 1\n", "expected a mapping of config sections or fields, got a list"),
])
def test_an_unknown_key_is_one_line_naming_the_closest_field(tmp_path, text, message):
    with pytest.raises(EngineError) as e:
        resolve.read_config_file(write(tmp_path, "c.yaml", text))
    assert message in one_line(e)


# -- a run's config.json is checked as a config file is -------------------------------------------------------

@pytest.mark.parametrize("edit,message", [
    (lambda d: dict(d, model=5), "section model is 5, expected an object of its fields"),
    (lambda d: dict(d, model=dict(d["model"], upsample="big")), "model.upsample is 'big', expected an int"),
    (lambda d: dict(d, run=dict(d["run"], seed=-1)), "run.seed is -1, must be in [0, 4294967295]"),
    (lambda d: dict(d, optim=dict(d["optim"], epochs=float("inf"))), "optim.epochs is inf, expected a finite number"),
    (lambda d: [d], "expected a JSON object of sections (data, model, optim, run), got a list"),
])
def test_a_damaged_run_config_is_one_line_naming_file_and_key(tmp_path, edit, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(edit(resolve.defaults("tiny").to_dict())))
    with pytest.raises(EngineError) as e:
        C.Config.load(str(path))
    assert str(e.value).startswith(f"config {path}: ") and message in one_line(e)
    with pytest.raises(EngineError) as e:  # --resume reads it the same way
        flags("--resume", "--out", tmp_path)
    assert message in one_line(e)


def test_a_run_config_that_is_not_a_small_regular_file_is_one_line(tmp_path):
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EngineError, match="nested too deeply"):
        C.Config.load(str(tmp_path / "deep" / "config.json"))
    (tmp_path / "zero").mkdir()
    os.symlink("/dev/zero", tmp_path / "zero" / "config.json")
    with pytest.raises(EngineError, match="is not a regular file"):
        C.Config.load(str(tmp_path / "zero" / "config.json"))


def test_a_saved_config_round_trips():
    cfg = resolve.defaults("airbench").replace("run", seed=5, xla=True)
    assert C.Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
