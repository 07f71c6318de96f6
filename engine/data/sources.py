"""Data sources -> uint8 arrays [N,H,W,C] (C = 1 or 3, one shape per data set) + int labels (host side:
no TensorFlow).

Sources (`--data`):
- `cifar10`, `cifar100`, `mnist`, `fashion_mnist`: the Keras downloads (need internet, or Keras's own
  cache in ~/.keras/datasets).
- `digits`: scikit-learn's 8x8 handwritten digits, 8x8x1 (ships with the package: works offline);
  `digits32`: the same digits scaled to CIFAR-10's shape (32x32 RGB, each pixel repeated 4x4), for
  quick checks of CIFAR-shaped models.
- a folder tree `train/<class>/*` and `test/<class>/*` (JPEG, PNG or BMP, of one size, greyscale or
  colour; optionally under one top folder), or resized to `--image-size HxW` (as any source's images are),
- a `.tar` / `.tar.gz` of such a tree, streamed member by member, never extracted to disk,
- the official `cifar-10-python.tar.gz` and `cifar-100-python.tar.gz` (or their extracted folders):
  pickled batches, read with an unpickler that admits only the few numpy names those files hold,
- Keras's `mnist.npz`, or a folder or a `.tar` / `.tar.gz` of the official MNIST / Fashion-MNIST IDX files
  (`*-ubyte.gz`).

Decoded arrays are cached on disk, keyed by the source's path, size and mtime (every file's, for a
folder) and the options that change them, so the second run starts in seconds. Class order is
alphabetical for folder trees, which for CIFAR-10 is the official label order.
"""
from __future__ import annotations

import os
import re
import tarfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.contract import CIFAR10_CLASSES
from engine.data import mnist
from engine.data.cache import cache_path, read_cache, write_cache
from engine.data.cifar_batches import (CIFAR100_COARSE, CIFAR100_FILES, CIFAR100_FINE, MAX_BATCH_BYTES,
                                       MAX_CIFAR100_BYTES, restricted_unpickle, splits_from_batches,
                                       splits_from_cifar100)
from engine.data.images import (MAX_IMAGE_BYTES, RESIZE_FILTER, channels_of, decode, open_image,
                                pixels, read_regular, size_checked_here)
from engine.data.splits import Splits, balanced_subset, check_fits, memory_limit
from engine.errors import EngineError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MAX_TOTAL_BYTES = 8 << 30   # all files of a source together (the CIFAR-10 archives hold 55-180 MB)
MAX_IMAGES = 1_000_000      # images of a source (CIFAR-10 has 60,000); memory_limit() bounds their bytes
MAX_SIDE = 4096             # a side of --image-size
TAR_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)  # a damaged or truncated archive
NAMED = ("cifar10", "cifar100", "mnist", "fashion_mnist", "digits", "digits32")
DIGITS = ("digits", "digits32")  # scikit-learn's, shipped with it: no download
OFFLINE_HINT = ("pass --data PATH (or set ENGINE_DATA) to a train/<class>/ test/<class>/ folder tree, "
                "a .tar/.tar.gz of one, cifar-10-python.tar.gz, cifar-100-python.tar.gz, mnist.npz "
                "or a folder of MNIST's *-ubyte.gz files")
OFFICIAL_FILES = {  # what to fetch once on a machine with internet, for each Keras download
    "cifar10": "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    "cifar100": "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    "mnist": "mnist.npz from https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "fashion_mnist": ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                      "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into a "
                      "folder whose name holds 'fashion'"),
}
_IMAGE_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_image_size(text: str) -> tuple | None:
    """(H, W) of `--image-size HxW`, None for "" (keep the images' own size); a one-line error otherwise."""
    if not text:
        return None
    m = _IMAGE_SIZE_RE.match(text)
    if not m or not all(1 <= int(v) <= MAX_SIDE for v in m.groups()):
        raise EngineError(f"--image-size {text!r}: expected HxW, e.g. 64x64, each side 1 to {MAX_SIDE}")
    return int(m.group(1)), int(m.group(2))


