"""Data sources -> uint8 arrays [N,32,32,3] + int labels -> tf.data pipelines of uint8 batches.

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

import hashlib
import io
import os
import pickle
import re
import sys
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engine.errors import EngineError
from engine.files import atomic_open

IMAGE_SIZE = 32
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MAX_MEMBER_BYTES = 16 << 20
CACHE_VERSION = 1
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
OFFLINE_HINT = ("pass --data PATH (or set ENGINE_DATA) to a train/<class>/ test/<class>/ folder tree, "
                "a .tar/.tar.gz of one, or cifar-10-python.tar.gz")


@dataclass
class Splits:
    x_train: np.ndarray  # uint8 [N,32,32,3]
    y_train: np.ndarray  # int32 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# Sources


def load(source: str, cache_dir: str | None = None, log=print) -> Splits:
    """Load a data source (see module doc) into uint8 arrays, through the on-disk cache."""
    if source == "cifar10":
        return _load_keras_cifar10()
    if source == "digits":
        return load_digits()
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise EngineError(f"data not found: {source} ({OFFLINE_HINT})")
    if os.path.isfile(path) and not _is_tar_name(path):
        raise EngineError(f"unsupported data file {source}: expected a folder, .tar, .tar.gz or .tgz")
    cache_file = None
    if cache_dir:
        cache_file = os.path.join(cache_dir, f"{_slug(path)}-{_fingerprint(path)}.npz")
        cached = _read_cache(cache_file)
        if cached is not None:
            return cached
    log(f"decoding {source} (once; cached for later runs)")
    splits = _read_tree(path)
    if cache_file:
        _write_cache(cache_file, splits, log)
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
    """Yield (relative path, read()) for every regular file of a folder or tar archive."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                yield os.path.relpath(full, path).replace(os.sep, "/"), _file_reader(full)
        return
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
                f = tar.extractfile(m)
                yield name, (lambda f=f, m=m: _read_member(f, m, path))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise EngineError(f"cannot read {path}: not a valid or complete tar archive ({e})") from None


def _file_reader(full):
    def read():
        with open(full, "rb") as f:
            return f.read()
    return read


def _read_member(f, m, path):
    if m.size > MAX_MEMBER_BYTES:
        raise EngineError(f"refusing tar member {m.name!r} in {path}: {m.size} bytes is too large")
    return f.read()


_BATCH_RE = re.compile(r"^(data_batch_\d+|test_batch|batches\.meta)$")


def _read_tree(path: str) -> Splits:
    images = {"train": [], "test": []}   # (class, relpath, bytes)
    batches = {}                          # basename -> unpickled dict
    for rel, read in _entries(path):
        parts = rel.split("/")
        base = parts[-1]
        if base.startswith("."):
            continue
        if _BATCH_RE.match(base):
            batches[base] = restricted_unpickle(read(), f"{path}:{rel}")
        elif len(parts) >= 3 and parts[-3] in images and base.lower().endswith(IMAGE_EXTS):
            images[parts[-3]].append((parts[-2], rel, read()))
    if batches and (images["train"] or images["test"]):
        raise EngineError(f"{path} holds both pickled CIFAR batches and image folders; use one")
    if batches:
        return _splits_from_batches(batches, path)
    return _splits_from_images(images, path)


def _splits_from_images(images: dict, path: str) -> Splits:
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
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for split in ("train", "test"):
            items = sorted(images[split], key=lambda t: (t[0], t[1]))
            x = np.stack(list(pool.map(_decode, [(b, f"{path}:{rel}") for _, rel, b in items])))
            y = np.array([index[c] for c, _, _ in items], dtype=np.int32)
            out += [x, y]
    return Splits(*out, class_names=classes)


def _decode(arg) -> np.ndarray:
    data, name = arg
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise EngineError(f"cannot decode image {name}: {e}") from None
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or arr.dtype != np.uint8:
        shape = "x".join(map(str, arr.shape))
        raise EngineError(f"image {name} is {shape} {arr.dtype}, expected 32x32x3 uint8 RGB")
    return arr


