"""Data sets of any image shape: MNIST and Fashion-MNIST (Keras's mnist.npz, the official IDX files),
CIFAR-100 (the official python pickles, fine or coarse labels), the Keras downloads of each (offline: a
one-line hint naming the file to fetch), folder trees of any fixed size, greyscale or colour, resized
with --image-size, and the memory limit. Every file here is written in its official format."""
import gzip
import os
import pickle

import numpy as np
import pytest

from engine import data
from engine.data import mnist, sources, splits as splits_mod
from engine.data.cache import cache_path
from engine.errors import EngineError
from tests.conftest import assert_one_line_error, make_tar, png_bytes, run_cli


def load(path, cache=None, **kw):
    return data.load(str(path), cache, log=lambda *a: None, **kw)


def _mnist_arrays(n_train=300, n_test=100, side=28, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, side, side), dtype=np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
            rng.integers(0, 256, (n_test, side, side), dtype=np.uint8), (np.arange(n_test) % 10).astype(np.uint8))


# --- MNIST: mnist.npz and the IDX files -------------------------------------------------------------------

def test_mnist_npz_loads_as_28x28x1_with_digit_names(tmp_path):
    xtr, ytr, xte, yte = _mnist_arrays()
    np.savez_compressed(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    s = load(tmp_path / "mnist.npz")
    assert s.image_shape == (28, 28, 1) and s.x_train.dtype == np.uint8 and s.y_train.dtype == np.int32
    np.testing.assert_array_equal(s.x_train[..., 0], xtr)
    np.testing.assert_array_equal(s.y_test, yte)
    assert s.class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize("change, match", [
    (dict(x_train=np.zeros((5, 28, 28), np.float32)), r"x_train is float32, expected uint8"),
    (dict(y_train=np.zeros(4, np.uint8)), r"300 train images but 4 labels"),
    (dict(x_test=np.zeros((100, 27, 27), np.uint8)), r"train images are \[28, 28\] but test images \[27, 27\]"),
    (dict(y_test=np.full(100, -1, np.int8)), r"a test label is -1, outside the 100,000 classes"),
    (dict(y_train=np.full(300, 10 ** 9, np.int64)), r"a train label is 1000000000, outside the 100,000 classes"),
    (dict(x_train=np.zeros((300, 28, 28, 2), np.uint8)), r"x_train is \[300, 28, 28, 2\], expected"),
])
def test_a_wrong_mnist_npz_is_one_line(tmp_path, change, match):
    arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), _mnist_arrays()))
    arrays.update(change)
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(EngineError, match=match):
        load(tmp_path / "mnist.npz")


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()


def _idx_folder(folder, arrays, gz=True):
    folder.mkdir(parents=True)
    for stem, arr in zip(mnist.IDX_FILES.values(), arrays):
        raw = _idx(arr)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_and_a_fashion_folder_gets_fashion_names(tmp_path, gz):
    arrays = _mnist_arrays(seed=1)
    s = load(_idx_folder(tmp_path / "mnist", arrays, gz))
    assert s.image_shape == (28, 28, 1) and s.class_names[0] == "0"
    np.testing.assert_array_equal(s.x_test[..., 0], arrays[2])
    np.testing.assert_array_equal(s.y_train, arrays[1])
    f = load(_idx_folder(tmp_path / "fashion-mnist", arrays, gz))
    assert f.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                             "Bag", "Ankle boot"]


def test_a_folder_with_a_gzipped_and_a_raw_form_of_one_idx_file_is_one_line(tmp_path):
    folder = _idx_folder(tmp_path / "mnist", _mnist_arrays(20, 10), True)
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:  # the same file unpacked beside it
        (folder / "t10k-images-idx3-ubyte").write_bytes(f.read())
    with pytest.raises(EngineError, match="both t10k-images-idx3-ubyte.gz and t10k-images-idx3-ubyte: keep one"):
        load(folder)