def check_source(source: str, image_size: str = "", label_mode: str = "fine") -> str | None:
    """The absolute path of a path source, or a one-line error if nothing readable as one is there
    (a quick check: no file is opened); None for the named sources (cifar10, mnist, ..., digits).
    A --label-mode coarse for a source that cannot be CIFAR-100 is refused here too."""
    parse_image_size(image_size)
    if source in NAMED:
        check_label_mode(source, label_mode, _not_cifar100(source))
        return None
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise EngineError(f"data not found: {source} ({OFFLINE_HINT})")
    if os.path.isfile(path) and not (_is_tar_name(path) or path.endswith(".npz")):
        raise EngineError(f"unsupported data file {source}: expected a folder, .tar, .tar.gz, .tgz or .npz")
    check_label_mode(source, label_mode, _not_cifar100(source))
    return path


def _not_cifar100(source: str) -> str | None:
    """What `source` is if it cannot be CIFAR-100 as seen without opening a file, else None (CIFAR-100, or a
    folder or archive, which may hold it)."""
    if source in NAMED:
        return None if source == "cifar100" else f"the {source} data set"
    path = os.path.abspath(os.path.expanduser(source))
    return "an .npz" if path.endswith(".npz") else "a folder of IDX files" if mnist.is_idx_folder(path) else None


def takes_label_mode(source: str) -> bool:
    """Whether --label-mode coarse may apply to `source` (False: check_source refuses it there)."""
    return _not_cifar100(source) is None


def check_label_mode(source: str, label_mode: str, kind: str | None) -> None:
    """A one-line error for --label-mode coarse on a source that is `kind` (None: CIFAR-100, or not known)."""
    if label_mode == "coarse" and kind:
        raise EngineError(f"--label-mode coarse: {source} is {kind}; the flag applies only to CIFAR-100 "
                          f"(cifar100 or cifar-100-python.tar.gz), whose 20 superclasses it selects")


def _resized(splits: Splits, size: tuple | None, source: str, log=print) -> Splits:
    """`splits` with every image resized to size = (H, W) with PIL's bilinear filter, as a folder tree's
    are while they are decoded (a no-op where they already have that size)."""
    if size is None or splits.image_shape[:2] == tuple(size):
        return splits
    from PIL import Image
    (h, w), c = size, splits.image_shape[2]
    check_fits((len(splits.y_train) + len(splits.y_test)) * h * w * c, f"{source} at --image-size {h}x{w}")

    def resize(x):
        return np.stack([pixels(Image.fromarray(a[..., 0] if c == 1 else a), size) for a in x])

    log(f"resized every image of {source} to {h}x{w} ({RESIZE_FILTER} filter)")
    return Splits(resize(splits.x_train), splits.y_train, resize(splits.x_test), splits.y_test, splits.class_names)


def load(source: str, cache_dir: str | None = None, log=print, label_mode: str = "fine",
         image_size: str = "") -> Splits:
    """Load a data source (see module doc) into uint8 arrays, through the on-disk cache.

    label_mode: CIFAR-100's "fine" (100 classes) or "coarse" (20) labels (coarse for another source: a
    one-line error); image_size: "HxW" resizes every image to it ("" keeps their own, which in a folder tree
    or archive must then be one size)."""
    if label_mode not in ("fine", "coarse"):
        raise EngineError(f"--label-mode {label_mode!r}: expected fine or coarse")
    size = parse_image_size(image_size)
    path = check_source(source, "", label_mode)
    if source in DIGITS:
        return _resized(load_digits(side=32 if source == "digits32" else 8), size, source, log)
    if source in NAMED:
        return _resized(_load_keras(source, label_mode), size, source, log)
    cache_file = None
    if cache_dir:
        variant = f"labels={label_mode}:size={size}" if (label_mode != "fine" or size) else ""
        cache_file = cache_path(path, cache_dir, variant)
        cached = read_cache(cache_file)
        if cached is not None and not mnist.stale_names(cached) and (not size or cached.image_shape[:2] == size):
            return cached  # (an older version cached other sources than trees unresized, and so decodes again)
    log(f"decoding {source} (once; cached for later runs)")
    if path.endswith(".npz"):
        splits = mnist.load_npz(path)
    elif mnist.is_idx_folder(path):
        splits = mnist.load_idx_folder(path)
    else:
        splits = _read_tree(path, label_mode, size, log)
    splits = _resized(splits, size, source, log)  # (a tree's images are resized as they are decoded)
    if cache_file:
        write_cache(cache_file, splits, log)
    return splits


