"""`engine train --config FILE` as a user runs it: from their own folder, with relative paths. None of
these trains: each is refused, or prints the resolved config, before TensorFlow is imported."""
import json
import os
import subprocess
import sys

from engine import config as C
from tests.conftest import ROOT, assert_one_line_error


def train(cwd, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "engine", "train", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_config_file_runs_no_code(tmp_path):
    (tmp_path / "evilmod.py").write_text("open('imported', 'w').close()\ndef fn():\n    import os; os.abort()\n")
    (tmp_path / "c.yaml").write_text("model:\n  model: evilmod:fn\n")
    p = train(tmp_path, "--config", "c.yaml", "--data", "digits", "--epochs", 1, "--out", "o")
    assert_one_line_error(p, "--config c.yaml: model.model 'evilmod:fn' names Python code",
                          "give --model evilmod:fn on the command line")
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "evilmod.py"]  # not imported, no run folder


def test_a_config_file_never_says_where_the_run_writes(tmp_path):
    os.makedirs(tmp_path / "runs" / "a")
    C.Config().replace("model", model="tiny").replace("run", out="runs/a").save(str(tmp_path / "runs/a/config.json"))
    p = train(tmp_path, "--config", "runs/a/config.json", "--overwrite", "--print-config")
    assert p.returncode == 0, p.stderr
    run = json.loads(p.stdout)["run"]
    assert run["out"] == "" and run["overwrite"] is True  # not the file's: a new folder when the run starts
    assert json.loads(train(tmp_path, "--config", "runs/a/config.json", "--out", "runs/b", "--print-config")
                      .stdout)["run"]["out"] == "runs/b"


def test_a_flat_config_file_and_its_checks(tmp_path):
    (tmp_path / "flat.yaml").write_text("model: tiny\nlr: 0.2\nepochs: 3\nbatch-size: 256\n")
    p = train(tmp_path, "--config", "flat.yaml", "--print-config")
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout)
    assert (cfg["model"]["model"], cfg["optim"]["lr"], cfg["optim"]["epochs"], cfg["optim"]["batch_size"]) == \
        ("tiny", 0.2, 3.0, 256)
    (tmp_path / "warm.yaml").write_text("model: tiny\nwarmup: 7\n")
    assert_one_line_error(train(tmp_path, "--config", "warm.yaml", "--data", "digits", "--out", "o"),
                          "--config warm.yaml: optim.warmup is 7, must be in [0, 1] (a fraction of the training "
                          "steps, not a number of epochs)")
    (tmp_path / "seed.yaml").write_text("run:\n  seed: -1\n")
    assert_one_line_error(train(tmp_path, "--config", "seed.yaml", "--data", "digits", "--out", "o"),
                          "run.seed is -1, must be in [0, ")
    os.symlink("/dev/zero", tmp_path / "zero.yaml")
    assert_one_line_error(train(tmp_path, "--config", "zero.yaml", "--out", "o"),
                          "--config zero.yaml is not a regular file")
    assert not (tmp_path / "o").exists()


def test_config_with_resume_is_refused(tmp_path):
    os.makedirs(tmp_path / "r")
    C.Config().replace("model", model="tiny").save(str(tmp_path / "r" / "config.json"))
    (tmp_path / "change.yaml").write_text("optimizer: adam\n")
    assert_one_line_error(train(tmp_path, "--config", "change.yaml", "--resume", "--out", "r"),
                          "--config starts a new run; --resume continues the run in --out")