def test_idx_headers_are_checked_before_anything_is_allocated(tmp_path):
    xtr, ytr, xte, yte = _mnist_arrays(20, 10)
    folder = _idx_folder(tmp_path / "m", (xtr, ytr, xte, yte))
    images = folder / "train-images-idx3-ubyte.gz"
    # 4,000,000 x 4000 x 4000: refused from the header, nothing of that size is read or allocated
    images.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + np.array([4_000_000, 4000, 4000], ">u4").tobytes()))
    with pytest.raises(EngineError, match=r"IDX dimensions \[4000000, 4000, 4000\] are out of bounds"):
        load(folder)
    images.write_bytes(gzip.compress(_idx(xtr)[:-5]))
    with pytest.raises(EngineError, match=r"declares \[20, 28, 28\] = 15,680 bytes but the file holds 15,675"):
        load(folder)
    images.write_bytes(gzip.compress(b"\x08\x03" + _idx(xtr)[2:]))
    with pytest.raises(EngineError, match=r"not an IDX file \(bad magic number\)"):
        load(folder)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(EngineError, match=r"cannot read .*train-images-idx3-ubyte\.gz"):
        load(folder)
    images.unlink()
    with pytest.raises(EngineError, match=r"no train-images-idx3-ubyte\.gz"):
        load(folder)


# --- CIFAR-100: the official python pickles ---------------------------------------------------------------

def _cifar100_tar(tmp_path, n_train=200, n_test=100, protocol=2, meta=None):
    rng = np.random.default_rng(3)
    members = []
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine, coarse = (np.arange(n) % 100).tolist(), (np.arange(n) % 100 // 5).tolist()
        arrays[split] = (x, fine, coarse)
        members.append((f"cifar-100-python/{split}", pickle.dumps(
            {b"filenames": [b"f.png"] * n, b"batch_label": b"x", b"fine_labels": fine, b"coarse_labels": coarse,
             b"data": x.transpose(0, 3, 1, 2).reshape(n, -1)}, protocol=protocol)))
    meta = meta or {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
                    b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]}
    members.append(("cifar-100-python/meta", pickle.dumps(meta, protocol=protocol)))
    return make_tar(tmp_path / "cifar-100-python.tar.gz", members), arrays


def test_cifar100_archive_fine_labels_by_default_coarse_on_request(tmp_path):
    path, arrays = _cifar100_tar(tmp_path)
    fine = load(path)
    assert fine.image_shape == (32, 32, 3) and fine.num_classes == 100 and fine.class_names[7] == "fine07"
    np.testing.assert_array_equal(fine.x_train, arrays["train"][0])
    np.testing.assert_array_equal(fine.y_test, arrays["test"][1])
    coarse = load(path, label_mode="coarse")
    assert coarse.num_classes == 20 and coarse.class_names[-1] == "coarse19"
    np.testing.assert_array_equal(coarse.y_train, arrays["train"][2])


def test_an_extracted_cifar100_folder_reads_as_its_archive(tmp_path):
    import tarfile
    path, arrays = _cifar100_tar(tmp_path, 100, 100)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    for folder in (tmp_path / "x", tmp_path / "x" / "cifar-100-python"):
        s = load(folder, label_mode="coarse")
        np.testing.assert_array_equal(s.x_test, arrays["test"][0])
        np.testing.assert_array_equal(s.y_test, arrays["test"][2])


def test_cifar100_fine_and_coarse_are_cached_apart(tmp_path):
    path, _ = _cifar100_tar(tmp_path, 100, 100, protocol=4)
    cache = tmp_path / "cache"
    assert load(path, cache).num_classes == 100
    assert load(path, cache, label_mode="coarse").num_classes == 20
    assert load(path, cache).num_classes == 100
    assert len(list(cache.glob("*.npz"))) == 2


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar100_hostile_or_incomplete_pickles_are_one_line(tmp_path):
    path, _ = _cifar100_tar(tmp_path, meta={b"fine_label_names": _Evil()})
    with pytest.raises(EngineError, match=r"refusing pickle .*cifar-100-python/meta: asks for posix\.system"):
        load(path)
    bare = make_tar(tmp_path / "c100.tar", [("cifar-100-python/train", pickle.dumps({b"data": 1}))])
    with pytest.raises(EngineError, match=r"CIFAR-100 needs train, test and meta; test is missing"):
        load(bare)


