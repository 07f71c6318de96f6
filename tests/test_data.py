"""Data sources, safe reading, the cache, subsets."""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from engine import data
from engine.data import sources
from engine.contract import CIFAR10_CLASSES
from engine.errors import EngineError
from tests.conftest import CLASSES, make_images, make_tar, png_bytes


def load(path, cache=None):
    return data.load(str(path), cache, log=lambda *a: None)


def test_folder_tree_classes_sorted_and_pixels_exact(tree):
    root, truth = tree
    s = load(root)
    assert s.class_names == sorted(CLASSES)
    assert s.x_train.shape == (12, 32, 32, 3) and s.x_train.dtype == np.uint8
    assert s.x_test.shape == (6, 32, 32, 3)
    for split, x, y in (("train", s.x_train, s.y_train), ("test", s.x_test, s.y_test)):
        for ci, c in enumerate(s.class_names):
            np.testing.assert_array_equal(x[y == ci], truth[(split, c)])


def test_tar_gz_matches_folder(tree, tmp_path):
    root, _ = tree
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="mydata")  # under one top folder, as archives usually are
    a, b = load(root), load(archive)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.class_names == b.class_names


def _cifar_batch(x_nhwc, labels, protocol=2):
    flat = x_nhwc.transpose(0, 3, 1, 2).reshape(len(x_nhwc), -1)  # the official CHW row layout
    return pickle.dumps({b"batch_label": b"b", b"data": flat, b"labels": list(labels),
                         b"filenames": [b"f"] * len(labels)}, protocol=protocol)


def test_official_python_batches(tmp_path):
    xs = [make_images(6, seed=i) for i in range(3)]
    names = [f"c{i}".encode() for i in range(10)]
    members = [("cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": names}, protocol=2)),
               ("cifar-10-batches-py/data_batch_2", _cifar_batch(xs[1], [i % 10 for i in range(6, 12)])),
               ("cifar-10-batches-py/data_batch_1", _cifar_batch(xs[0], range(6))),
               ("cifar-10-batches-py/test_batch", _cifar_batch(xs[2], [9, 8, 7, 6, 5, 4], protocol=4))]
    s = load(make_tar(tmp_path / "cifar-10-python.tar.gz", members))
    np.testing.assert_array_equal(s.x_train, np.concatenate([xs[0], xs[1]]))  # batch order 1, 2
    np.testing.assert_array_equal(s.y_train, np.arange(12) % 10)
    np.testing.assert_array_equal(s.x_test, xs[2])
    assert s.class_names == [n.decode() for n in names]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    members = [("cifar-10-batches-py/data_batch_1", pickle.dumps({b"data": _Evil(marker)})),
               ("cifar-10-batches-py/test_batch", _cifar_batch(make_images(2, 0), [0, 1]))]
    with pytest.raises(EngineError, match=r"refusing pickle .*data_batch_1.*(posix|os)\.system"):
        load(make_tar(tmp_path / "evil.tar.gz", members))
    assert not marker.exists()


def _symlink(info):
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"


def _hardlink(info):
    info.type = tarfile.LNKTYPE
    info.linkname = "train/a/0.png"


@pytest.mark.parametrize("name,payload,match", [
    ("../outside.png", b"x", "leaves the archive"),
    ("train/../../x.png", b"x", "leaves the archive"),
    ("/abs/train/a/0.png", b"x", "leaves the archive"),
    ("train/a/link.png", _symlink, "link member"),
    ("train/a/hard.png", _hardlink, "link member"),
])
def test_hostile_tar_members_refused(tmp_path, name, payload, match):
    good = png_bytes(make_images(1, 0)[0])
    members = [("train/a/0.png", good), ("test/a/0.png", good), (name, payload)]
    with pytest.raises(EngineError, match=match):
        load(make_tar(tmp_path / "bad.tar.gz", members))
    assert sorted(os.listdir(tmp_path)) == ["bad.tar.gz"]  # nothing was extracted


def test_bad_sources(tmp_path, tree):
    with pytest.raises(EngineError, match="data not found"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no training images"):
        load(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(EngineError, match="unsupported data file"):
        load(tmp_path / "notes.txt")
    (tmp_path / "trunc.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(EngineError, match="not a valid or complete tar"):
        load(tmp_path / "trunc.tar.gz")


def test_missing_class_in_test_split(tree):
    root, _ = tree
    for f in (root / "test" / "bee").iterdir():
        f.unlink()
    (root / "test" / "bee").rmdir()
    with pytest.raises(EngineError, match="no images of class 'bee'"):
        load(root)


def test_wrong_size_image_named(tree):
    from PIL import Image
    root, _ = tree
    Image.new("RGB", (33, 32)).save(root / "train" / "ant" / "big.png")
    with pytest.raises(EngineError, match=r"big\.png is 32x33x3 uint8, expected 32x32x3"):
        load(root)


def test_grayscale_image_named(tree):
    from PIL import Image
    root, _ = tree
    Image.new("L", (32, 32)).save(root / "test" / "cat" / "gray.png")
    with pytest.raises(EngineError, match=r"gray\.png is 32x32 uint8"):
        load(root)


def test_truncated_jpeg_named(tree):
    from PIL import Image
    root, _ = tree
    buf = io.BytesIO()
    Image.fromarray(make_images(1, 3)[0]).save(buf, format="JPEG")
    (root / "train" / "cat" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(EngineError, match=r"cannot decode image .*cut\.jpg"):
        load(root)


def test_cache_is_used_and_invalidated(tree, tmp_path, monkeypatch):
    root, _ = tree
    cache = tmp_path / "cache"
    first = load(root, cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def fail(path):
        raise AssertionError("decoded again despite the cache")
    monkeypatch.setattr(sources, "_read_tree", fail)
    again = load(root, cache)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert again.class_names == first.class_names

    monkeypatch.undo()
    f = root / "train" / "ant" / "000.png"
    f.write_bytes(png_bytes(make_images(1, 99)[0]))  # changed content, size and mtime
    os.utime(f, ns=(1, 1))
    changed = load(root, cache)
    assert not np.array_equal(changed.x_train, first.x_train)


def test_balanced_subset_exact_and_stable():
    y = np.repeat(np.arange(10), 50).astype(np.int32)
    x = np.arange(500)
    xs, ys, xr, yr = data.balanced_subset(x, y, 123, seed=0)
    assert len(xs) == 123 and set(np.bincount(ys)) == {12, 13}
    assert len(np.intersect1d(xs, xr)) == 0 and len(xs) + len(xr) == 500
    xs2, *_ = data.balanced_subset(x, y, 123, seed=0)
    np.testing.assert_array_equal(xs, xs2)
    with pytest.raises(EngineError):
        data.balanced_subset(x, y, 5)


def test_keras_download_failure_is_one_clear_line(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/: None -- [Errno -3]")
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(EngineError, match=r"could not download CIFAR-10.*--data PATH"):
        data.load("cifar10")


def test_shared_cifar10(shared_splits):
    s = shared_splits
    assert s.x_train.shape == (50000, 32, 32, 3) and s.x_test.shape == (10000, 32, 32, 3)
    assert s.class_names == list(CIFAR10_CLASSES)
    assert list(np.bincount(s.y_train)) == [5000] * 10 and list(np.bincount(s.y_test)) == [1000] * 10
    assert abs(s.x_train.mean() - 120.7) < 0.1  # the data README's figure
