"""What every exporter starts from: a model with the preprocessing it was trained with, loaded from a
run directory (its best or latest checkpoint) or from a saved `.keras` model."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import glob
import json
import logging
import os
import re
import sys

import keras
import tensorflow as tf

from engine import __version__, files, layout, models
from engine.config import Config, data_default
from engine.layout import CONFIG_FILE, is_run_dir
from engine.contract import CIFAR10_CLASSES, IMAGE_SHAPE, INPUT, NORMALIZATIONS, OUTPUT, contract_text
from engine.errors import EngineError, is_disk_full
from engine.kernels import Preprocess
from engine.models.user import check as check_model
from engine.models.user import ends_in_softmax, load_keras_file


class Exportable:
    """A model with the preprocessing it was trained with: what every exporter starts from."""

    def __init__(self, model, preprocess: Preprocess, class_names: list, metadata: dict, data_source: str,
                 image_shape: tuple = IMAGE_SHAPE, data_options: dict | None = None):
        self.image_shape = tuple(int(d) for d in image_shape)  # the uint8 [H, W, C] images it takes
        self.model = model
        self.preprocess = preprocess
        self.class_names = class_names
        self.metadata = metadata
        self.data_source = data_source  # where int8 calibration images come from unless told
        # ... read as the run read it: its label_mode, image_size and cache_dir (data.load's options)
        self.data_options = dict(data_options or {})

    @property
    def size(self) -> int:
        return self.preprocess.side

    def serve_fn(self):
        model, preprocess = self.model, self.preprocess

        @tf.function(input_signature=[tf.TensorSpec([None, *self.image_shape], tf.uint8, name=INPUT)])
        def serve(images):
            return {OUTPUT: tf.identity(model(preprocess(images), training=False), name=OUTPUT)}
        return serve


@contextlib.contextmanager
def writing(out: str):
    """Around an exporter's write of `out`: a full disk or an unwritable folder is one line (the
    writes are atomic, so nothing is left under `out`)."""
    try:
        yield
    except EngineError:
        raise
    except (OSError, tf.errors.OpError, RuntimeError) as e:  # OpenVINO: "basic_ios::clear: iostream error"
        message = " ".join(str(getattr(e, "message", None) or e).split())
        if is_disk_full(e) or _disk_full(out):  # (OpenVINO says only "iostream error": the space is looked at)
            raise files.disk_full(out) from None
        if isinstance(e, RuntimeError) and not isinstance(e, tf.errors.OpError) and "iostream" not in message:
            raise  # not a write error
        raise EngineError(f"cannot write {out}: {getattr(e, 'strerror', None) or message[:160]}") from None


def _disk_full(out: str, below: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(out)))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < below


@models.global_policy("float32")  # an export's graph is float32
def load_run(path: str, checkpoint: str = "best") -> Exportable:
    """Rebuild a run's model in float32 and restore its best (or latest) checkpoint."""
    if not is_run_dir(path):
        raise EngineError(f"{path} is not a run directory (no {CONFIG_FILE})")
    cfg = Config.load(layout.run_file(path, CONFIG_FILE))
    classes_file = layout.run_file(path, layout.CLASSES_FILE)
    try:
        with open(classes_file) as f:
            class_names = json.load(f)
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot read the class names of {path}: {e}") from None
    if not isinstance(class_names, list) or not class_names or not all(isinstance(n, str) for n in class_names):
        raise EngineError(f"{classes_file} is damaged: expected a JSON list of class names, got "
                          f"{json.dumps(class_names)[:60]}")
    ckpt_dir = layout.checkpoint_dir(path, checkpoint)
    latest = find_checkpoint(ckpt_dir, f"no {checkpoint} checkpoint in {path}")
    spec = models.get(cfg.model.model)
    shape = cfg.image_shape  # (a run saved without one: 32x32x3)
    preprocess = models.preprocess_for(spec, cfg.model, shape)
    # The checkpoint holds every weight: never download or read the run's starting weights again.
    model = models.build(spec.name, preprocess.size, len(class_names), dataclasses.replace(cfg.model, weights="none"),
                         channels=preprocess.channels)
    restore_model(model, latest, class_names, cfg.model.model)
    meta = {"engine_version": __version__, "source_run": os.path.abspath(path), "checkpoint": latest,
            "class_names": class_names, "config": cfg.to_dict(), "contract": contract_text(shape),
            "input_side": preprocess.side, "input_shape": list(shape)}
    return Exportable(model, preprocess, class_names, meta, cfg.data.data, shape,
                      {"label_mode": cfg.data.label_mode, "image_size": cfg.data.image_size,
                       "cache_dir": cfg.data.cache_dir})