def load_digits(test_fraction: float = 0.2, side: int = 8) -> Splits:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package: works
    offline) as uint8 (0..16 scaled to 0..255), with a class-balanced test split: at their own
    8x8x1 (`digits`), or with side=32 at CIFAR-10's 32x32x3, each pixel repeated 4x4 and the grey
    channel 3 times (`digits32`)."""
    from sklearn.datasets import load_digits as sk_digits
    if side not in (8, 32):
        raise ValueError(f"digits come at side 8 or 32, not {side}")
    d = sk_digits()
    img = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, [N, 8, 8, 1]
    if side == 32:
        img = np.repeat(np.repeat(img, 4, axis=1), 4, axis=2)             # 8x8 -> 32x32
        img = np.repeat(img, 3, axis=3)                                    # grey -> RGB
    y = d.target.astype(np.int32)
    xte, yte, xtr, ytr = balanced_subset(img, y, int(len(y) * test_fraction), seed=0, num_classes=10)
    return Splits(xtr, ytr, xte, yte, [str(c) for c in range(10)])


def _is_tar_name(path: str) -> bool:
    return path.endswith((".tar", ".tar.gz", ".tgz"))


def _load_keras(name: str, label_mode: str = "fine") -> Splits:
    """A Keras download (cifar10, cifar100, mnist, fashion_mnist) as Splits; offline, a one-line
    error naming the official file to fetch instead."""
    import keras
    loader = getattr(keras.datasets, name).load_data
    try:
        (xtr, ytr), (xte, yte) = loader(label_mode=label_mode) if name == "cifar100" else loader()
    except Exception as e:  # noqa: BLE001 - any download failure means the same thing to the user
        pretty = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
        raise EngineError(f"could not download {pretty[name]} ({str(e)[:100] or type(e).__name__}); "
                          f"offline, fetch {OFFICIAL_FILES[name]} and pass --data PATH to it") from None
    names = {"cifar10": list(CIFAR10_CLASSES), "mnist": list(mnist.DIGITS),
             "fashion_mnist": list(mnist.FASHION_MNIST_CLASSES),
             "cifar100": list(CIFAR100_COARSE if label_mode == "coarse" else CIFAR100_FINE)}[name]
    if xtr.ndim == 3:  # MNIST and Fashion-MNIST: [N, 28, 28] greyscale
        xtr, xte = xtr[..., None], xte[..., None]
    return Splits(xtr, ytr.reshape(-1).astype(np.int32), xte, yte.reshape(-1).astype(np.int32), names)


def _entries(path: str):
    """Yield (relative path, read(limit)) for every file of a folder or member of a tar archive, and
(relative path, None) for every folder (in an archive: every folder member).

    A tar archive is streamed: each member's bytes can be read only while it is current, and the
    declared sizes of all members together (read or skipped, both cost decompression) are capped."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for d in dirs:
                yield os.path.relpath(os.path.join(root, d), path).replace(os.sep, "/"), None
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
                    yield name.rstrip("/"), None
                    continue
                if not m.isfile():
                    raise EngineError(f"refusing special member {name!r} in {path}")
                total += m.size
                if total > MAX_TOTAL_BYTES:
                    raise EngineError(f"refusing {path}: its members hold more than {MAX_TOTAL_BYTES >> 30} GiB")
                f = tar.extractfile(m)
                yield name, (lambda limit, f=f, m=m: _read_member(f, m, path, limit))
    except TAR_READ_ERRORS as e:
        raise EngineError(f"cannot read {path}: not a valid or complete tar archive ({e})") from None


def _read_member(f, m, path, limit):
    """A member's bytes (called by the reader while the member is current, outside _entries' own guard)."""
    if m.size > limit:
        raise EngineError(f"refusing tar member {m.name!r} in {path}: {m.size} bytes is too large")
    try:
        return f.read()
    except TAR_READ_ERRORS as e:
        raise EngineError(f"cannot read {path}: not a valid or complete tar archive (member {m.name!r}: "
                          f"{e})") from None


# What a folder or archive holds, by the kind of its entries (a source holds one kind).
_KINDS = {"batch": "pickled CIFAR-10 batches", "c100": "CIFAR-100 pickles", "idx": "MNIST IDX files",
          "image": "image folders"}
_BATCH_RE = re.compile(r"^(data_batch_\d+|test_batch|batches\.meta)$")


