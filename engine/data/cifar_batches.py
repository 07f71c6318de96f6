"""The official CIFAR-10 python batches (cifar-10-python.tar.gz), read without trusting the pickle."""
from __future__ import annotations

import io
import math
import pickle

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct as np_reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct as np_reconstruct

from engine.contract import CIFAR10_CLASSES, IMAGE_SIDE
from engine.data.splits import Splits
from engine.errors import EngineError


MAX_BATCH_BYTES = 48 << 20    # one pickled batch (an official one is 31 MB)
MAX_BATCH_IMAGES = 10_000     # what an official batch holds
MAX_IMAGES = 1_000_000        # all batches together (CIFAR-10 has 60,000)


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals that CIFAR-10's pickled batches hold: numpy arrays and dtypes (and
    `_codecs.encode`, which Python 3 uses to pickle bytes at protocol 2). Anything else -- os.system,
    builtins.eval, any class -- is refused before it can run.

    The admitted callables are bounded too: numpy pickles an array as an empty `_reconstruct(ndarray,
    (0,), 'b')` whose data the pickle then supplies (so its size is the pickle's), so any other shape
    is refused rather than allocated; `_codecs.encode` may only copy latin-1 text, and no more of it
    in all than a batch holds."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }
    MAX_ARRAYS = 16

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._arrays = 0
        self._encoded = 0

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"asks for {module}.{name}")
        if name == "_reconstruct":
            return self._reconstruct
        if name == "encode":
            return self._encode
        return super().find_class(module, name)

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError("_reconstruct of something other than a numpy array")
        dims = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise pickle.UnpicklingError(f"an array of shape {str(shape)[:60]}")
        if math.prod(dims) != 0:  # numpy writes (0,) and sets the real shape with the data
            raise pickle.UnpicklingError(f"asks to allocate an array of shape {dims} "
                                         f"({math.prod(dims):,} elements) before its data")
        self._arrays += 1
        if self._arrays > self.MAX_ARRAYS:
            raise pickle.UnpicklingError(f"more than {self.MAX_ARRAYS} arrays")
        return np_reconstruct(np.ndarray, (0,), dtype)

    def _encode(self, obj, encoding="utf-8", errors="strict"):
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise pickle.UnpicklingError("_codecs.encode other than of latin-1 text")
        self._encoded += len(obj)
        if self._encoded > MAX_BATCH_BYTES:
            raise pickle.UnpicklingError(f"more than {MAX_BATCH_BYTES} bytes of encoded text")
        return obj.encode("latin1")


def restricted_unpickle(data: bytes, name: str):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError, UnicodeError) as e:
        raise EngineError(f"refusing pickle {name}: {str(e)[:200] or type(e).__name__}") from None


def _get(d, key):
    if not isinstance(d, dict):
        raise EngineError("a CIFAR batch pickle does not hold a dict")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise EngineError(f"a CIFAR batch pickle has no {key!r} entry")


def _batch_arrays(d, name):
    data = _get(d, "data")
    if not isinstance(data, np.ndarray):
        raise EngineError(f"{name}: data is a {type(data).__name__}, expected a uint8 array [N, 3072]")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIDE * IMAGE_SIDE:
        raise EngineError(f"{name}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(data) > MAX_BATCH_IMAGES:
        raise EngineError(f"{name}: {len(data):,} images; a CIFAR batch holds at most {MAX_BATCH_IMAGES:,}")
    labels = _labels(_get(d, "labels"), name)
    if len(labels) != len(data):
        raise EngineError(f"{name}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1).copy(), labels


def _labels(labels, name) -> np.ndarray:
    """A batch's labels as int32, from a list of ints (or an integer array), or a one-line error."""
    if isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels):
        lo, hi = (min(labels), max(labels)) if labels else (0, 0)
    elif isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        lo, hi = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
    else:
        raise EngineError(f"{name}: labels must be a list of class indices, not {_what(labels)}")
    if lo < 0 or hi > np.iinfo(np.int32).max:
        raise EngineError(f"{name}: a label is {lo if lo < 0 else hi}, not a class index")
    return np.asarray(labels, dtype=np.int32).reshape(-1)


def _what(v) -> str:
    if isinstance(v, (list, tuple)):
        bad = next((x for x in v if type(x) is not int), None)
        return f"a {type(v).__name__} holding {type(bad).__name__} {str(bad)[:30]!r}"
    if isinstance(v, np.ndarray):
        return f"an array of {v.dtype} {v.shape}"
    return f"{type(v).__name__} {str(v)[:30]!r}"


def _label_names(meta, path) -> list:
    names = _get(meta, "label_names")
    where = f"{path}:batches.meta"
    if not isinstance(names, (list, tuple)) or not names:
        raise EngineError(f"{where}: label_names must be a list of class names, not {_what(names)}")
    out = []
    for n in names:
        if isinstance(n, bytes):
            try:
                n = n.decode("utf-8")
            except UnicodeDecodeError:
                raise EngineError(f"{where}: label name {n[:30]!r} is not UTF-8") from None
        if not isinstance(n, str) or not n:
            raise EngineError(f"{where}: label_names must be a list of class names, not {_what(names)}")
        out.append(n)
    if len(set(out)) != len(out):
        raise EngineError(f"{where}: label_names names a class twice")
    return out


def splits_from_batches(batches: dict, path: str) -> Splits:
    train_names = sorted((n for n in batches if n.startswith("data_batch_")),
                         key=lambda n: int(n.rsplit("_", 1)[1]))
    if not train_names or "test_batch" not in batches:
        raise EngineError(f"{path}: CIFAR batches need data_batch_N and test_batch")
    train = [_batch_arrays(batches[n], f"{path}:{n}") for n in train_names]
    xte, yte = _batch_arrays(batches["test_batch"], f"{path}:test_batch")
    if sum(len(x) for x, _ in train) + len(xte) > MAX_IMAGES:
        raise EngineError(f"{path}: more than {MAX_IMAGES:,} images in its batches")
    names = list(CIFAR10_CLASSES)
    if "batches.meta" in batches:
        names = _label_names(batches["batches.meta"], path)
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    if max(ytr.max(), yte.max()) >= len(names) or min(ytr.min(), yte.min()) < 0:
        raise EngineError(f"{path}: labels outside 0..{len(names) - 1} (the {len(names)} classes of its label names)")
    return Splits(xtr, ytr, xte, yte, names)
