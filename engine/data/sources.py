"""Data sources -> uint8 arrays [N,32,32,3] + int labels (host side: no TensorFlow).

Sources (`--data`):
- `cifar10`: the Keras download (needs internet).
- `digits`: scikit-learn's 8x8 digits scaled to 32x32 RGB (ships with the package; for probes).
- a folder tree `train/<class>/*` and `test/<class>/*` (JPEG or PNG; optionally under one top folder),
- a `.tar` / `.tar.gz` of such a tree, streamed member by member, never extracted to disk,
- the official `cifar-10-python.tar.gz` (or its extracted folder): pickled batches, read with an
  unpickler that admits only the few numpy names those files hold.

Decoded arrays are cached on disk, keyed by the source's path, size and mtime (every file's, for a
folder), so the second run starts in seconds. Class order is alphabetical, which for CIFAR-10 is the
official label order.
"""
from __future__ import annotations

import os
import re
import tarfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.contract import CIFAR10_CLASSES, IMAGE_SIDE
from engine.data.cache import cache_path, read_cache, write_cache
from engine.data.cifar_batches import MAX_BATCH_BYTES, restricted_unpickle, splits_from_batches
from engine.data.images import MAX_IMAGE_BYTES, decode, open_image, read_regular, shape_of, size_checked_here
from engine.data.splits import Splits, balanced_subset
from engine.errors import EngineError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MAX_TOTAL_BYTES = 8 << 30   # all files of a source together (the CIFAR-10 archives hold 55-180 MB)
MAX_IMAGES = 1_000_000      # 3 GB decoded (CIFAR-10 has 60,000)
OFFLINE_HINT = ("pass --data PATH (or set ENGINE_DATA) to a train/<class>/ test/<class>/ folder tree, "
                "a .tar/.tar.gz of one, or cifar-10-python.tar.gz")


def check_source(source: str) -> str | None:
    """The absolute path of a path source, or a one-line error if nothing readable as one is there
    (a quick check: no file is opened); None for the named sources (cifar10, digits)."""
    if source in ("cifar10", "digits"):
        return None
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise EngineError(f"data not found: {source} ({OFFLINE_HINT})")
    if os.path.isfile(path) and not _is_tar_name(path):
        raise EngineError(f"unsupported data file {source}: expected a folder, .tar, .tar.gz or .tgz")
    return path


def load(source: str, cache_dir: str | None = None, log=print) -> Splits:
    """Load a data source (see module doc) into uint8 arrays, through the on-disk cache."""
    if source == "cifar10":
        return _load_keras_cifar10()
    if source == "digits":
        return load_digits()
    path = check_source(source)
    cache_file = None
    if cache_dir:
        cache_file = cache_path(path, cache_dir)
        cached = read_cache(cache_file)
        if cached is not None:
            return cached
    log(f"decoding {source} (once; cached for later runs)")
    splits = _read_tree(path)
    if cache_file:
        write_cache(cache_file, splits, log)
    return splits


def load_digits(test_fraction: float = 0.2) -> Splits:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package: works
    offline), scaled to 32x32 RGB uint8 by pixel repetition, with a class-balanced test split.
    A stand-in for MNIST in probe experiments."""
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    img = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)        # 0..16 -> 0..255
    img = np.repeat(np.repeat(img, 4, axis=1), 4, axis=2)             # 8x8 -> 32x32
    img = np.repeat(img[..., None], 3, axis=3)                        # grey -> RGB
    y = d.target.astype(np.int32)
    xte, yte, xtr, ytr = balanced_subset(img, y, int(len(y) * test_fraction), seed=0, num_classes=10)
    return Splits(xtr, ytr, xte, yte, [str(c) for c in range(10)])


def _is_tar_name(path: str) -> bool:
    return path.endswith((".tar", ".tar.gz", ".tgz"))


def _load_keras_cifar10() -> Splits:
    import keras
    try:
        (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    except Exception as e:  # noqa: BLE001 - any download failure means the same thing to the user
        raise EngineError(f"could not download CIFAR-10 ({str(e)[:100] or type(e).__name__}); "
                          f"{OFFLINE_HINT}") from None
    return Splits(xtr, ytr.reshape(-1).astype(np.int32), xte, yte.reshape(-1).astype(np.int32),
                  list(CIFAR10_CLASSES))


def _entries(path: str):
    """Yield (relative path, read(limit)) for every file of a folder or member of a tar archive.

    A tar archive is streamed: each member's bytes can be read only while it is current, and the
    declared sizes of all members together (read or skipped, both cost decompression) are capped."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                yield (os.path.relpath(full, path).replace(os.sep, "/"),
                       lambda limit, full=full: read_regular(full, limit))
        return
    total = 0
    try:
        with tarfile.open(path, "r|*") as tar:  # stream mode: one pass, member by member
            for m in tar:
                name = m.name
                parts = name.split("/")
                if name.startswith("/") or ".." in parts:
                    raise EngineError(f"refusing tar member {name!r} in {path}: path leaves the archive")
                if m.issym() or m.islnk():
                    raise EngineError(f"refusing link member {name!r} in {path}")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise EngineError(f"refusing special member {name!r} in {path}")
                total += m.size
                if total > MAX_TOTAL_BYTES:
                    raise EngineError(f"refusing {path}: its members hold more than {MAX_TOTAL_BYTES >> 30} GiB")
                f = tar.extractfile(m)
                yield name, (lambda limit, f=f, m=m: _read_member(f, m, path, limit))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise EngineError(f"cannot read {path}: not a valid or complete tar archive ({e})") from None


