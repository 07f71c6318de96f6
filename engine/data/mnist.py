"""MNIST-style files: Keras's `mnist.npz` (x_train, y_train, x_test, y_test) and the official IDX files
(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz, gzipped or not), as MNIST and Fashion-MNIST publish them. Every size is read
from the file's header and checked before any array is allocated."""
from __future__ import annotations

import gzip
import io
import math
import os
import zipfile
import zlib

import numpy as np

from engine.data.images import read_regular
from engine.data.splits import HOW_TO_CHANGE, Splits, check_fits, memory_limit
from engine.errors import EngineError

DIGITS = [str(c) for c in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
MAX_IMAGES = 1_000_000   # per split (MNIST has 60,000 + 10,000)
MAX_SIDE = 4096          # an image side
MAX_FILE_BYTES = 1 << 30  # one IDX or .npz file on disk (MNIST's largest is 47 MB unpacked, 10 MB gzipped)
MAX_CLASSES = 100_000     # classes of an .npz or IDX data set: its largest label + 1 (ImageNet-21k has 21,841)


def class_names_for(path: str, k: int = 10) -> list:
    """The names of k classes: Fashion-MNIST's ten if k is 10 and the path names it ('fashion' in it), else
    the labels '0'..'k-1'."""
    return list(FASHION_MNIST_CLASSES) if k == 10 and "fashion" in path.lower() else [str(c) for c in range(k)]


def stale_names(s: Splits) -> bool:
    """Whether cached splits hold the ten names that .npz and IDX data sets were once all given, for labels
    of fewer classes (their class count now comes from the labels): they are then decoded again."""
    top = max(int(s.y_train.max(initial=0)), int(s.y_test.max(initial=0)))
    return s.class_names in (DIGITS, FASHION_MNIST_CLASSES) and top + 1 < len(s.class_names)


def is_idx_folder(path: str) -> bool:
    return os.path.isdir(path) and any(_idx_file(path, stem) for stem in IDX_FILES.values())


def _idx_file(folder: str, stem: str) -> str | None:
    """The one file of `stem` in the folder, gzipped or not; two forms of one file are refused (which is the
    data?)."""
    names = (stem + ".gz", stem, stem.replace("-idx", ".idx"))  # Kaggle mirrors use train-images.idx3-ubyte
    found = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    if len(found) > 1:
        raise EngineError(f"{folder}: both {' and '.join(map(os.path.basename, found))}: keep one of them")
    return found[0] if found else None


def _check_shapes(xtr_shape, ytr_shape, xte_shape, yte_shape, where: str) -> None:
    for split, xs, ys in (("train", xtr_shape, ytr_shape), ("test", xte_shape, yte_shape)):
        if len(xs) not in (3, 4) or (len(xs) == 4 and xs[3] not in (1, 3)):
            raise EngineError(f"{where}: x_{split} is {list(xs)}, expected [N, H, W] or [N, H, W, 1 or 3]")
        if len(ys) != 1 and not (len(ys) == 2 and ys[1] == 1):
            raise EngineError(f"{where}: y_{split} is {list(ys)}, expected [N] labels")
        if xs[0] != ys[0]:
            raise EngineError(f"{where}: {xs[0]:,} {split} images but {ys[0]:,} labels")
        if not 0 < xs[0] <= MAX_IMAGES:
            raise EngineError(f"{where}: {xs[0]:,} {split} images; expected 1 to {MAX_IMAGES:,}")
        if not all(0 < d <= MAX_SIDE for d in xs[1:3]):
            raise EngineError(f"{where}: {split} images are {xs[1]}x{xs[2]}; each side must be 1 to {MAX_SIDE}")
    if tuple(xtr_shape[1:]) != tuple(xte_shape[1:]):
        raise EngineError(f"{where}: train images are {list(xtr_shape[1:])} but test images {list(xte_shape[1:])}")
    check_fits((xtr_shape[0] + xte_shape[0]) * math.prod(xtr_shape[1:]), where)


def _splits(xtr, ytr, xte, yte, names, where) -> Splits:
    """Splits of the arrays; names None: as many classes as the largest label + 1 (class_names_for)."""
    def images(x):
        return x[..., None] if x.ndim == 3 else x

    def labels(y, split):
        y = y.reshape(-1)
        if y.dtype.kind not in "iu":
            raise EngineError(f"{where}: y_{split} is {y.dtype}, expected integer class indices")
        k = len(names) if names is not None else MAX_CLASSES
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise EngineError(f"{where}: a {split} label is {bad}, outside the {k:,} classes 0..{k - 1:,}"
                              + (" (labels are class indices from 0)" if names is None else ""))
        return y.astype(np.int32)

    ytr, yte = labels(ytr, "train"), labels(yte, "test")
    if names is None:
        names = class_names_for(where, max(int(ytr.max(initial=0)), int(yte.max(initial=0))) + 1)
    return Splits(np.ascontiguousarray(images(xtr)), ytr, np.ascontiguousarray(images(xte)), yte, list(names))


def load_npz(path: str, names: list | None = None) -> Splits:
    """Keras's mnist.npz (or any .npz of uint8 x_train/x_test [N,H,W(,C)] and integer labels 0..K-1)."""
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise EngineError(f"refusing {path}: more than {MAX_FILE_BYTES >> 20} MB")
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with zipfile.ZipFile(path) as z:
            headers = {}
            for k in keys:
                if k + ".npy" not in z.namelist():
                    raise EngineError(f"{path}: no {k} array (an MNIST .npz holds x_train, y_train, x_test, y_test)")
                with z.open(k + ".npy") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise EngineError(f"{path}: {k} is in .npy format {version[0]}.{version[1]}; "
                                          f"expected 1.0 or 2.0")
                    shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise EngineError(f"{path}: {k} holds Python objects, not numbers")
                if k.startswith("x") and dtype != np.uint8:
                    raise EngineError(f"{path}: {k} is {dtype}, expected uint8 pixels")
                headers[k] = shape
        _check_shapes(*(headers[k] for k in keys), path)
        with np.load(path, allow_pickle=False) as z:
            arrays = [z[k] for k in keys]
    except EngineError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise EngineError(f"cannot read {path}: not a valid .npz of x_train, y_train, x_test, y_test "
                          f"({str(e)[:100]})") from None
    return _splits(*arrays, names, path)


def idx_key(name: str) -> str | None:
    """The array ("x_train", "y_train", "x_test" or "y_test") an IDX file of this base name holds, or None."""
    for k, stem in IDX_FILES.items():
        if name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
            return k
    return None


def _read_idx(path: str, want_ndim: int, max_items: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `want_ndim` dimensions (gzipped if it ends in .gz)."""
    return idx_array(read_regular(path, MAX_FILE_BYTES), path, want_ndim, max_items)


def idx_array(raw: bytes, path: str, want_ndim: int, max_items: int) -> np.ndarray:
    """The array of an IDX file's bytes `raw` (gzipped if `path`, the name messages give, ends in .gz),
    its header checked before the body is read."""
    try:
        data = gzip.GzipFile(fileobj=io.BytesIO(raw)) if path.endswith(".gz") else None
        head = data.read(4) if data else raw[:4]
        if len(head) < 4 or head[:2] != b"\0\0":
            raise EngineError(f"{path}: not an IDX file (bad magic number)")
        if head[2] != 0x08:
            raise EngineError(f"{path}: IDX data type 0x{head[2]:02x}; expected 0x08 (unsigned bytes)")
        if head[3] != want_ndim:
            raise EngineError(f"{path}: {head[3]} dimensions; expected {want_ndim}")
        dims_raw = data.read(4 * want_ndim) if data else raw[4:4 + 4 * want_ndim]
        if len(dims_raw) < 4 * want_ndim:
            raise EngineError(f"{path}: truncated IDX header")
        dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
        if not 0 < dims[0] <= MAX_IMAGES or not all(0 < d <= MAX_SIDE for d in dims[1:]):
            raise EngineError(f"{path}: IDX dimensions {list(dims)} are out of bounds "
                              f"(at most {MAX_IMAGES:,} items of sides up to {MAX_SIDE})")
        n = math.prod(dims)
        if n > max_items:
            raise EngineError(f"{path}: {list(dims)} would need {n:,} bytes, over the limit of {max_items:,} "
                              f"({HOW_TO_CHANGE})")
        body = data.read(n + 1) if data else raw[4 + 4 * want_ndim:]
    except (OSError, EOFError, zlib.error) as e:
        raise EngineError(f"cannot read {path}: {str(e)[:100]}") from None
    if len(body) != n:
        raise EngineError(f"{path}: IDX header declares {list(dims)} = {n:,} bytes but the file holds "
                          f"{'more' if len(body) > n else f'{len(body):,}'}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_idx_members(members: dict, where: str, names: list | None = None) -> Splits:
    """The four official IDX files read from an archive: {array key (idx_key): (name, raw bytes)}."""
    for k, stem in IDX_FILES.items():
        if k not in members:
            raise EngineError(f"{where}: no {stem}.gz (MNIST-style IDX files are "
                              f"{', '.join(s + '.gz' for s in IDX_FILES.values())})")
    budget = memory_limit()
    arrays = {k: idx_array(members[k][1], members[k][0], 3 if k.startswith("x") else 1,
                           budget if k.startswith("x") else MAX_IMAGES) for k in IDX_FILES}
    _check_shapes(*(arrays[k].shape for k in IDX_FILES), where)
    return _splits(*(arrays[k] for k in IDX_FILES), names, where)


def load_idx_folder(folder: str, names: list | None = None) -> Splits:
    """The four official IDX files of MNIST or Fashion-MNIST in one folder."""
    files = {}
    for k, stem in IDX_FILES.items():
        f = _idx_file(folder, stem)
        if f is None:
            raise EngineError(f"{folder}: no {stem}.gz (MNIST-style IDX folders hold "
                              f"{', '.join(s + '.gz' for s in IDX_FILES.values())})")
        files[k] = f
    budget = memory_limit()
    arrays = {k: _read_idx(files[k], 3 if k.startswith("x") else 1, budget if k.startswith("x") else MAX_IMAGES)
              for k in IDX_FILES}
    _check_shapes(*(arrays[k].shape for k in IDX_FILES), folder)
    return _splits(*(arrays[k] for k in IDX_FILES), names, folder)