class _Decoder:
    """Decodes images on a few threads, in chunks, while the source is still being read: at most
    2 chunks per thread (each of at most CHUNK_IMAGES images or about CHUNK_BYTES) are held
    undecoded; what stays is the decoded arrays. A decoding error surfaces soon after, the first
    file's in reading order first."""

    CHUNK_IMAGES = 256
    CHUNK_BYTES = 8 << 20

    def __init__(self):
        self.workers = os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.chunks = []           # futures of lists of arrays
        self.in_flight = deque()   # those not yet known to be done
        self.pending, self.pending_bytes = [], 0

    def add(self, data: bytes, name: str, size: tuple | None, first: tuple | None) -> tuple[int, int]:
        """Queue an image file's bytes, to be resized to size = (H, W) if given, else checked to have
        the size of first = (relative path, H, W); returns the reference `get` takes once `finish`
        has run."""
        self.pending.append((data, name, size, first))
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


class _Tally:
    """What the reading has seen: the first image's size and channels (from its header), the
    decoded bytes the images need (estimated with the first image's channels), the class folders,
    and whether decoding stopped at the memory limit."""

    def __init__(self, size):
        self.size = size            # --image-size (H, W) or None
        self.first = None           # (relative path, H, W) of the first image read
        self.channels = 3
        self.need = 0
        self.limit = memory_limit()
        self.over = False
        self.class_dirs = []        # (split, class, relative path)
        self.split_dirs = {}        # split -> the relative path of the folder its images are in

    def split_at(self, path: str, split: str, folder: str) -> None:
        """An image of `split` is in `folder` (train, a/train, ...): a split found in two folders (two
        copies of a data set side by side) is refused, not merged."""
        first = self.split_dirs.setdefault(split, folder)
        if first != folder:
            raise EngineError(f"{path} holds {split} images in two folders, {first}/ and {folder}/; "
                              f"give the folder or archive of one data set")


def _read_tree(path: str, label_mode: str = "fine", size: tuple | None = None, log=print) -> Splits:
    """Read and decode a folder tree or archive in one pass. Images are decoded as they are read
    (_Decoder), so memory holds the decoded arrays, not the files; the bytes read, the number of
    images and the bytes they decode to are capped."""
    images = {"train": [], "test": []}   # (class, relpath, _Decoder reference)
    batches, c100 = {}, {}               # basename -> unpickled dict
    idx = {}                             # mnist.idx_key -> (name, raw bytes) of MNIST-style IDX files
    decoder = _Decoder()
    tally = _Tally(size)
    try:
        with size_checked_here():
            _read_entries(path, images, batches, c100, decoder, tally, idx, label_mode)
            if not tally.over:
                decoder.finish()
        found = [_KINDS[kind] for kind, there in (("batch", batches), ("c100", c100), ("idx", idx),
                                                  ("image", images["train"] or images["test"])) if there]
        if len(found) > 1:
            raise EngineError(f"{path} holds both {found[0]} and {found[1]}; use one")
        if idx:
            return mnist.load_idx_members(idx, path)
        if batches:
            return splits_from_batches(batches, path)
        if c100:
            return splits_from_cifar100(c100, path, label_mode)
        return _splits_from_images(images, path, decoder, tally, log)
    finally:
        decoder.close()