# ---------------------------------------------------------------------------------------------
# The official CIFAR-10 python batches, without trusting the pickle


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals that CIFAR-10's pickled batches hold: numpy arrays and dtypes (and
    `_codecs.encode`, which Python 3 uses to pickle bytes at protocol 2). Anything else -- os.system,
    builtins.eval, any class -- is refused before it can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"asks for {module}.{name}")


def restricted_unpickle(data: bytes, name: str):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise EngineError(f"refusing pickle {name}: {e}") from None


def _get(d, key):
    if not isinstance(d, dict):
        raise EngineError("a CIFAR batch pickle does not hold a dict")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise EngineError(f"a CIFAR batch pickle has no {key!r} entry")


def _batch_arrays(d, name):
    data = np.asarray(_get(d, "data"))
    labels = np.asarray(_get(d, "labels"), dtype=np.int32)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise EngineError(f"{name}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(labels) != len(data):
        raise EngineError(f"{name}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1).copy(), labels


def _splits_from_batches(batches: dict, path: str) -> Splits:
    train_names = sorted((n for n in batches if n.startswith("data_batch_")),
                         key=lambda n: int(n.rsplit("_", 1)[1]))
    if not train_names or "test_batch" not in batches:
        raise EngineError(f"{path}: CIFAR batches need data_batch_N and test_batch")
    train = [_batch_arrays(batches[n], f"{path}:{n}") for n in train_names]
    xte, yte = _batch_arrays(batches["test_batch"], f"{path}:test_batch")
    names = list(CIFAR10_CLASSES)
    if "batches.meta" in batches:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _get(batches["batches.meta"], "label_names")]
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    if max(ytr.max(), yte.max()) >= len(names) or min(ytr.min(), yte.min()) < 0:
        raise EngineError(f"{path}: labels outside 0..{len(names) - 1}")
    return Splits(xtr, ytr, xte, yte, names)


# ---------------------------------------------------------------------------------------------
# Cache


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path.rstrip("/")))[:60]


def _fingerprint(path: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{path}".encode())
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), path)}:{st.st_size}:"
                         f"{st.st_mtime_ns}\n".encode())
    else:
        st = os.stat(path)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _read_cache(cache_file: str) -> Splits | None:
    if not os.path.exists(cache_file):
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            return Splits(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                          [str(c) for c in z["class_names"]])
    except (OSError, ValueError, KeyError, zlib.error):
        return None  # a damaged cache is rebuilt, never trusted


