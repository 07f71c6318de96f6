"""The ground floor and the command-line front ends import no TensorFlow: `--help`, `--list-models`
and a bad flag answer without the seconds of its start-up."""
import subprocess
import sys

import pytest

GROUND = ["engine", "engine.errors", "engine.files", "engine.contract", "engine.recipes", "engine.config",
          "engine.cli", "engine.models", "engine.data", "engine.train", "engine.train.resolve",
          "engine.export", "engine.runtime", "engine.evaluate", "engine.launch", "engine.probe"]


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return set(out.split())


def test_importing_the_ground_floor_and_the_front_ends_loads_no_tensorflow():
    loaded = _modules_after("\n".join(f"import {m}" for m in GROUND))
    assert set(GROUND) <= loaded  # they did import
    assert "tensorflow" not in loaded and "keras" not in loaded


@pytest.mark.parametrize("cli,argv", [("engine.train.cli", ["--help"]), ("engine.train.cli", ["--list-models"]),
                                      ("engine.train.cli", ["--epochs", "ten"]),
                                      ("engine.export.cli", ["--help"]), ("engine.evaluate", ["--help"]),
                                      ("engine.commands", ["--help"]), ("engine.commands", ["train", "--help"]),
                                      ("engine.train.cli", ["--model", "resnet9", "--print-config"])])
def test_cli_front_ends_answer_without_tensorflow(cli, argv):
    loaded = _modules_after(f"import contextlib, io\nfrom {cli} import main\n"
                            f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
                            f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass")
    assert "tensorflow" not in loaded and "keras" not in loaded


def test_building_a_model_imports_its_family_then():
    loaded = _modules_after("from engine import models\nmodels.build('tiny', 32, 10)")
    assert "engine.models.tiny" in loaded and "engine.models.airbench" not in loaded


def test_the_engine_command_answers_version_help_and_unknown_subcommands(capsys):
    from engine import __version__, commands
    assert commands.main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"engine {__version__}"
    assert commands.main(["--help"]) == 0 and "train" in capsys.readouterr().out
    assert commands.main(["fly"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: engine: unknown subcommand 'fly'") and len(err.splitlines()) == 1
