"""The official CIFAR-10 and CIFAR-100 python pickles (cifar-10-python.tar.gz, cifar-100-python.tar.gz),
read without trusting the pickle."""
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
MAX_CIFAR100_BYTES = 200 << 20  # CIFAR-100's train pickle (an official one is 155 MB, 50,000 images)
MAX_CIFAR100_IMAGES = 50_000


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

    def __init__(self, *args, max_text: int = MAX_BATCH_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self._arrays = 0
        self._encoded = 0
        self._max_text = max_text

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
        if self._encoded > self._max_text:
            raise pickle.UnpicklingError(f"more than {self._max_text} bytes of encoded text")
        return obj.encode("latin1")


def restricted_unpickle(data: bytes, name: str, max_text: int = MAX_BATCH_BYTES):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes", max_text=max_text).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError, UnicodeError) as e:
        raise EngineError(f"refusing pickle {name}: {str(e)[:200] or type(e).__name__}") from None


def _get(d, key, name):
    if not isinstance(d, dict):
        raise EngineError(f"{name}: the pickle holds a {type(d).__name__}, not the dict of a CIFAR batch")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise EngineError(f"{name}: the CIFAR pickle has no {key!r} entry")


def _batch_arrays(d, name, label_key="labels", max_images=MAX_BATCH_IMAGES):
    data = _get(d, "data", name)
    if not isinstance(data, np.ndarray):
        raise EngineError(f"{name}: data is a {type(data).__name__}, expected a uint8 array [N, 3072]")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIDE * IMAGE_SIDE:
        raise EngineError(f"{name}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(data) > max_images:
        raise EngineError(f"{name}: {len(data):,} images; a CIFAR batch holds at most {max_images:,}")
    labels = _labels(_get(d, label_key, name), name)
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


def _label_names(meta, path, key="label_names", where="batches.meta") -> list:
    where = f"{path}:{where}"
    names = _get(meta, key, where)
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
            raise EngineError(f"{where}: {key} must be a list of class names, not {_what(names)}")
        out.append(n)
    if len(set(out)) != len(out):
        raise EngineError(f"{where}: {key} names a class twice")
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


# the official CIFAR-100 class names (its meta file's order), for the Keras download, which has none
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2").split()
CIFAR100_FILES = ("train", "test", "meta")


def splits_from_cifar100(pickles: dict, path: str, label_mode: str = "fine") -> Splits:
    """Splits of the unpickled `train`, `test` and `meta` of cifar-100-python: the 100 fine labels,
    or with label_mode "coarse" the 20 superclasses; class names from `meta`."""
    missing = [n for n in CIFAR100_FILES if n not in pickles]
    if missing:
        raise EngineError(f"{path}: CIFAR-100 needs train, test and meta; {missing[0]} is missing")
    key = f"{label_mode}_labels"
    xtr, ytr = _batch_arrays(pickles["train"], f"{path}:train", key, MAX_CIFAR100_IMAGES)
    xte, yte = _batch_arrays(pickles["test"], f"{path}:test", key, MAX_CIFAR100_IMAGES)
    names = _label_names(pickles["meta"], path, f"{label_mode}_label_names", "meta")
    if max(ytr.max(initial=0), yte.max(initial=0)) >= len(names):
        raise EngineError(f"{path}: {label_mode} labels outside 0..{len(names) - 1} "
                          f"(the {len(names)} classes of its {label_mode}_label_names)")
    return Splits(xtr, ytr, xte, yte, names)