def _write_cache(cache_file: str, s: Splits, log) -> None:
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with atomic_open(cache_file) as f:  # readers never see a half-written cache
            np.savez(f, x_train=s.x_train, y_train=s.y_train, x_test=s.x_test, y_test=s.y_test,
                     class_names=np.array(s.class_names))
    except OSError as e:
        print(f"warning: could not write the data cache {cache_file}: {e}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Subsets


def balanced_subset(x, y, n: int, seed: int = 0, num_classes: int | None = None):
    """A class-balanced random subset of exactly n examples (n // k or one more per class), in a
    stable order.

    Returns (x_subset, y_subset, x_rest, y_rest)."""
    num_classes = num_classes or int(y.max()) + 1
    if n < num_classes:
        raise EngineError(f"a subset of {n} images cannot hold one image of each of {num_classes} classes")
    rng = np.random.default_rng(seed)
    take = []
    for c in range(num_classes):
        want = n // num_classes + (c < n % num_classes)  # the first n % k classes get one more
        idx = np.flatnonzero(y == c)
        if len(idx) < want:
            raise EngineError(f"class {c} has {len(idx)} images, fewer than the {want} asked for")
        take.append(rng.choice(idx, want, replace=False))
    take = np.sort(np.concatenate(take))
    rest = np.setdiff1d(np.arange(len(y)), take)
    return x[take], y[take], x[rest], y[rest]


def prepare(splits: Splits, limit: int = 0, limit_test: int = 0, val_split: float = 0.0):
    """(x_train, y_train), (x_val, y_val), (x_test, y_test) for a run's data options."""
    xtr, ytr, xte, yte = splits.x_train, splits.y_train, splits.x_test, splits.y_test
    k = splits.num_classes
    if limit:
        xtr, ytr, _, _ = balanced_subset(xtr, ytr, limit, seed=0, num_classes=k)
    if limit_test:
        xte, yte, _, _ = balanced_subset(xte, yte, limit_test, seed=0, num_classes=k)
    if not 0.0 <= val_split < 1.0:
        raise EngineError(f"--val-split must be in [0, 1), got {val_split}")
    if val_split > 0:
        xva, yva, xtr, ytr = balanced_subset(xtr, ytr, max(k, int(len(ytr) * val_split)), 1, k)
    else:
        xva, yva = xte, yte
    return (xtr, ytr), (xva, yva), (xte, yte)


# ---------------------------------------------------------------------------------------------
# tf.data pipelines: uint8 batches only; all float work happens on the device.


def _without_autotuner(ds):
    """tf.data's autotuner thread made deleting an epoch's iterator wait for its next wake-up, whose
    period doubles while the iterator lives: 6-16 s per epoch of a full CIFAR-10 run (measured in
    metrics.json's wall_breakdown, 'input pipeline start/stop'). Gathering a batch by index is >100x
    faster than a training step here, so fixed parallelism (one call per core) and a 2-batch
    prefetch lose nothing."""
    import tensorflow as tf
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


class Pipeline:
    """Holds one split on the host as uint8 tensors and serves batches of it.

    Training order is a permutation drawn from (seed, epoch), so epoch E is the same whether the run
    got there directly or through a resume, and a resume mid-epoch skips exactly the batches done.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        import tensorflow as tf
        self.n = len(x)
        with tf.device("/cpu:0"):
            self.x = tf.constant(x)
            self.y = tf.constant(y.astype(np.int32))

    def train(self, batch_size: int, seed: int, epoch: int, skip_batches: int = 0, device: str | None = None,
              shard: tuple[int, int, int] | None = None):
        """One epoch of (uint8 images, labels, indices into the split) batches. `device` (e.g.
        "/gpu:0", single-device runs only: a tf.distribute strategy places batches itself) stages
        the next batches in device memory.

        `shard` = (first replica, replicas, per-replica batch) serves one input pipeline of a
        distributed run (distribute.shard): each global batch of `batch_size` (the same images, in
        the same order, as one process would train on) is cut into per-replica batches, and this
        pipeline yields the ones of its replicas, step by step."""
        import tensorflow as tf
        steps = self.n // batch_size  # drop_remainder: static shapes for XLA and TensorRT
        perm = np.random.default_rng([seed, epoch]).permutation(self.n)
        idx = perm[:steps * batch_size].reshape(steps, batch_size)[skip_batches:].astype(np.int32)
        if shard is not None:
            first, local, per_replica = shard
            idx = idx.reshape(len(idx), -1, per_replica)[:, first:first + local].reshape(-1, per_replica)
        x, y = self.x, self.y
        ds = tf.data.Dataset.from_tensor_slices(idx)
        ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i), i),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = _without_autotuner(ds)
        if device:
            return ds.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
        return ds.prefetch(2)

    def eval(self, batch_size: int, shard: tuple[int, int] | None = None):
        """Batches of (uint8 images, labels); with `shard` = (pipeline, pipelines), every
        pipelines-th batch from the pipeline-th (a distributed run sums the results)."""
        import tensorflow as tf
        ds = tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(batch_size)
        if shard is not None:
            ds = ds.shard(shard[1], shard[0])
        return _without_autotuner(ds).prefetch(2)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.n // batch_size
