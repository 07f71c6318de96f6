"""A model of the user's (`--model FILE.keras` or `module:function`) trains with the user recipe
(Adam at 1e-3, as model.fit), `--help` says so, and runs saved under the earlier default keep it."""
import pytest

from engine import config as C
from engine import models, recipes
from engine.train import resolve
from engine.train.cli import parse

USER_MODELS = ["nets/my.keras", "my_pkg.nets:build"]


@pytest.mark.parametrize("name", USER_MODELS)
def test_a_user_model_gets_the_user_recipe(name):
    assert models.get(name).recipe == "user"
    cfg = parse(["--model", name, "--normalization", "unit"])
    o, m = cfg.optim, cfg.model
    assert (o.optimizer, o.lr, o.schedule, o.batch_size, o.label_smoothing, o.weight_decay) == \
        ("adam", 1e-3, "cosine", 32, 0.0, 0.0)
    assert (m.crop_pad, m.flip, m.tta) == (0, "none", 0)  # model.fit augments nothing
    assert parse(["--model", name, "--optimizer", "sgd", "--lr", "0.1"]).optim.momentum == 0.9  # flags still win


@pytest.mark.parametrize("name,lr", [("tiny", 0.4), ("resnet9", 0.4), ("airbench", 1.5), ("vgg16", 0.001 / 31)])
def test_registered_models_keep_their_recipes(name, lr):
    assert models.get(name).recipe != "user"
    assert resolve.defaults(name).optim.lr == pytest.approx(lr)


def test_help_shows_the_defaults_a_user_model_gets(capsys):
    with pytest.raises(SystemExit):
        parse(["--model", "my_pkg.nets:build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "peak learning rate (the loss is the batch mean) (default: 0.001)" in text
    assert "(default: adam)" in text and "global batch size (split over replicas) (default: 32)" in text


def test_a_resumed_user_model_run_keeps_the_recipe_it_was_started_with(tmp_path):
    """A run started when user models defaulted to the classic recipe (SGD at 0.4, batch 512)
    resumes with it: its saved config.json is the base, not today's defaults."""
    old = resolve.defaults("tiny").with_overrides(recipes.dotted(recipes.CLASSIC))
    old = old.replace("model", model=str(tmp_path / "my.keras"), normalization="unit")
    old.save(str(tmp_path / "config.json"))
    cfg = parse(["--resume", "--out", str(tmp_path), "--epochs", "30"])
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.schedule) == ("sgd", 0.4, 512,
                                                                                               "onecycle")
    assert cfg.optim.epochs == 30 and cfg.model.model == str(tmp_path / "my.keras")