def _read_member(f, m, path, limit):
    if m.size > limit:
        raise EngineError(f"refusing tar member {m.name!r} in {path}: {m.size} bytes is too large")
    return f.read()


_BATCH_RE = re.compile(r"^(data_batch_\d+|test_batch|batches\.meta)$")


class _Decoder:
    """Decodes images on a few threads, in chunks, while the source is still being read: at most
    2 chunks per thread (each of at most CHUNK_IMAGES images or about CHUNK_BYTES) are held
    undecoded; what stays is the decoded 32x32 arrays. A decoding error surfaces soon after."""

    CHUNK_IMAGES = 256
    CHUNK_BYTES = 8 << 20

    def __init__(self):
        self.workers = os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.chunks = []           # futures of lists of arrays
        self.in_flight = deque()   # those not yet known to be done
        self.pending, self.pending_bytes = [], 0

    def add(self, data: bytes, name: str) -> tuple[int, int]:
        """Queue an image file's bytes; returns the reference `get` takes once `finish` has run."""
        self.pending.append((data, name))
        self.pending_bytes += len(data)
        ref = (len(self.chunks), len(self.pending) - 1)
        if len(self.pending) >= self.CHUNK_IMAGES or self.pending_bytes >= self.CHUNK_BYTES:
            self._submit()
        return ref

    def _submit(self):
        if self.pending:
            fut = self.pool.submit(_pixels_of, self.pending)
            self.chunks.append(fut)
            self.in_flight.append(fut)
            self.pending, self.pending_bytes = [], 0
        while self.in_flight and (len(self.in_flight) > 2 * self.workers or self.in_flight[0].done()):
            self.in_flight.popleft().result()  # raises a decoding error

    def finish(self):
        self._submit()
        while self.in_flight:
            self.in_flight.popleft().result()

    def get(self, ref) -> np.ndarray:
        return self.chunks[ref[0]].result()[ref[1]]

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _read_tree(path: str) -> Splits:
    """Read and decode a folder tree or archive in one pass. Images are decoded as they are read
    (_Decoder), so memory holds the decoded 32x32 arrays, not the files; the bytes read and the
    number of images are capped."""
    images = {"train": [], "test": []}   # (class, relpath, _Decoder reference)
    batches = {}                          # basename -> unpickled dict
    decoder = _Decoder()
    try:
        with size_checked_here():
            _read_entries(path, images, batches, decoder)
            decoder.finish()
        if batches and (images["train"] or images["test"]):
            raise EngineError(f"{path} holds both pickled CIFAR batches and image folders; use one")
        if batches:
            return splits_from_batches(batches, path)
        return _splits_from_images(images, path, decoder)
    finally:
        decoder.close()


def _read_entries(path: str, images: dict, batches: dict, decoder: _Decoder) -> None:
    total = count = 0
    for rel, read in _entries(path):
        parts = rel.split("/")
        base = parts[-1]
        if base.startswith("."):
            continue
        is_batch = bool(_BATCH_RE.match(base))
        if not is_batch and not (len(parts) >= 3 and parts[-3] in images and base.lower().endswith(IMAGE_EXTS)):
            continue
        data = read(MAX_BATCH_BYTES if is_batch else MAX_IMAGE_BYTES)
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            raise EngineError(f"refusing {path}: it holds more than {MAX_TOTAL_BYTES >> 30} GiB of data")
        if is_batch:
            batches[base] = restricted_unpickle(data, f"{path}:{rel}")
            continue
        count += 1
        if count > MAX_IMAGES:
            raise EngineError(f"refusing {path}: it holds more than {MAX_IMAGES:,} images")
        images[parts[-3]].append((parts[-2], rel, decoder.add(data, f"{path}:{rel}")))


def _splits_from_images(images: dict, path: str, decoder: _Decoder) -> Splits:
    if not images["train"]:
        raise EngineError(f"no training images in {path}: expected train/<class>/*.jpg|png "
                          f"and test/<class>/*.jpg|png")
    classes = sorted({c for c, _, _ in images["train"]})
    test_classes = {c for c, _, _ in images["test"]}
    missing = [c for c in classes if c not in test_classes]
    if missing:
        raise EngineError(f"test split of {path} has no images of class {missing[0]!r} "
                          f"(train has {len(classes)} classes)")
    extra = sorted(test_classes - set(classes))
    if extra:
        raise EngineError(f"test split of {path} has class {extra[0]!r}, which train does not have")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        items = sorted(images[split], key=lambda t: (t[0], t[1]))
        out += [np.stack([decoder.get(ref) for _, _, ref in items]),
                np.array([index[c] for c, _, _ in items], dtype=np.int32)]
    return Splits(*out, class_names=classes)


def _pixels_of(images: list) -> list:
    out = []
    for data, name in images:
        img = open_image(data, name)   # the header only: the size is checked before decoding
        if img.size != (IMAGE_SIDE, IMAGE_SIDE):
            shape = shape_of(img)
            img.close()
            raise EngineError(f"image {name} is {shape}, expected 32x32x3 uint8 RGB")
        with img:
            arr = np.asarray(decode(img, name))
        if arr.shape != (IMAGE_SIDE, IMAGE_SIDE, 3) or arr.dtype != np.uint8:
            shape = "x".join(map(str, arr.shape))
            raise EngineError(f"image {name} is {shape} {arr.dtype}, expected 32x32x3 uint8 RGB")
        out.append(arr)
    return out
