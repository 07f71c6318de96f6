"""Mistakes answered at once: a command that cannot succeed says why in one line, exit 2, before the
seconds of TensorFlow's start-up (the interpreter's import-time profile shows it was never imported)."""
import pytest

from tests.journey.conftest import copy_run, snapshot, stderr_lines


def _imported(stderr: str) -> set:
    """Top-level packages in the `-X importtime` profile (PYTHONPROFILEIMPORTTIME=1) on stderr."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("case", ["existing run", "missing data", "out is a file"])
def test_refused_in_one_line_without_tensorflow(engine, tmp_path, base_run, case):
    copy_run(base_run, tmp_path / "runs" / "a")
    (tmp_path / "somefile").write_text("my notes\n")
    before = snapshot(tmp_path)
    args, named = {"existing run": (["--out", "runs/a"], "runs/a"),
                   "missing data": (["--data", "missing.tar.gz", "--out", "runs/x"], "missing.tar.gz"),
                   "out is a file": (["--out", "somefile"], "somefile")}[case]
    # ENGINE_TF_VERBOSE=1: the engine imports TensorFlow with stderr sent to /dev/null, which would
    # hide that import's lines of the profile too; this shows them
    p = engine.run("train", *args, cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1", "ENGINE_TF_VERBOSE": "1"})
    assert p.returncode == 2, p.stdout + p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    imported = _imported(p.stderr)
    assert "engine" in imported  # the profile is there
    assert "tensorflow" not in imported and "keras" not in imported, f"TensorFlow was imported first: {last}"
    assert last.startswith("error:") and named in last, last
    assert stderr_lines(p) == [last]
    assert snapshot(tmp_path) == before