def _read_entries(path: str, images: dict, batches: dict, c100: dict, decoder: _Decoder, tally: _Tally,
                  idx: dict | None = None, label_mode: str = "fine") -> None:
    """Read the entries of `path` into images, batches, c100 and idx. --label-mode coarse is refused at the
    first entry that cannot be CIFAR-100's (a source holding two kinds is refused anyway), not after
    the whole source is read."""
    total = count = 0
    for rel, read in _entries(path):
        parts = rel.split("/")
        base = parts[-1]
        if base.startswith("."):
            continue
        if read is None:  # a folder
            if len(parts) >= 2 and parts[-2] in images:
                tally.class_dirs.append((parts[-2], base, rel))
            continue
        key = mnist.idx_key(base) if idx is not None else None
        if key:  # an IDX file: kept as it is, its header checked by mnist.idx_array
            check_label_mode(path, label_mode, f"a source of {_KINDS['idx']}")
            if key in idx:
                raise EngineError(f"{path} holds two {mnist.IDX_FILES[key]} files: {idx[key][0]} and {path}:{rel}")
            idx[key] = (f"{path}:{rel}", read(mnist.MAX_FILE_BYTES))
            total += len(idx[key][1])
            if total > MAX_TOTAL_BYTES:
                raise EngineError(f"refusing {path}: it holds more than {MAX_TOTAL_BYTES >> 30} GiB of data")
            continue
        is_batch = bool(_BATCH_RE.match(base))
        is_c100 = base in CIFAR100_FILES and (len(parts) == 1 or parts[-2] == "cifar-100-python")
        is_image = len(parts) >= 3 and parts[-3] in images and base.lower().endswith(IMAGE_EXTS)
        if not (is_batch or is_c100 or is_image):
            continue
        if not is_c100:
            check_label_mode(path, label_mode, f"a source of {_KINDS['batch' if is_batch else 'image']}")
        data = read(MAX_BATCH_BYTES if is_batch else MAX_CIFAR100_BYTES if is_c100 else MAX_IMAGE_BYTES)
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            raise EngineError(f"refusing {path}: it holds more than {MAX_TOTAL_BYTES >> 30} GiB of data")
        if is_batch:
            batches[base] = restricted_unpickle(data, f"{path}:{rel}")
            continue
        if is_c100:
            c100[base] = restricted_unpickle(data, f"{path}:{rel}", max_text=MAX_CIFAR100_BYTES)
            continue
        tally.split_at(path, parts[-3], "/".join(parts[:-2]))
        count += 1
        if count > MAX_IMAGES:
            raise EngineError(f"refusing {path}: it holds more than {MAX_IMAGES:,} images")
        name = f"{path}:{rel}"
        if tally.first is None:
            with open_image(data, name) as img:  # the header only
                tally.first, tally.channels = (rel, img.height, img.width), channels_of(img)
        th, tw = tally.size or tally.first[1:]
        tally.need += th * tw * tally.channels
        if tally.need > tally.limit:
            tally.over = True  # stop decoding; the reading goes on to say how much the whole set needs
        ref = None if tally.over else decoder.add(data, name, tally.size, None if tally.size else tally.first)
        images[parts[-3]].append((parts[-2], rel, ref))


def _splits_from_images(images: dict, path: str, decoder: _Decoder, tally: _Tally, log=print) -> Splits:
    if not images["train"]:
        raise EngineError(f"no training images in {path}: expected train/<class>/*.jpg|png "
                          f"and test/<class>/*.jpg|png")
    for split, cls, rel in tally.class_dirs:
        if not any(c == cls for c, _, _ in images[split]):
            raise EngineError(f"class folder {rel} of {path} holds no images (.jpg, .jpeg, .png or .bmp)")
    classes = sorted({c for c, _, _ in images["train"]})
    test_classes = {c for c, _, _ in images["test"]}
    missing = [c for c in classes if c not in test_classes]
    if missing:
        raise EngineError(f"test split of {path} has no images of class {missing[0]!r} "
                          f"(train has {len(classes)} classes)")
    extra = sorted(test_classes - set(classes))
    if extra:
        raise EngineError(f"test split of {path} has class {extra[0]!r}, which train does not have")
    all_items = images["train"] + images["test"]
    what = f"{path} ({len(all_items):,} images)"
    if tally.over:
        check_fits(tally.need, what)
    shapes = [decoder.get(ref).shape for _, _, ref in all_items]
    gray = sum(sh[2] == 1 for sh in shapes)
    mixed = 0 < gray < len(all_items)
    check_fits(sum(h * w * (3 if mixed else c) for h, w, c in shapes), what)
    if mixed:
        log(f"note: {gray:,} of the {len(all_items):,} images of {path} are greyscale and the others colour; "
            f"the greyscale ones are converted to RGB")
    if tally.size:
        log(f"resized every image of {path} to {tally.size[0]}x{tally.size[1]} ({RESIZE_FILTER} filter)")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        items = sorted(images[split], key=lambda t: (t[0], t[1]))
        arrays = (decoder.get(ref) for _, _, ref in items)
        if mixed:
            arrays = (np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays)
        out += [np.stack(list(arrays)), np.array([index[c] for c, _, _ in items], dtype=np.int32)]
    return Splits(*out, class_names=classes)


def _pixels_of(images: list) -> list:
    out = []
    for data, name, size, first in images:
        with open_image(data, name) as img:  # the header only: the size is checked before decoding
            if first and (img.height, img.width) != first[1:]:
                rel, fh, fw = first
                raise EngineError(f"image {name} is {img.height}x{img.width} but the first image, {rel}, is "
                                  f"{fh}x{fw}: a data set's images must have one size (or pass --image-size HxW "
                                  f"to resize them all)")
            out.append(pixels(decode(img, name), size))
    return out
