"""Data sources, safe reading, the cache, subsets."""
import io
import os
import re
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


def test_two_copies_side_by_side_are_refused_not_merged(tree, tmp_path):
    """A folder (or archive) holding two data sets, e.g. a copy beside the original, would train on both."""
    import shutil
    root, _ = tree
    both = tmp_path / "both"
    shutil.copytree(root, both / "cifar")
    shutil.copytree(root, both / "cifar-old")
    with pytest.raises(EngineError, match=r"(train|test) images in two folders, cifar/\1/ and cifar-old/\1/"):
        load(both)
    archive = tmp_path / "both.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(both, arcname="data")
    with pytest.raises(EngineError, match=r"(train|test) images in two folders, data/cifar/\1/ and data/cifar-old/\1/"):
        load(archive)
    shutil.rmtree(both / "cifar-old")
    assert len(load(both).x_train) == len(load(root).x_train)  # one copy under a top folder: as it is


def test_label_mode_coarse_on_image_folders_is_refused_at_the_first_image_not_after_reading_all(tmp_path):
    """The archive's tail is damaged: a reader that went on to the end would report that instead."""
    noise = [(f"train/a/{i}.png", png_bytes(a)) for i, a in enumerate(make_images(40, seed=3))]
    whole = make_tar(tmp_path / "whole.tar.gz", noise).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(EngineError, match="not a valid or complete tar"):
        load(cut)
    with pytest.raises(EngineError, match="--label-mode coarse: .* is a source of image folders"):
        data.load(str(cut), None, log=lambda *a: None, label_mode="coarse")


def test_missing_class_in_test_split(tree):
    root, _ = tree
    for f in (root / "test" / "bee").iterdir():
        f.unlink()
    (root / "test" / "bee").rmdir()
    with pytest.raises(EngineError, match="no images of class 'bee'"):
        load(root)


def test_an_image_of_another_size_is_named_with_the_first_images_size(tree):
    from PIL import Image
    root, _ = tree
    Image.new("RGB", (33, 32)).save(root / "train" / "ant" / "big.png")
    with pytest.raises(EngineError, match=r"train/ant/big\.png is 32x33 but the first image, test/ant/000\.png, "
                                          r"is 32x32: .*--image-size HxW"):
        load(root)


def test_a_greyscale_image_among_colour_ones_is_converted_to_rgb_and_said_once(tree):
    from PIL import Image
    root, _ = tree
    grey = np.random.default_rng(5).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(grey).save(root / "test" / "cat" / "gray.png")
    said = []
    s = data.load(str(root), None, log=said.append)
    assert s.image_shape == (32, 32, 3)
    i = int(np.flatnonzero(s.y_test == s.class_names.index("cat"))[-1])  # gray.png sorts after 00N.png
    np.testing.assert_array_equal(s.x_test[i], np.repeat(grey[..., None], 3, axis=2))
    notes = [m for m in said if m.startswith("note:")]
    assert len(notes) == 1 and "1 of the 19 images" in notes[0] and "converted to RGB" in notes[0]


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


# --- hostile sources: bounded memory, bounded allocations, one-line errors, no hangs ---------------

