"""The on-disk cache of decoded sources: uint8 arrays in an .npz keyed by the source's path, size and
mtime (every file's, for a folder), so the second run starts in seconds. Written atomically; a damaged
cache is rebuilt, never trusted."""
from __future__ import annotations

import hashlib
import os
import re
import sys
import zlib

import numpy as np

from engine.data.splits import Splits
from engine.files import atomic_open

CACHE_VERSION = 1


def cache_path(path: str, cache_dir: str) -> str:
    """Where the decoded arrays of source `path` are cached."""
    return os.path.join(cache_dir, f"{_slug(path)}-{_fingerprint(path)}.npz")


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


def read_cache(cache_file: str) -> Splits | None:
    if not os.path.exists(cache_file):
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            return Splits(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                          [str(c) for c in z["class_names"]])
    except (OSError, ValueError, KeyError, zlib.error):
        return None  # a damaged cache is rebuilt, never trusted


def write_cache(cache_file: str, s: Splits, log) -> None:
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with atomic_open(cache_file) as f:  # readers never see a half-written cache
            np.savez(f, x_train=s.x_train, y_train=s.y_train, x_test=s.x_test, y_test=s.y_test,
                     class_names=np.array(s.class_names))
    except OSError as e:
        print(f"warning: could not write the data cache {cache_file}: {e}", file=sys.stderr)
