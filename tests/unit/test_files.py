"""engine.files: a target is replaced only by a finished file, and a failed write leaves nothing."""
import json
import os

import pytest

from engine import files, layout
from engine.errors import EngineError


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("precious")
    with pytest.raises(RuntimeError):
        with files.atomic_open(str(target), "w") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "precious"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_writes_replace_files_and_folders(tmp_path):
    files.write_json(str(tmp_path / "a.json"), {"x": 1})
    files.write_json(str(tmp_path / "a.json"), {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old").write_text("precious")
    with pytest.raises(EngineError, match="is a folder; it is not replaced by a file"):
        files.write_bytes(str(tmp_path / "model"), b"new")  # a folder is never deleted to make room for a file
    assert (tmp_path / "model" / "old").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "model"]


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model.savedmodel"
    target.mkdir()
    (target / "saved_model.pb").write_text("precious")
    with pytest.raises(RuntimeError):
        with files.atomic_dir(str(target)) as tmp:
            (tmp_path / tmp / "half").write_text("half")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == ["model.savedmodel"] and (target / "saved_model.pb").read_text() == "precious"
    with files.atomic_dir(str(target)) as tmp:
        open(os.path.join(tmp, "new.pb"), "w").write("new")
    assert os.listdir(target) == ["new.pb"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_take_the_umask_modes(tmp_path, mask):
    old = os.umask(mask)
    try:
        files.write_json(str(tmp_path / "metrics.json"), {"x": 1})
        with files.atomic_dir(str(tmp_path / "model.savedmodel")) as tmp:
            os.makedirs(os.path.join(tmp, "variables"))
            with open(os.path.join(tmp, "variables", "v.data"), "w") as f:
                f.write("w")
            os.chmod(os.path.join(tmp, "variables", "v.data"), 0o600)  # as tempfile-based savers leave them
    finally:
        os.umask(old)
    mode = lambda p: os.stat(p).st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "metrics.json") == 0o666 & ~mask
    assert mode(tmp_path / "model.savedmodel") == 0o777 & ~mask
    assert mode(tmp_path / "model.savedmodel" / "variables") == 0o777 & ~mask
    assert mode(tmp_path / "model.savedmodel" / "variables" / "v.data") == 0o666 & ~mask


def test_a_replaced_folder_is_moved_aside_until_the_new_one_is_in(tmp_path):
    target = tmp_path / "model.savedmodel"
    target.mkdir()
    (target / "saved_model.pb").write_text("old")
    with files.atomic_dir(str(target)) as tmp:
        open(os.path.join(tmp, "saved_model.pb"), "w").write("new")
    assert (target / "saved_model.pb").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["model.savedmodel"]  # nothing left aside


def _run(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize("target,kind,message", [
    ("runs", dict(), "is a folder holding runs"),
    ("runs/a", dict(), "is a run folder"),
    ("runs/a/config.json", dict(), "is part of the run in runs/a"),
    ("runs/a/history.json", dict(), "is part of the run in runs/a"),
    ("runs/a/checkpoints/checkpoint", dict(), "is part of the run in runs/a"),
    ("runs/a/checkpoints/best/ckpt-3.index", dict(), "is part of the run in runs/a"),
    ("runs/a/tb/new.json", dict(), "is part of the run in runs/a"),  # not even a new file there
    ("notes", dict(), "is a folder; give a file path"),
    ("notes", dict(folder=True, replaceable=lambda p: False), "not an export of this kind"),
    ("notes.txt", dict(folder=True), "is a file; give a folder path"),
    ("missing/r.json", dict(), "the folder of --out does not exist"),
])
def test_overwrite_never_replaces_what_is_not_the_outputs_own_kind(tmp_path, monkeypatch, target, kind, message):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path / "runs" / "a")
    (tmp_path / "runs" / "a" / "history.json").write_text("[]")
    (tmp_path / "runs" / "a" / "checkpoints" / "best").mkdir(parents=True)
    for name in ("checkpoint", "best/ckpt-3.index"):
        (tmp_path / "runs" / "a" / "checkpoints" / name).write_text("precious")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EngineError, match=message):
        files.claim_output(target, True, protected=layout.protected, **kind)


def test_a_new_path_is_claimed_and_an_existing_file_only_with_overwrite(tmp_path):
    files.claim_output(str(tmp_path / "r.json"), False)
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(EngineError, match="already exists; pass --overwrite"):
        files.claim_output(str(tmp_path / "r.json"), False)
    files.claim_output(str(tmp_path / "r.json"), True)


def test_free_name_never_returns_a_taken_name(tmp_path):
    p = str(tmp_path / "evaluate-model-onnx.json")
    assert files.free_name(p) == p
    open(p, "w").close()
    assert files.free_name(p).endswith("evaluate-model-onnx-2.json")
    open(files.free_name(p), "w").close()
    assert files.free_name(p).endswith("evaluate-model-onnx-3.json")


def test_a_locked_folder_refuses_a_second_owner_until_released(tmp_path):
    first = files.Lock(str(tmp_path), "a run writes there")
    with pytest.raises(EngineError, match="in use by another engine process"):
        files.Lock(str(tmp_path), "a run writes there")
    first.release()
    files.Lock(str(tmp_path), "a run writes there").release()


def test_readers_share_a_folder_but_never_with_a_writer_and_the_holder_is_named(tmp_path):
    """Exports of one run run side by side; a run being trained refuses them, and an export under way
    refuses a training process; /proc/locks names the process that holds the lock (Linux)."""
    readers = [files.Lock(str(tmp_path), "exporting it", shared=True) for _ in range(2)]
    with pytest.raises(files.Busy, match="in use by another engine process"):
        files.Lock(str(tmp_path), "a run writes there")
    for r in readers:
        r.release()
    writer = files.Lock(str(tmp_path), "a run writes there")
    with pytest.raises(files.Busy):
        files.Lock(str(tmp_path), "exporting it", shared=True)
    if os.path.exists("/proc/locks"):
        assert files.lock_holders(str(tmp_path)) == [os.getpid()]
    writer.release()
    assert files.lock_holders(str(tmp_path)) == []
    files.Lock(str(tmp_path), "exporting it", shared=True).release()


def test_overwrite_replaces_a_runs_own_files_and_its_old_exports_only(tmp_path):
    run = _run(tmp_path / "a")
    for name in ("metrics.json", "model.onnx", "model-int8.xml", "model-int8.bin", "evaluate-model-onnx.json",
                 "notes.txt", "my.onnx"):
        (run / name).write_text("x")
    (run / "checkpoints").mkdir()
    (run / "model.savedmodel").mkdir()
    layout.remove_run(str(run))
    assert sorted(os.listdir(run)) == ["my.onnx", "notes.txt"]


@pytest.mark.parametrize("out,message", [("runs", "a folder holding runs"), (".", "holds no engine run"), ("notes", "holds no engine run"),
                                         ("runs/a/checkpoints", "part of the run in runs/a")])
def test_a_run_is_made_only_where_a_run_or_nothing_is_even_with_overwrite(tmp_path, monkeypatch, out, message):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path / "runs" / "a")
    (tmp_path / "runs" / "a" / "checkpoints").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n.txt").write_text("mine")
    with pytest.raises(EngineError, match=message):
        layout.check_out(out, False, True)
    layout.check_out("runs/a", False, True)  # a run: --overwrite replaces it
