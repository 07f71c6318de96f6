"""The official CIFAR-10 python batches (cifar-10-python.tar.gz), read without trusting the pickle."""
from __future__ import annotations

import io
import pickle

import numpy as np

from engine.contract import CIFAR10_CLASSES, IMAGE_SIDE
from engine.data.splits import Splits
from engine.errors import EngineError


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
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIDE * IMAGE_SIDE:
        raise EngineError(f"{name}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(labels) != len(data):
        raise EngineError(f"{name}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1).copy(), labels


def splits_from_batches(batches: dict, path: str) -> Splits:
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
