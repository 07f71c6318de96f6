"""Every recipe value is written once, in engine/recipes.py: the config defaults read it, and no
other module holds a recipe."""
import ast
import dataclasses
import pathlib

import pytest

from engine import config as C
from engine import models, recipes
from engine.train import resolve

ENGINE = pathlib.Path(__file__).resolve().parents[2] / "engine"


def test_config_defaults_are_the_default_models_recipe():
    cfg = C.Config()
    for key, value in recipes.model_recipe(recipes.DEFAULT).items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value, key
    # and the fields a recipe sets say so (a literal default there would be a second copy)
    for section, dc in C.SECTIONS.items():
        for f in dataclasses.fields(dc):
            if f"{section}.{f.name}" in recipes.model_recipe(recipes.DEFAULT):
                assert f.metadata.get("recipe") == f"{section}.{f.name}", f.name


def test_every_model_recipe_sets_every_recipe_field():
    """A model's defaults are the dataclass defaults (the default model's recipe) with its own recipe
    over them: a field its recipe left out would silently take the default model's value, and change
    when the default model does."""
    recipe_fields = {f.metadata["recipe"] for dc in C.SECTIONS.values() for f in dataclasses.fields(dc)
                     if f.metadata.get("recipe")}
    assert "optim.aux_lr" in recipe_fields and "optim.lookahead" in recipe_fields
    for name, values in recipes.MODEL_RECIPES.items():
        assert recipe_fields <= set(values), (name, recipe_fields - set(values))


def test_the_default_models_resolved_config_is_the_dataclass_config(monkeypatch):
    for name in ("ENGINE_DATA", "ENGINE_AMP", "ENGINE_XLA"):
        monkeypatch.delenv(name, raising=False)
    assert resolve.defaults(C.ModelConfig().model) == C.Config()
    assert models.get(C.ModelConfig().model).recipe == recipes.DEFAULT


@pytest.mark.parametrize("name", sorted(recipes.MODEL_RECIPES))
def test_every_recipe_key_is_a_config_field(name):
    fields = {f"{s}.{f.name}" for s, dc in C.SECTIONS.items() for f in dataclasses.fields(dc)}
    assert set(recipes.MODEL_RECIPES[name]) <= fields
    for r in recipes.RECIPES.values():
        assert set(r.values) <= fields, r.name


def test_list_models_marks_the_default_model_and_only_it(capsys, monkeypatch):
    from engine.train import cli
    monkeypatch.setattr(recipes, "DEFAULT", "resnet9")  # the mark follows recipes.DEFAULT, not a description
    with pytest.raises(SystemExit):
        cli.parse(["--list-models"])
    marked = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "the default" in line]
    assert marked == ["resnet9"]


def test_every_model_names_a_recipe_that_exists():
    for spec in models.specs():
        assert spec.recipe in recipes.MODEL_RECIPES, spec.name


def _recipe_literals(path: pathlib.Path) -> list:
    """Dict literals with "section.field" keys: how a recipe is written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if any(k.startswith(("optim.", "model.")) for k in keys):
                found.append(node.lineno)
    return found


def test_no_module_but_recipes_holds_a_recipe():
    holders = {str(p.relative_to(ENGINE)): _recipe_literals(p) for p in ENGINE.rglob("*.py")}
    assert {p: lines for p, lines in holders.items() if lines and p != "recipes.py"} == {}
    assert holders["recipes.py"]  # the check does see recipes where they are