@contextlib.contextmanager
def tf_logs_off():
    """TensorFlow's Python warnings (an unparsable checkpoint state file, the values a failed restore
    left unread) kept off stderr: the one-line error says what went wrong."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        gc.collect()  # a failed restore's status object warns when it is collected: here, while quiet
        logger.setLevel(level)


def find_checkpoint(ckpt_dir: str, missing: str) -> str:
    """The checkpoint `ckpt_dir`'s state file names; where that file is unreadable, the newest
    `ckpt-N` beside it (with a warning). `missing`: the error where there is none."""
    with tf_logs_off():
        try:
            latest = tf.train.latest_checkpoint(ckpt_dir)
        except (ValueError, tf.errors.OpError):  # a state file that is not even text (UnicodeDecodeError)
            latest = None
    if latest is not None:
        return latest
    numbered = []
    for index in glob.glob(os.path.join(glob.escape(ckpt_dir), "ckpt-*.index")):
        m = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
        if m:
            numbered.append((int(m.group(1)), index[:-len(".index")]))
    state = os.path.join(ckpt_dir, "checkpoint")
    if not numbered:
        raise EngineError(missing)
    newest = max(numbered)[1]
    why = "unreadable" if os.path.exists(state) else "missing"
    print(f"warning: the checkpoint state file {state} is {why}; using {newest}, the newest checkpoint beside it",
          file=sys.stderr)
    return newest


def restore_model(model, path: str, class_names: list, model_name: str) -> None:
    """Restore `model`'s weights from the checkpoint `path` (every variable must match), or one line
    saying which file is damaged or how the checkpoint differs from the model."""
    try:
        saved = tf.train.list_variables(path)  # reads the .index file only
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise EngineError(f"cannot restore {path}: its index file {path}.index is unreadable or truncated "
                          f"({type(e).__name__})") from None
    # Every variable's shape: a training checkpoint stores a model weight under the first path to it,
    # which may be the optimizer's ("optimizer/_trainable_variables/..."), not "model/..."
    theirs = collections.Counter(tuple(shape) for name, shape in saved if name.endswith("VARIABLE_VALUE"))
    ours = collections.Counter(tuple(v.shape) for v in model.weights)
    if ours - theirs:  # a weight of the model with no counterpart of its shape: restoring cannot succeed
        raise EngineError(f"cannot restore {path}: {_mismatch(ours, theirs, class_names, model_name)}")
    data = ", ".join(sorted(glob.glob(glob.escape(path) + ".data-*"))) or f"{path}.data-*"
    with tf_logs_off():
        try:
            tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
        except (ValueError, AssertionError):
            why = _mismatch(ours, theirs, class_names, model_name)
        except (tf.errors.OpError, IndexError) as e:  # IndexError: "Read less bytes than requested"
            why = f"its data file {data} is unreadable or truncated ({type(e).__name__})"
        else:
            return
    raise EngineError(f"cannot restore {path}: {why}")


def _mismatch(ours: collections.Counter, theirs: collections.Counter, class_names: list, model_name: str) -> str:
    """How the checkpoint's weights (`theirs`: a Counter of shapes) differ from the model's (`ours`), in words."""
    only_ours, only_theirs = ours - theirs, theirs - ours
    n = len(class_names)
    outputs = set()
    for shape in only_ours:
        match = {t[-1] for t in only_theirs if t and shape and len(t) == len(shape) and t[:-1] == shape[:-1]}
        if not shape or shape[-1] != n or len(match) != 1:
            break
        outputs |= match
    else:
        if len(outputs) == 1:
            return (f"its model has {outputs.pop()} outputs but {layout.CLASSES_FILE} names {n} classes "
                    f"({layout.CLASSES_FILE} does not belong to this run)")
    differ = (f"{sum(only_ours.values())} of its {sum(ours.values())} weights have no counterpart of that shape"
              if only_ours else "the same shapes, in other layers")
    if models.is_user_model(model_name):
        return (f"its weights do not fit the model --model {model_name} builds now ({differ}): was that file or "
                f"function changed since the run trained?")
    return (f"its weights do not fit the model {CONFIG_FILE} describes ({model_name}: {differ}); {CONFIG_FILE} "
            f"does not belong to this run")


@models.global_policy("float32")  # an export's graph is float32
def load_keras(path: str, normalization: str | None, upsample_method: str = "nearest",
               class_names: list | None = None) -> Exportable:
    """A saved `.keras` model (e.g. from a `model.fit` script) with the input scaling it was trained
    with (`normalization`, a kernels.normalize mode). A square RGB model of side >= 32 takes 32x32x3 images
upsampled to its side; another takes images of its own input shape.
    A model ending in softmax is exported as logits = log(probabilities): same argmax, same softmax."""
    from engine.models import airbench, layers  # noqa: F401 - register the engine's layers and initializers
    if not os.path.isfile(path):
        raise EngineError(f"model not found: {path}")
    if normalization not in NORMALIZATIONS:
        raise EngineError(f"a .keras model needs --normalization, the input scaling it was trained with: "
                          f"one of {', '.join(NORMALIZATIONS)}")
    model = load_keras_file(path, path)
    if not isinstance(model, keras.Model):
        raise EngineError(f"{path}: expected a Keras model, got {type(model).__name__}")
    check_model(model, path)
    shape = tuple(model.inputs[0].shape[1:])
    outputs = int(model.outputs[0].shape[-1])
    names = class_names or (list(CIFAR10_CLASSES) if outputs == 10 else [str(i) for i in range(outputs)])
    if len(names) != outputs:
        raise EngineError(f"--class-names names {len(names)} classes but {path} has {outputs} outputs")
    softmax = ends_in_softmax(model)
    net = model
    if softmax:  # probabilities -> logits, once, here
        inputs = keras.Input(shape, name=INPUT)
        net = keras.Model(inputs, keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(p, 1e-30)),
                                                       name=OUTPUT)(model(inputs)))
    h, w, c = (int(d) for d in shape)
    # An RGB square model of side >= 32 takes CIFAR-10's 32x32x3 upsampled to its side; any other, its own images.
    image = IMAGE_SHAPE if (c == 3 and h == w and h >= IMAGE_SHAPE[0]) else (h, w, c)
    preprocess = Preprocess(h if h == w else (h, w), normalization, upsample_method, channels=c)
    meta = {"engine_version": __version__, "source_model": os.path.abspath(path), "class_names": names,
            "normalization": normalization, "softmax_to_logits": softmax, "contract": contract_text(image),
            "input_side": preprocess.side, "input_shape": list(image)}
    return Exportable(net, preprocess, names, meta, data_default(), image)
