"""The decoded data set in memory (uint8 arrays and labels) and the subsets a run takes of it."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from engine.errors import EngineError


@dataclass
class Splits:
    x_train: np.ndarray  # uint8 [N,H,W,C], one H, W and C (1 or 3) for both splits
    y_train: np.ndarray  # int32 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        """(H, W, C) of every image of the data set."""
        return tuple(int(d) for d in self.x_train.shape[1:])


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable of /proc/meminfo; elsewhere the free pages),
    8 GiB if neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


MEMORY_ENV = "ENGINE_DATA_MEMORY"  # the decoded-data limit in bytes (8G, 500M, 2000000000), or none
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
NO_LIMIT = sys.maxsize
HOW_TO_CHANGE = f"set {MEMORY_ENV} to a size in bytes (e.g. 16G) or none to change the limit"


def memory_override() -> int | None:
    """The limit $ENGINE_DATA_MEMORY sets: bytes (an optional K, M, G or T is KiB ... TiB), NO_LIMIT for
    `none`; None where it is not set. A one-line error for anything else."""
    text = os.environ.get(MEMORY_ENV, "").strip().lower()
    if not text:
        return None
    if text == "none":
        return NO_LIMIT
    m = re.fullmatch(r"(\d+)\s*(?:([kmgt])(?:i?b)?|b)?", text)
    if not m or int(m.group(1)) == 0:
        raise EngineError(f"{MEMORY_ENV}={os.environ[MEMORY_ENV]!r}: expected a size in bytes above 0 (e.g. "
                          f"2000000000, 500M or 16G) or none (no limit)")
    return int(m.group(1)) * _UNITS[m.group(2) or ""]


def memory_limit() -> int:
    """The most decoded image bytes a data set may hold in memory: $ENGINE_DATA_MEMORY if set, else
    half the memory available when it is loaded (a run holds a second copy of the arrays on its way
    to the device)."""
    override = memory_override()
    return available_memory() // 2 if override is None else override


def check_fits(nbytes: int, what: str) -> None:
    """A one-line error if `nbytes` of decoded images would not fit under memory_limit()."""
    limit = memory_limit()
    if nbytes > limit:
        source = MEMORY_ENV if memory_override() is not None else "half the memory available now"
        raise EngineError(f"{what} needs {_size(nbytes)} of memory as decoded uint8 images, over the limit of "
                          f"{_size(limit)} ({source}); use a smaller data set, "
                          f"or --image-size HxW to shrink a folder's images, or {HOW_TO_CHANGE}")


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


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


def prepare(splits: Splits, limit: int = 0, limit_test: int = 0, val_split: float = 0.0, val_images: int = 0):
    """(x_train, y_train), (x_val, y_val), (x_test, y_test) for a run's data options (checked by
    engine.train.resolve.check: 0 <= val_split < 1). Without a validation split the test split
    validates, or a fixed class-balanced subset of `val_images` of it (0: all)."""
    xtr, ytr, xte, yte = splits.x_train, splits.y_train, splits.x_test, splits.y_test
    k = splits.num_classes
    if limit:
        xtr, ytr, _, _ = balanced_subset(xtr, ytr, limit, seed=0, num_classes=k)
    if limit_test:
        xte, yte, _, _ = balanced_subset(xte, yte, limit_test, seed=0, num_classes=k)
    if val_split > 0:
        xva, yva, xtr, ytr = balanced_subset(xtr, ytr, max(k, int(len(ytr) * val_split)), 1, k)
    elif 0 < val_images < len(yte):
        xva, yva, _, _ = balanced_subset(xte, yte, val_images, seed=2, num_classes=k)
    else:
        xva, yva = xte, yte
    return (xtr, ytr), (xva, yva), (xte, yte)