# --- the Keras downloads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, hint", [
    ("mnist", "fetch mnist.npz from https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
    ("fashion_mnist", "fetch train-images-idx3-ubyte.gz"),
    ("cifar100", "fetch cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"),
    ("cifar10", "fetch cifar-10-python.tar.gz"),
])
def test_a_failed_keras_download_names_the_official_file(monkeypatch, name, hint):
    import keras

    def offline(**kw):
        raise OSError("URL fetch failure: no network")
    monkeypatch.setattr(getattr(keras.datasets, name), "load_data", offline)
    with pytest.raises(EngineError, match="could not download") as e:
        data.load(name)
    assert hint in str(e.value) and "\n" not in str(e.value)


def test_keras_mnist_and_cifar100_arrays_get_a_channel_and_names(monkeypatch):
    import keras
    xtr, ytr, xte, yte = _mnist_arrays(30, 10)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", lambda: ((xtr, ytr), (xte, yte)))
    s = data.load("fashion_mnist")
    assert s.image_shape == (28, 28, 1) and s.class_names[9] == "Ankle boot"
    seen = {}

    def c100(label_mode="fine"):
        seen["mode"] = label_mode
        x = np.zeros((20, 32, 32, 3), np.uint8)
        return (x, np.arange(20).reshape(-1, 1) % 20), (x, np.arange(20).reshape(-1, 1) % 20)
    monkeypatch.setattr(keras.datasets.cifar100, "load_data", c100)
    s = data.load("cifar100", label_mode="coarse")
    assert seen["mode"] == "coarse" and s.class_names[0] == "aquatic_mammals" and s.num_classes == 20
    assert data.load("cifar100").class_names[:2] == ["apple", "aquarium_fish"]


# --- folder trees of any size and channel count -------------------------------------------------------

def _tree(root, shape, n=(3, 2), classes=("a", "b"), seed=0, fmt="png"):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, k in zip(("train", "test"), n):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                a = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a).save(d / f"{i}.{fmt}")
    return root


def test_a_64x48_colour_tree_keeps_its_size_and_a_greyscale_tree_one_channel(tmp_path):
    s = load(_tree(tmp_path / "rgb", (48, 64, 3)))
    assert s.image_shape == (48, 64, 3) and s.x_train.shape == (6, 48, 64, 3)
    g = load(_tree(tmp_path / "grey", (28, 28, 1)))
    assert g.image_shape == (28, 28, 1)
    from PIL import Image
    np.testing.assert_array_equal(g.x_train[0, ..., 0], np.asarray(Image.open(tmp_path / "grey/train/a/0.png")))


def test_a_16_bit_greyscale_tree_is_scaled_to_8_bits_with_one_channel(tmp_path):
    from PIL import Image
    d = tmp_path / "t"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (d / split / c).mkdir(parents=True)
            Image.fromarray(np.full((10, 12), 65535, np.uint16)).save(d / split / c / "0.png")
    s = load(d)
    assert s.image_shape == (10, 12, 1) and s.x_train.max() == 255 and s.x_train.min() == 255


def test_image_size_resizes_a_tree_of_mixed_sizes_and_is_cached_apart(tmp_path):
    from PIL import Image
    root = _tree(tmp_path / "t", (40, 40, 3))
    Image.new("RGB", (70, 50), (200, 10, 10)).save(root / "train" / "a" / "odd.png")
    said = []
    s = data.load(str(root), str(tmp_path / "c"), log=said.append, image_size="24x32")
    assert s.image_shape == (24, 32, 3)
    odd = int(np.flatnonzero(s.y_train == 0)[-1])
    np.testing.assert_array_equal(s.x_train[odd], np.full((24, 32, 3), (200, 10, 10), np.uint8))
    assert any("resized every image" in m and "24x32 (bilinear filter)" in m for m in said)
    with pytest.raises(EngineError, match=r"odd\.png is 50x70 but the first image, test/a/0\.png, is 40x40"):
        load(root, tmp_path / "c")  # the resized cache is not the one read without --image-size
    assert cache_path(str(root), "c", "x") != cache_path(str(root), "c", "")


@pytest.mark.parametrize("text", ["64", "0x5", "64x64x3", "5000x10", "axb"])
def test_a_bad_image_size_is_one_line(tmp_path, text):
    with pytest.raises(EngineError, match=r"--image-size .*expected HxW"):
        load(_tree(tmp_path / "t", (8, 8, 3)), image_size=text)


