"""engine.files: a target is replaced only by a finished file, and a failed write leaves nothing."""
import json
import os

import pytest

from engine import files


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
    (tmp_path / "model" / "old").write_text("old export")
    files.write_bytes(str(tmp_path / "model"), b"new")
    assert (tmp_path / "model").read_bytes() == b"new"
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