def _png_header_only(w, h, idat=b"garbage") -> bytes:
    """A PNG that declares w x h RGB pixels but holds no valid image data: anything that decodes it
    fails, so refusing it by its size shows the size was read from the header alone."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _tree_members(extra, split="train"):
    good = png_bytes(make_images(1, 0)[0])
    return [("d/train/a/0.png", good), ("d/test/a/0.png", good)] + [(f"d/{split}/a/{n}", b) for n, b in extra]


def test_tar_bomb_memory_stays_bounded(tmp_path):
    """30 members of 15 MB of zeros (450 MB unpacked, 2 MB packed): the loader's peak memory stays
    far below the unpacked size, as it reads one member at a time."""
    import subprocess
    import sys
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        zeros = b"\0" * (15 << 20)
        good = png_bytes(make_images(1, 0)[0])
        for name, payload in [("d/test/a/0.png", good), ("d/train/a/0.png", good)] + [
                (f"d/train/a/z{i:02d}.png", zeros) for i in range(30)]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    # The peak of this process's own memory: VmHWM, not ru_maxrss, which on Linux also counts the
    # memory of the (forked) parent up to the exec, a pytest process that may have imported TensorFlow.
    probe = ("import sys\nfrom engine import data\nfrom engine.errors import EngineError\n"
             "try:\n    data.load(sys.argv[1], None, log=lambda *a: None)\nexcept EngineError as e:\n"
             "    print('error:', e)\n"
             "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=root), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    message, peak_mb = p.stdout.strip().splitlines()
    assert message.startswith("error: cannot decode image") and "z00.png" in message
    assert int(peak_mb) < 250, p.stdout  # the whole read held 450 MB before any image was decoded


def test_total_bytes_and_image_count_are_capped(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "d.tar.gz", _tree_members([(f"{i}.png", png_bytes(make_images(1, i)[0]))
                                                              for i in range(1, 6)]))
    assert len(load(archive).y_train) == 6
    monkeypatch.setattr(sources, "MAX_IMAGES", 4)
    with pytest.raises(EngineError, match="holds more than 4 images"):
        load(archive)
    monkeypatch.setattr(sources, "MAX_IMAGES", 1000)
    monkeypatch.setattr(sources, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(EngineError, match=r"refusing .*d\.tar\.gz: its members hold more than"):
        load(archive)


def test_oversized_images_refused_from_their_header_before_decoding(tmp_path):
    # 50000 x 50000 is over PIL's own bomb limit (it raises while opening); 100 x 100 is refused
    # by its size although its pixel data would not even decode
    for name, payload, match in [("bomb.png", _png_header_only(50000, 50000), r"bomb\.png: it declares "
                                  r"2,500,000,000 pixels, over the limit"),
                                 ("big.png", _png_header_only(100, 100), r"big\.png is 100x100 but the first image, d/train/a/0\.png, is 32x32")]:
        with pytest.raises(EngineError, match=match):
            load(make_tar(tmp_path / f"{name}.tar", _tree_members([(name, payload)])))


def _fifo_tree(tmp_path):
    root = tmp_path / "tree"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        (root / split / "a" / "0.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    os.mkfifo(root / "train" / "a" / "pipe.png")
    return root


def test_fifo_in_a_folder_tree_is_refused_not_opened(tmp_path):
    import subprocess
    import sys
    root = _fifo_tree(tmp_path)
    code = ("import sys\nfrom engine import data\nfrom engine.errors import EngineError\n"
            "try:\n    data.load(sys.argv[1], sys.argv[2], log=lambda *a: None)\nexcept EngineError as e:\n    print(e)\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        p = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "cache")], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, PYTHONPATH=repo))
    except subprocess.TimeoutExpired:
        pytest.fail("reading a folder tree holding a FIFO blocked")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"refusing file {root}/train/a/pipe.png: not a regular file"


def test_dangling_link_in_a_folder_tree_is_one_line(tree, tmp_path):
    root, _ = tree
    os.symlink(tmp_path / "gone.png", root / "train" / "ant" / "link.png")
    with pytest.raises(EngineError, match=r"cannot read file .*link\.png: No such file"):
        load(root, tmp_path / "cache")


class _Alloc:
    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (np.ndarray, self.shape, np.dtype(self.dtype)))


def _batches_tar(tmp_path, name, batches):
    ok = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}
    members = [(f"cifar-10-batches-py/{k}", v if isinstance(v, bytes) else pickle.dumps(v, protocol=2))
               for k, v in {"test_batch": ok, **batches}.items()]
    (tmp_path / name).mkdir()
    return make_tar(tmp_path / name / "cifar-10-python.tar.gz", members)


@pytest.mark.parametrize("shape,dtype", [((1 << 41,), "u1"), ((400_000, 3072), "u1"), ((10, 3072), "u1")])
def test_pickled_arrays_cannot_ask_for_memory(tmp_path, shape, dtype):
    """numpy pickles an array as an empty array plus its data; a pickle that asks _reconstruct for
    any other shape is refused before anything is allocated (2 TiB was a MemoryError traceback,
    400,000 images were accepted from a 536-byte file)."""
    path = _batches_tar(tmp_path, "bomb", {"data_batch_1": {b"data": _Alloc(shape, dtype), b"labels": [0]}})
    with pytest.raises(EngineError, match=r"refusing pickle .*data_batch_1: asks to allocate an array of shape"):
        load(path, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_pickle_cannot_multiply_text(tmp_path):
    """`_codecs.encode` of one memoised string, called again and again, would copy it each time."""
    text = "x" * (1 << 20)
    # opcodes: the text (memo 0), popped; a list of 60 x encode(memo 0, "latin1")
    head = pickle.dumps(text, protocol=2)[2:-1]  # BINUNICODE ..., BINPUT 0
    body = b"]q\x01(" + b"c_codecs\nencode\nq\x02" + (b"h\x02h\x00X\x06\x00\x00\x00latin1\x86R" * 60) + b"e"
    payload = b"\x80\x02" + head + b"0" + body + b"."
    assert len(payload) < 2 << 20  # 60 MB of copies from a 1 MB pickle
    path = _batches_tar(tmp_path, "text", {"data_batch_1": payload})
    with pytest.raises(EngineError, match="more than .* bytes of encoded text"):
        load(path)


def test_an_official_size_batch_loads(tmp_path):
    """A batch the size of the official ones (10,000 images, 31 MB pickled, over the 16 MB allowed
    for one image file) is read."""
    x = np.random.default_rng(0).integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
    labels = [i % 10 for i in range(10_000)]
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": labels,
             b"data": x.transpose(0, 3, 1, 2).reshape(10_000, -1),
             b"filenames": [f"img_{i}.png".encode() for i in range(10_000)]}
    raw = pickle.dumps(batch, protocol=2)
    assert len(raw) > 30 << 20
    archive = tmp_path / "cifar-10-python.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("data_batch_1", "test_batch"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    s = load(archive)
    assert s.x_train.shape == (10_000, 32, 32, 3) and s.x_test.shape == (10_000, 32, 32, 3)
    np.testing.assert_array_equal(s.x_train, x)
    np.testing.assert_array_equal(s.y_test, labels)


def test_a_batch_of_more_images_than_cifar_holds_is_refused(tmp_path):
    big = {b"data": np.zeros((10_001, 3072), np.uint8), b"labels": [0] * 10_001}
    with pytest.raises(EngineError, match=r"data_batch_1: 10,001 images; a CIFAR batch holds at most 10,000"):
        load(_batches_tar(tmp_path, "big", {"data_batch_1": big}))


@pytest.mark.parametrize("batches,match", [
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": ["cat"] * 10}},
     r"data_batch_1: labels must be a list of class indices, not a list holding str 'cat'"),
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": None}},
     r"data_batch_1: labels must be a list of class indices, not NoneType"),
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": [2 ** 40] * 10}},
     r"data_batch_1: a label is 1099511627776, not a class index"),
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": [12] * 10}},
     r"labels outside 0\.\.9"),
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))},
      "batches.meta": {b"label_names": 7}}, r"batches\.meta: label_names must be a list of class names, not int"),
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))},
      "batches.meta": {b"label_names": [b"\xff\xfe"] * 10}}, r"batches\.meta: label name b'\\xff\\xfe' is not UTF-8"),
    ({"data_batch_1": {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))},
      "batches.meta": {b"label_names": [b"a"] * 10}}, r"label_names names a class twice"),
    ({"data_batch_1": {b"data": list(range(10)), b"labels": list(range(10))}},
     r"data_batch_1: data is a list, expected a uint8 array"),
])
def test_cifar_batches_with_wrong_content_are_one_line(tmp_path, batches, match):
    with pytest.raises(EngineError, match=match):
        load(_batches_tar(tmp_path, "c", batches))


# --- the decoded-data cache: damaged or wrong caches are decoded again, never trusted ---------------

def _damage_cases():
    import zipfile

    def truncate(raw, z):
        return raw[: len(raw) // 3]

    def flip(raw, z):
        info = z.getinfo("x_train.npy")
        out = bytearray(raw)
        out[info.header_offset + 30 + len(info.filename) + len(info.extra) + 200] ^= 0xFF
        return bytes(out)

    def rewrite(**change):
        def f(raw, z):
            arrays = dict(np.load(io.BytesIO(raw)))
            arrays.update({k: v(arrays) for k, v in change.items()})
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            return buf.getvalue()
        return f
    return {"truncated": (truncate, "BadZipFile"), "a byte flipped": (flip, "BadZipFile"),
            "16x16 images": (rewrite(x_train=lambda a: a["x_train"][:, :16, :16]), r"train images are uint8 \(12, 16, 16, 3\)"),
            "labels shifted": (rewrite(y_train=lambda a: (a["y_train"] + 1) % 3), "do not match their checksum"),
            "labels out of range": (rewrite(y_train=lambda a: a["y_train"] + 100), r"train labels outside 0\.\.2"),
            "no record": (rewrite(meta=lambda a: np.array("{}")), "not written by this version"),
            "empty": (lambda raw, z: b"", "EOFError")}, zipfile


@pytest.mark.parametrize("case", list(_damage_cases()[0]))
def test_damaged_or_wrong_cache_is_decoded_again(tree, tmp_path, capsys, case):
    root, _ = tree
    cache = tmp_path / "cache"
    first = load(root, cache)
    (npz,) = cache.glob("*.npz")
    raw = npz.read_bytes()
    cases, zipfile = _damage_cases()
    damage, reason = cases[case]
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        npz.write_bytes(damage(raw, z))
    capsys.readouterr()
    again = load(root, cache)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"warning: the data cache {npz} is damaged (")
    assert re.search(reason, err) and err.endswith("decoding the data again"), err
    for a, b in ((first.x_train, again.x_train), (first.y_train, again.y_train), (first.y_test, again.y_test)):
        np.testing.assert_array_equal(a, b)
    load(root, cache)
    assert capsys.readouterr().err == ""  # and trusted again
