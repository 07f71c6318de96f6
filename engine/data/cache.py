"""The on-disk cache of decoded sources: uint8 arrays in an .npz keyed by the source's path, size and
mtime (every file's, for a folder), so the second run starts in seconds. Written atomically, with a
record (`meta`: format version, split sizes, image shape [H, W, C], number of classes, a SHA-256 of
the class names and labels) that is checked on every read, with the arrays' shapes, dtypes and label range: a damaged or
inconsistent cache is decoded again (with a warning), never trusted."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import zipfile
import zlib

import numpy as np

from engine.data.splits import Splits
from engine.files import atomic_open

CACHE_VERSION = 3  # 2: a record of the shapes, classes and a checksum of the labels; 3: any [H, W, C]


def cache_path(path: str, cache_dir: str, variant: str = "") -> str:
    """Where the decoded arrays of source `path` are cached; `variant` names the options that change
    what is decoded from it (e.g. a resize, coarse labels)."""
    return os.path.join(cache_dir, f"{_slug(path)}-{_fingerprint(path, variant)}.npz")


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path.rstrip("/")))[:60]


def _fingerprint(path: str, variant: str = "") -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{variant}:{path}".encode("utf-8", "surrogateescape"))
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                st = _stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), path)}:{st.st_size}:"
                         f"{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    else:
        st = os.stat(path)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:  # a dangling link: the read names it
        return os.lstat(path)


def read_cache(cache_file: str) -> Splits | None:
    """The cached splits, or None (with a one-line warning) if the cache is damaged or does not
    hold what its record says: it is then decoded again, never trusted."""
    if not os.path.exists(cache_file):
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            s = Splits(z["x_train"], z["y_train"], z["x_test"], z["y_test"], [str(c) for c in z["class_names"]])
        problem = _problem(s, meta)
    except (OSError, ValueError, KeyError, TypeError, EOFError, MemoryError, zlib.error, zipfile.BadZipFile) as e:
        problem = f"{type(e).__name__}: {str(e)[:100]}"
    if problem:
        print(f"warning: the data cache {cache_file} is damaged ({problem}); decoding the data again", file=sys.stderr)
        return None
    return s


def _meta(s: Splits) -> dict:
    return {"version": CACHE_VERSION, "train": len(s.y_train), "test": len(s.y_test), "shape": list(s.image_shape),
            "num_classes": s.num_classes, "labels_sha256": _labels_digest(s)}


def _labels_digest(s: Splits) -> str:
    h = hashlib.sha256(json.dumps(list(s.class_names)).encode("utf-8", "surrogatepass"))
    for y in (s.y_train, s.y_test):
        h.update(np.ascontiguousarray(y, dtype="<i4").tobytes())
    return h.hexdigest()


def _problem(s: Splits, meta) -> str | None:
    """What is wrong with splits read from a cache, or None."""
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return "not written by this version"
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and d > 0 for d in shape)
            and shape[2] in (1, 3)):
        return f"its record's image shape {str(shape)[:40]} is not [H, W, 1 or 3]"
    for split, x, y in (("train", s.x_train, s.y_train), ("test", s.x_test, s.y_test)):
        if x.dtype != np.uint8 or x.ndim != 4 or list(x.shape[1:]) != shape:
            return f"{split} images are {x.dtype} {x.shape}, its record says [N, {', '.join(map(str, shape))}]"
        if y.dtype != np.int32 or y.shape != (len(x),) or len(x) != meta.get("train" if split == "train" else "test"):
            return f"{split} labels are {y.dtype} {y.shape} for {len(x)} images"
        if len(y) and (y.min() < 0 or y.max() >= s.num_classes):
            return f"{split} labels outside 0..{s.num_classes - 1}"
    if s.num_classes != meta.get("num_classes") or len(set(s.class_names)) != s.num_classes:
        return "its class names do not match its record"
    if _labels_digest(s) != meta.get("labels_sha256"):
        return "its labels do not match their checksum"
    return None


def write_cache(cache_file: str, s: Splits, log) -> None:
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with atomic_open(cache_file) as f:  # readers never see a half-written cache
            np.savez(f, x_train=s.x_train, y_train=s.y_train, x_test=s.x_test, y_test=s.y_test,
                     class_names=np.array(s.class_names), meta=np.array(json.dumps(_meta(s))))
    except OSError as e:
        print(f"warning: could not write the data cache {cache_file}: {e}", file=sys.stderr)
