"""Who can read what a run writes: the user's umask decides, as for any other program. Under umask
022 (the usual one) files are 0644 and folders 0755, so that another account (a serving user, the
host of a container) can read the exports; under 077 they are 0600 and 0700."""
from tests.journey.conftest import TINY, copy_run, mode

RUN_FILES = ["config.json", "classes.json", "history.json", "metrics.json", "curves.png"]


def _json_files(folder) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.json")}


def _modes(run, report) -> dict:
    paths = {name: run / name for name in RUN_FILES}
    paths.update({"model.onnx": run / "model.onnx", "model.savedmodel/saved_model.pb":
                  run / "model.savedmodel" / "saved_model.pb", "evaluate report": report})
    files = {name: mode(p) for name, p in paths.items()}
    folders = {name: mode(run / name) for name in (".", "checkpoints", "model.savedmodel")}
    return files, folders


def _export_and_evaluate(engine, cwd, run: str, umask: int, onnx: bool):
    exports = (["onnx"] if onnx else []) + ["savedmodel"]
    for fmt in exports:
        p = engine.run("export", fmt, run, cwd=cwd, umask=umask)
        assert p.returncode == 0, p.stderr
    before = _json_files(cwd / run)
    p = engine.run("evaluate", f"{run}/model.onnx", "--limit-test", "256", cwd=cwd, umask=umask)
    assert p.returncode == 0, p.stderr
    (report,) = _json_files(cwd / run) - before
    return cwd / run / report


def test_umask_022_gives_0644_files_and_0755_folders(engine, tmp_path, base_run):
    # base_run was trained and exported to ONNX under umask 022; the copy keeps its modes
    run = copy_run(base_run, tmp_path / "runs" / "a")
    report = _export_and_evaluate(engine, tmp_path, "runs/a", 0o022, onnx=False)
    files, folders = _modes(run, report)
    assert files == {name: "0o644" for name in files}
    assert folders == {name: "0o755" for name in folders}


def test_umask_077_gives_0600_files_and_0700_folders(engine, tmp_path):
    umask, file_mode, dir_mode = 0o077, "0o600", "0o700"
    p = engine.run("train", *TINY, "--epochs", "1", "--out", "runs/p", cwd=tmp_path, umask=umask)
    assert p.returncode == 0, p.stderr
    report = _export_and_evaluate(engine, tmp_path, "runs/p", umask, onnx=True)
    files, folders = _modes(tmp_path / "runs" / "p", report)
    assert files == {name: file_mode for name in files}
    assert folders == {name: dir_mode for name in folders}
