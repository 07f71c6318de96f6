"""The trainer runs epochs; starting a run is engine.train.startup's (and the trainer never
rewrites the config it was given)."""
import ast

from tests.conftest import ROOT

TRAINER = ROOT / "engine" / "train" / "trainer.py"


def _trainer_class() -> ast.ClassDef:
    [cls] = [n for n in ast.parse(TRAINER.read_text()).body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    return cls


def test_the_trainer_class_is_under_200_lines():
    cls = _trainer_class()
    assert cls.end_lineno - cls.lineno + 1 < 200


def test_the_trainer_sets_its_config_once():
    """`self.config` is the session's final config, set where fit begins and never replaced."""
    targets = [t for n in ast.walk(_trainer_class()) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
               for t in (t.elts if isinstance(t, ast.Tuple) else [t])
               if isinstance(t, ast.Attribute) and t.attr in ("config", "cfg")]
    assert len(targets) == 1, [ast.unparse(t) for t in targets]
