"""The official MNIST / Fashion-MNIST IDX files (`*-ubyte.gz`) inside a .tar or .tar.gz: read as from a
folder, with the same header checks and bounds, streamed from the archive (nothing extracted to disk)."""
from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest

from engine import data
from engine.data import mnist
from engine.errors import EngineError
from tests.conftest import assert_one_line_error, run_cli


def _arrays(n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": (np.arange(n_train) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": (np.arange(n_test) % 10).astype(np.uint8)}


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()


def _tar(path, files: dict, prefix="mnist/"):
    """A tar (gzipped if the name says .gz) of {file name: bytes} under `prefix`."""
    with tarfile.open(path, "w:gz" if str(path).endswith(".gz") else "w") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _official(arrays, gz=True):
    return {mnist.IDX_FILES[k] + (".gz" if gz else ""): gzip.compress(_idx(a)) if gz else _idx(a)
            for k, a in arrays.items()}


def load(path, cache=None):
    return data.load(str(path), cache, log=lambda *a: None)


@pytest.mark.parametrize("name,gz", [("mnist.tar.gz", True), ("fashion-mnist.tar", True), ("raw.tar", False)])
def test_idx_files_in_a_tar_load_as_from_a_folder(tmp_path, name, gz):
    arrays = _arrays()
    s = load(_tar(tmp_path / name, _official(arrays, gz)), tmp_path / "cache")
    assert s.image_shape == (28, 28, 1) and s.x_train.dtype == np.uint8
    np.testing.assert_array_equal(s.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(s.x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(s.y_train, arrays["y_train"])
    np.testing.assert_array_equal(s.y_test, arrays["y_test"])
    assert s.class_names == mnist.class_names_for(name)
    again = load(tmp_path / name, tmp_path / "cache")  # from the cache
    np.testing.assert_array_equal(again.x_train, s.x_train)


def test_idx_headers_in_a_tar_are_checked_before_anything_is_allocated(tmp_path):
    arrays = _arrays()
    files = _official(arrays)
    files["train-images-idx3-ubyte.gz"] = gzip.compress(bytes([0, 0, 8, 3]) + np.array([4_000_000, 4000, 4000],
                                                                                        ">u4").tobytes())
    with pytest.raises(EngineError, match=r"t\.tar\.gz:mnist/train-images-idx3-ubyte\.gz: IDX dimensions "
                                          r"\[4000000, 4000, 4000\] are out of bounds"):
        load(_tar(tmp_path / "t.tar.gz", files))
    files["train-images-idx3-ubyte.gz"] = gzip.compress(_idx(arrays["x_train"])[:-5])
    with pytest.raises(EngineError, match=r"declares \[40, 28, 28\] = 31,360 bytes but the file holds 31,355"):
        load(_tar(tmp_path / "t.tar.gz", files))
    files["train-images-idx3-ubyte.gz"] = gzip.compress(b"\x08\x03" + _idx(arrays["x_train"])[2:])
    with pytest.raises(EngineError, match=r"not an IDX file \(bad magic number\)"):
        load(_tar(tmp_path / "t.tar.gz", files))
    files["train-images-idx3-ubyte.gz"] = b"not gzip at all"
    with pytest.raises(EngineError, match=r"cannot read .*train-images-idx3-ubyte\.gz"):
        load(_tar(tmp_path / "t.tar.gz", files))
    del files["train-images-idx3-ubyte.gz"]
    with pytest.raises(EngineError, match=r"t\.tar\.gz: no train-images-idx3-ubyte\.gz"):
        load(_tar(tmp_path / "t.tar.gz", files))


def test_a_tar_with_idx_files_twice_or_beside_images_is_one_line(tmp_path):
    files = _official(_arrays())
    with tarfile.open(tmp_path / "two.tar", "w") as tar:
        for prefix in ("a/", "b/"):
            for name, payload in files.items():
                info = tarfile.TarInfo(prefix + name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(EngineError, match=r"holds two train-images-idx3-ubyte files"):
        load(tmp_path / "two.tar")
    from tests.conftest import png_bytes
    _tar(tmp_path / "mixed.tar", {**files, "train/a/0.png": png_bytes(np.zeros((28, 28), np.uint8)),
                                  "test/a/0.png": png_bytes(np.zeros((28, 28), np.uint8))}, prefix="")
    with pytest.raises(EngineError, match=r"holds both MNIST IDX files and image folders; use one"):
        load(tmp_path / "mixed.tar")


def test_train_refuses_a_bad_idx_header_in_a_tar_in_one_line(tmp_path):
    """Through the CLI: a bad header in the archive is one line, exit 2."""
    files = _official(_arrays())
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(bytes([0, 0, 0x0d, 1]) + np.array([20], ">u4").tobytes())
    p = run_cli("engine", "train", "--model", "tiny", "--data", _tar(tmp_path / "bad.tar.gz", files),
                "--epochs", "1", "--out", tmp_path / "r", env={"ENGINE_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(p, "t10k-labels-idx1-ubyte.gz: IDX data type 0x0d; expected 0x08 (unsigned bytes)")
    assert p.returncode == 2