def test_an_empty_class_folder_is_one_line(tmp_path):
    root = _tree(tmp_path / "t", (8, 8, 3))
    (root / "train" / "zebra").mkdir()
    with pytest.raises(EngineError, match=r"class folder train/zebra of .* holds no images"):
        load(root)


def test_an_empty_class_folder_in_an_archive_is_one_line(tmp_path):
    import tarfile
    good = png_bytes(np.zeros((8, 8, 3), np.uint8))

    def folder(info):
        info.type = tarfile.DIRTYPE
    members = [(f"{s}/{c}/0.png", good) for s in ("train", "test") for c in ("a", "b")] + [("test/c", folder)]
    with pytest.raises(EngineError, match=r"class folder test/c of .* holds no images"):
        load(make_tar(tmp_path / "t.tar.gz", members))


# --- memory -----------------------------------------------------------------------------------------------

def test_a_tree_over_the_memory_limit_is_refused_before_decoding_with_the_size_it_needs(tmp_path, monkeypatch):
    root = _tree(tmp_path / "t", (64, 64, 3), n=(40, 10))   # 100 images x 12,288 bytes = 1.2 MiB
    monkeypatch.setattr(splits_mod, "available_memory", lambda: 2 << 20)  # a limit of 1 MiB
    decoded = []
    monkeypatch.setattr(sources, "_pixels_of", lambda items: decoded.extend(items) or [])
    with pytest.raises(EngineError, match=r"\(100 images\) needs 1\.2 MiB of memory .* over the limit of 1\.0 MiB "
                                          r"\(half the memory available now\)"):
        load(root)
    assert len(decoded) <= 90  # decoding stopped when the limit was reached


def test_an_npz_over_the_memory_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    xtr, ytr, xte, yte = _mnist_arrays()
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    monkeypatch.setattr(splits_mod, "available_memory", lambda: 400_000)
    with pytest.raises(EngineError, match=r"mnist\.npz needs 306\.2 KiB of memory"):
        load(tmp_path / "mnist.npz")


def test_a_cache_holds_any_shape_and_checks_it_against_its_record(tmp_path, capsys):
    root = _tree(tmp_path / "t", (28, 20, 1))
    cache = tmp_path / "cache"
    first = load(root, cache)
    (npz,) = cache.glob("*.npz")
    again = load(root, cache)
    assert again.image_shape == (28, 20, 1) and capsys.readouterr().err == ""
    np.testing.assert_array_equal(first.x_test, again.x_test)
    arrays = dict(np.load(npz))
    arrays["x_test"] = np.repeat(arrays["x_test"], 3, axis=3)
    np.savez(npz, **arrays)
    load(root, cache)
    assert "test images are uint8 (4, 28, 20, 3), its record says [N, 28, 20, 1]" in capsys.readouterr().err


# --- through the CLI: refusals at load, one line, exit 2 --------------------------------------------------

def test_train_refuses_bad_trees_at_load_with_one_line_each(tmp_path):
    from PIL import Image
    mixed = _tree(tmp_path / "mixed", (16, 16, 3))
    Image.new("RGB", (20, 16)).save(mixed / "train" / "b" / "wide.png")
    empty = _tree(tmp_path / "empty", (16, 16, 3))
    (empty / "test" / "c").mkdir()
    differ = _tree(tmp_path / "differ", (16, 16, 3))
    (differ / "test" / "z").mkdir()
    Image.new("RGB", (16, 16)).save(differ / "test" / "z" / "0.png")
    cases = [(mixed, "wide.png is 16x20 but the first image, test/a/0.png, is 16x16"),
             (empty, "class folder test/c of"),
             (differ, "has class 'z', which train does not have")]
    for root, fragment in cases:
        p = run_cli("engine", "train", "--model", "tiny", "--data", root, "--epochs", "1", "--out", tmp_path / "o",
                    env={"ENGINE_CACHE": str(tmp_path / "cache")})
        assert p.returncode == 2, p.stderr
        assert_one_line_error(p, fragment)
    p = run_cli("engine", "train", "--model", "tiny", "--data", mixed, "--image-size", "9", "--out", tmp_path / "o")
    assert p.returncode == 2
    assert_one_line_error(p, "--image-size '9': expected HxW")
