"""Run configuration: dataclasses that are the one definition of every training flag.

`python -m engine.train --help` is generated from these fields (engine.train.resolve), `config.json`
in a run directory is `Config.to_dict()`, and a resumed run starts from its saved config with only
the flags given on the command line overriding it. Fields that a recipe sets take their default from
the default model's recipe (engine.recipes.DEFAULT); the rest are plain defaults. Imports no
TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import os
import stat
from dataclasses import dataclass, field

from engine import recipes
from engine.contract import NORMALIZATIONS, UPSAMPLE_METHODS, IMAGE_SHAPE, parse_shape, shape_text
from engine.errors import EngineError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
_RECIPE = recipes.model_recipe(recipes.DEFAULT)


@dataclass(frozen=True)
class Range:
    """The values a numeric field takes, whatever sets it: a flag, a config file or a run's config.json
    (`coerce` applies it). `low_open`/`high_open`: the bound itself is refused; `note` says what the
    value means, in the error."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def error(self, value) -> str | None:
        low_bad = self.low is not None and (value < self.low or self.low_open and value == self.low)
        high_bad = self.high is not None and (value > self.high or self.high_open and value == self.high)
        if not (low_bad or high_bad):
            return None
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'above' if self.low_open else 'at least'} {low}"
        else:
            text = f"{'below' if self.high_open else 'at most'} {high}"
        return f"must be {text}" + (f" ({self.note})" if self.note else "")


def _number(x) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


COUNT = Range(0)                                   # 0 or more
AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0.0)
POSITIVE = Range(0.0, low_open=True)
FRACTION = Range(0.0, 1.0, high_open=True)         # [0, 1)


def _opt(default, help, choices=None, range=None, **kw):
    return field(default=default, metadata={"help": help, "choices": choices, "range": range, **kw})


def _recipe(key: str, help, choices=None, range=None):
    """A field whose default is the default model's recipe value (engine.recipes): written once, there."""
    return _opt(_RECIPE[key], help, choices, range, recipe=key)


def default_cache_dir() -> str:
    return os.environ.get("ENGINE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "engine")


@dataclass
class DataConfig:
    data: str = _opt(
        "cifar10",
        "cifar10, cifar100, mnist or fashion_mnist (Keras downloads), a train/<class>/ test/<class>/ folder tree "
        "(images of one size, greyscale or colour), a .tar/.tar.gz of one, cifar-10-python.tar.gz, "
        "cifar-100-python.tar.gz, mnist.npz, a folder of MNIST's *-ubyte.gz files, digits (scikit-learn's 8x8 "
        "digits, 8x8x1) or digits32 (the same at CIFAR-10's 32x32x3); the ENGINE_DATA environment variable sets the default",
        env="ENGINE_DATA")
    label_mode: str = _opt("fine", "CIFAR-100: its 100 fine classes or its 20 coarse superclasses",
                           choices=["fine", "coarse"])
    image_size: str = _opt(
        "", "resize every image of the data to HxW, e.g. 64x64 (PIL's bilinear filter); without it a folder "
            "tree's images must all have one size")
    limit: int = _opt(0, "use a class-balanced subset of N training images (0: all)", range=COUNT)
    limit_test: int = _opt(0, "use a class-balanced subset of N test images (0: all)", range=COUNT)
    val_split: float = _opt(
        0.0, "hold out this class-balanced fraction of the training images for validation; "
             "0 validates on the test split, as the Keras examples do", range=FRACTION)
    val_images: int = _opt(
        2000, "without --val-split: validate each epoch on a fixed class-balanced subset of N test images "
              "(0: all), which keeps the per-epoch curves at a fifth of the cost; the final test accuracy and "
              "TTA always use the whole test split", range=COUNT)
    eval_every: int = _opt(1, "validate after every N-th epoch and the last (0: never during training; the final "
                              "test accuracy is the run's measurement, checkpoints/best its final weights)",
                           range=COUNT)
    prune_fraction: float = _opt(
        0.0, "sample pruning: each epoch leave out this random fraction of the well-learned training images (those "
             "whose loss the last time they were trained on is below the mean) and scale the loss of the rest of "
             "them by 1/(1-X); the epoch has fewer steps, each epoch still spans its part of the LR schedule "
             "(0: off)", range=FRACTION)
    prune_until: float = _opt(
        0.875, "sample pruning: the epochs that start from this fraction of the run's steps on train every image, "
               "unscaled (the annealing)", range=Range(0.0, 1.0, low_open=True))
    cache_dir: str = _opt(
        "", "where decoded uint8 arrays are cached (default: $ENGINE_CACHE or ~/.cache/engine)")
    # Not a flag: the data's image shape "HxWxC", written once when the run starts (engine.train.startup);
    # "" in a run saved before it was stored: CIFAR-10's 32x32x3 (engine.contract.parse_shape).
    image_shape: str = _opt("", "the training images' shape HxWxC, read from the data", internal=True)


@dataclass
class ModelConfig:
    model: str = _opt(recipes.DEFAULT, "model name from the registry (see --list-models), each bringing its training "
                                  "recipe as the defaults of the flags below; or your own: path/to/model.keras or "
                                  "pkg.module:function (returning an uncompiled Keras model), with the user recipe")
    weights: str = _opt("none", "backbone models: starting weights, imagenet (downloads), none, or a weights file")
    freeze: str = _opt("all", "backbone models: all (frozen backbone), none, or a backbone layer name: that "
                              "layer and the ones after it train (e.g. block5_conv1)")
    head: str = _opt("seed", "backbone models: the classifier head", choices=["seed", "dense512", "gap"])
    width: float = _opt(1.0, "airbench: multiply the conv group widths (64, 256, 256) by this", range=POSITIVE)
    normalization: str = _opt(
        "", "your --model FILE.keras|module:function: the input scaling it expects (a kernels mode: cifar10, torch, "
            "tf, caffe, unit, raw; default cifar10, required for a .keras file); registered models bring their own",
        choices=["", *NORMALIZATIONS])
    upsample: int = _opt(0, "enlarge the images to NxN on the device (0: the model's default size: the images' "
                            "own, or a backbone's default side)",
                         range=Range(0, 1024, note="a side in pixels, at most 1024"))
    upsample_method: str = _opt("nearest", "upsampling interpolation", choices=list(UPSAMPLE_METHODS))
    crop_pad: int = _recipe("model.crop_pad", "random-translate augmentation: pad by N pixels, crop back to the "
                                              "image's size (0: off; below the image's side)",
                           range=Range(0, 1023, note="a padding below the image's side"))
    pad_mode: str = _recipe("model.pad_mode", "padding for random crops", choices=["reflect", "constant"])
    flip: str = _recipe("model.flip", "horizontal flips: random per image and step, or alternate (a fixed "
                                  "random half of the images mirrored on even epochs, the other half on "
                                  "odd epochs)", choices=["none", "random", "alternate"])
    brightness: float = _opt(0.0, "colour jitter: add to each training image a random shift in [-X, X] of the "
                                  "model's input units (standard deviations for cifar10 normalisation; 0: off)",
                             range=NON_NEGATIVE)
    contrast: float = _opt(0.0, "colour jitter: then multiply each training image by a random factor in [1-X, 1+X] "
                                "(0: off)", range=FRACTION)
    whiten_bias_epochs: float = _opt(recipes.WHITEN_BIAS_EPOCHS, "airbench: epochs the whitening stem's bias trains "
                                     "(its LR falling to 0) before it is frozen; a fraction ends it mid-epoch, at "
                                     "the step rounded up", range=NON_NEGATIVE)
    bn_momentum: float = _opt(0.6, "airbench: BatchNorm's running-statistics momentum (Keras's: the share of the "
                                   "old statistics each step keeps)", range=FRACTION)
    data_init: bool = _opt(True, "the model's init from training data (airbench: the frozen patch-whitening "
                                 "stem); --no-data-init trains that layer from a random init instead")
    feature_cache: bool = _opt(True, "backbone models, fully frozen, no augmentation: compute the backbone's "
                                     "features once and train the head on them")
    tta: int = _recipe("model.tta", "test-time augmentation for the final test accuracy: 0 none, 1 mirror, "
                       "2 mirror + 1-px translations (6 views)", choices=[0, 1, 2])
    resize_schedule: str = _opt(
        "", "progressive resizing: SIDE:UNTIL[,SIDE:UNTIL...] trains at SIDExSIDE until that fraction of the steps, "
            "then at the next side, the rest at the full size (24:0.4: 24x24 for the first 0.4 of the steps; "
            "20:0.25,24:0.5: three phases); each augmented batch is shrunk on the device (area averaging); evaluation "
            "and the exported model take the full size (empty: off)", parse="resize_schedule")
    tta_fraction: float = _opt(1.0, "apply the TTA views only to this fraction of the test images, those whose "
                                    "plain prediction is least confident (lowest top softmax probability); the "
                                    "others keep the plain prediction (1: all images)",
                               range=Range(0.0, 1.0, low_open=True))


@dataclass
class OptimConfig:
    optimizer: str = _recipe("optim.optimizer", "optimizer; muon: Newton-Schulz-orthogonalised momentum on conv filters "
                             "(--lr, --momentum), SGD with Nesterov momentum on the rest (--aux-lr, --aux-momentum)",
                             choices=["sgd", "adam", "rmsprop", "muon"])
    lr: float = _recipe("optim.lr", "peak learning rate (the loss is the batch mean)", range=NON_NEGATIVE)
    momentum: float = _recipe("optim.momentum", "momentum (sgd, rmsprop)", range=FRACTION)
    nesterov: bool = _recipe("optim.nesterov", "Nesterov momentum (sgd)")
    sgd_momentum: str = _recipe(
        "optim.sgd_momentum", "sgd: pytorch keeps a buffer of gradients scaled by the current LR (as PyTorch's SGD); "
                   "keras a buffer of LR-scaled steps (keras.optimizers.SGD). They differ while the LR "
                   "changes", choices=["pytorch", "keras"])
    aux_lr: float = _recipe("optim.aux_lr",
                            "muon: peak SGD learning rate of dense kernels; biases and norm parameters take it "
                            "x --bias-lr-scale", range=NON_NEGATIVE)
    aux_momentum: float = _recipe("optim.aux_momentum", "muon: SGD momentum of the non-filter variables",
                                  range=FRACTION)
    weight_decay: float = _recipe("optim.weight_decay", "weight decay (0: off); muon: the per-step shrink of the "
                                  "non-filter variables at the peak LR (coupled: added to the gradient / their LR)",
                                  range=NON_NEGATIVE)
    weight_decay_mode: str = _recipe(
        "optim.weight_decay_mode", "decoupled: Keras's lr*wd*w step outside the momentum, not on biases or BatchNorm; "
              "l2: wd*w added to every trainable variable's gradient, as PyTorch SGD's weight_decay",
        choices=["decoupled", "l2"])
    bias_lr_scale: float = _recipe("optim.bias_lr_scale", "learning-rate multiplier for BatchNorm biases (sgd, rmsprop; "
                                   "their weight decay is not scaled); muon: of every bias and norm parameter, on --aux-lr",
                                   range=NON_NEGATIVE)
    schedule: str = _recipe("optim.schedule", "learning-rate schedule",
                         choices=["constant", "step", "cosine", "onecycle"])
    warmup: float = _recipe("optim.warmup", "onecycle/cosine: fraction of training spent warming up linearly "
                            "(0.2: the first fifth of the steps)",
                            range=Range(0.0, 1.0, note="a fraction of the training steps, not a number of epochs"))
    lr_start: float = _recipe("optim.lr_start", "onecycle: the LR at step 0, as a fraction of --lr", range=NON_NEGATIVE)
    lr_end: float = _recipe("optim.lr_end", "onecycle: the LR at the last step, as a fraction of --lr", range=NON_NEGATIVE)
    lr_step_epochs: int = _opt(10, "step schedule: multiply the LR by --lr-decay every N epochs", range=AT_LEAST_1)
    lr_decay: float = _opt(0.1, "step schedule: LR factor at each step", range=NON_NEGATIVE)
    label_smoothing: float = _recipe("optim.label_smoothing", "label smoothing of the cross-entropy loss",
                                     range=FRACTION)
    epochs: float = _recipe("optim.epochs", "training epochs; a fraction ends the last epoch early", range=POSITIVE)
    batch_size: int = _recipe("optim.batch_size", "global batch size (split over replicas)", range=AT_LEAST_1)
    lookahead: bool = _recipe("optim.lookahead", "every 5 steps pull the weights and BatchNorm statistics back to a slow "
                                 "copy, decay 0.95^5 * (step/total)^3; the slow copy is the final model")
    early_stop: int = _opt(0, "stop after N epochs without a better validation accuracy (0: off)", range=COUNT)


@dataclass
class RunConfig:
    out: str = _opt("", "run directory: config, history, curves, checkpoints, metrics (default: a new folder "
                    "per run, runs/MODEL-DATE-TIME)")
    resume: bool = _opt(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = _opt(False, "replace whatever run is in --out")
    seed: int = _opt(0, "seed for weights, shuffling and augmentation", range=Range(0, 2**32 - 1))
    xla: bool | str = _opt(
        "auto", "jit-compile the train step with XLA: --xla, --no-xla, or auto: on GPUs on; on CPUs whichever of "
                "the two short timed trials of this model found faster (cached per CPU, model, batch and "
                "TensorFlow version)", auto=True, env="ENGINE_XLA")
    amp: bool | str = _opt(
        "auto", "mixed precision: bfloat16 on CPUs and on GPUs of compute capability >= 8.0, float16 + loss "
                "scaling on older GPUs. --amp, --no-amp, or auto: on GPUs on; on CPUs only where the timed "
                "trials measured it faster than float32", auto=True, env="ENGINE_AMP")
    steps_per_call: int = _opt(10, "train steps run inside one tf.function call", range=AT_LEAST_1)
    checkpoint_every: int = _opt(0, "also checkpoint every N steps (0: only at epoch ends)", range=COUNT)
    keep_checkpoints: int = _opt(3, "how many recent checkpoints to keep", range=AT_LEAST_1)
    deterministic: bool = _opt(False, "enable TensorFlow op determinism (bitwise repeatable on CPU)")
    profile: int = _opt(0, "write a TensorBoard profiler trace of N train calls (after the first, which traces) "
                           "into OUT/tb; view it in TensorBoard's Profile tab (pip install tensorboard-plugin-profile)",
                       range=COUNT)
    compile_cache: bool = _opt(True, "keep XLA's compiled train steps under the cache directory (--cache-dir), "
                                     "so a later run of the same model, batch and precision on this machine "
                                     "loads them instead of compiling again")
    strategy: str = _opt("auto", "tf.distribute strategy: auto (multiworker if TF_CONFIG lists several workers, "
                         "mirrored on several GPUs, else default), default, mirrored, multiworker",
                         choices=STRATEGIES)
    quiet: bool = _opt(False, "one line per epoch instead of a progress bar")
    recipe: str = _opt("", "start from a named recipe (see --list-recipes); flags override its values")
    init_from: str = _opt("", "start a new run from another run's weights (RUN, RUN:best, RUN:latest; default "
                              "best) or a Keras .weights.h5 file, with a new optimizer and schedule: the second "
                              "phase of a fine-tune")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}

# How `engine train --help` groups the flags: by task, in the order a user reads them (every field once;
# tests/unit/test_resolve.py checks that). The config sections above are how config.json stores them.
HELP_GROUPS = {
    "start from": ["recipe", "init_from"],
    "data": ["data", "label_mode", "image_size", "limit", "limit_test", "val_split", "val_images", "eval_every",
             "cache_dir"],
    "model": ["model", "weights", "freeze", "head", "width", "normalization", "upsample", "upsample_method",
              "data_init", "feature_cache", "whiten_bias_epochs", "bn_momentum"],
    "augmentation and test-time augmentation (TTA)": ["crop_pad", "pad_mode", "flip", "brightness",
                                                      "contrast", "resize_schedule", "tta", "tta_fraction"],
    "optimisation": ["optimizer", "lr", "momentum", "nesterov", "sgd_momentum", "aux_lr", "aux_momentum", "weight_decay",
                     "weight_decay_mode", "bias_lr_scale", "schedule", "warmup", "lr_start", "lr_end",
                     "lr_step_epochs", "lr_decay", "label_smoothing", "lookahead"],
    "length": ["epochs", "batch_size", "prune_fraction", "prune_until", "early_stop"],
    "speed": ["xla", "amp", "steps_per_call", "strategy", "deterministic", "profile", "compile_cache"],
    "run and checkpoints": ["out", "resume", "overwrite", "seed", "checkpoint_every", "keep_checkpoints", "quiet"],
}

# Fields that must match for --resume: changing them makes the checkpoint a different experiment.
RESUME_FIXED = {("model", "model"), ("model", "upsample"), ("data", "data"), ("data", "limit"),
                ("optim", "optimizer"), ("optim", "sgd_momentum"), ("optim", "batch_size"), ("run", "seed")}

# Fields added after runs were saved without them: the value such a run was trained with.
LEGACY = {("optim", "sgd_momentum"): "keras", ("data", "val_images"): 0}
# Named data sources whose images changed shape: a run saved without data.image_shape trained on the
# 32x32x3 form, which now has the other name (`digits` was pixel-repeated to 32x32x3 then; it is 8x8x1 now).
LEGACY_DATA = {"digits": "digits32"}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d, source: str = "config") -> "Config":
        """The config a run saved (`Config.to_dict()`), every value checked as a flag's would be: a
        one-line error naming `source` and the key. Sections and fields it does not know are skipped
        (a run saved by another version)."""
        if not isinstance(d, dict):
            raise EngineError(f"{source}: expected a JSON object of sections ({', '.join(SECTIONS)}), "
                              f"got {shown(d)}")
        for (section, name), value in LEGACY.items():
            if isinstance(d.get(section), dict) and name not in d[section]:
                d = {**d, section: {**d[section], name: value}}
        data = d.get("data")
        if isinstance(data, dict) and not data.get("image_shape") and data.get("data") in LEGACY_DATA:
            d = {**d, "data": {**data, "data": LEGACY_DATA[data["data"]]}}
        cfg = cls()
        for section, values in d.items():
            if section not in SECTIONS:
                continue
            if not isinstance(values, dict):
                raise EngineError(f"{source}: section {section} is {shown(values)}, expected an object of its fields")
            known = _field_names(SECTIONS[section])
            typed = {}
            for name, value in values.items():
                if name in known:
                    try:
                        typed[name] = coerce(section, name, value)
                    except ValueError as e:
                        raise EngineError(f"{source}: {section}.{name} is {shown(value)}, {e}") from None
            cfg = cfg.replace(section, **typed)
        return cfg

    def replace(self, section: str, **kw) -> "Config":
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **kw)})

    def with_overrides(self, overrides: dict) -> "Config":
        cfg = self
        for (section, name), value in overrides.items():
            cfg = cfg.replace(section, **{name: value})
        return cfg

    def summary(self) -> str:
        lines = []
        for section in SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            lines.append(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        return "config:\n" + "\n".join(lines)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The run's image shape [H, W, C] (a run saved without one: 32x32x3)."""
        return parse_shape(self.data.image_shape) if self.data.image_shape else IMAGE_SHAPE

    def save(self, path: str) -> None:
        from engine.files import write_json
        write_json(path, self.to_dict())  # whole or not at all, like every run file

    @classmethod
    def load(cls, path: str) -> "Config":
        """A run's config.json, checked (Config.from_dict)."""
        raw = read_small(path, "config")
        try:
            d = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise EngineError(f"cannot read config {path}: {_one_line(e)}") from None
        return cls.from_dict(d, source=f"config {path}")


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kilobytes; anything past this is not one


def read_small(path: str, what: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file `path` of at most `limit` bytes, or a one-line error naming
    `what` it is: a device, a FIFO (never waited on) or a folder is refused, and nothing larger is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise EngineError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EngineError(f"{what} {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise EngineError(f"{what} {path} is larger than {limit // 1024} KiB; a config file is a few kilobytes")
    return raw


def _one_line(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return " ".join(str(e).split())[:200]


def shown(value) -> str:
    """A value as an error message shows it: a scalar's repr (cut short), else its kind."""
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return {dict: "a mapping", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _field_names(dc) -> set:
    return {f.name for f in dataclasses.fields(dc)}


def flag(name: str) -> str:
    """The command-line flag of a config field."""
    return "--" + name.replace("_", "-")


AUTO = "auto"
_SWITCH = {"auto": AUTO, "on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False,
           "no": False}


# Every config field by section, and the section of each field name (the names are unique).
FIELDS = {section: {f.name: f for f in dataclasses.fields(dc)} for section, dc in SECTIONS.items()}
SECTION_OF = {name: section for section, fields in FIELDS.items() for name in fields}
_KINDS = {"bool": bool, "int": int, "float": float, "str": str}


def coerce(section: str, name: str, value):
    """`value` as config field section.name holds it (an int given for a float becomes a float), or
    ValueError saying what the field takes. The one check of a value, whatever sets it: a flag, a
    config file, a run's config.json (and engine.train.resolve.check on the config they make)."""
    f = FIELDS[section][name]
    if f.metadata.get("auto"):
        try:
            return switch(value)
        except ValueError:
            raise ValueError("expected true, false or auto") from None
    if (section, name) == ("data", "image_shape"):
        return shape_text(parse_shape(value)) if value else ""  # ValueError says what it takes
    if f.metadata.get("parse") == "resize_schedule":
        if not isinstance(value, str):
            raise ValueError("expected a str")
        return resize_text(parse_resize(value))  # ValueError says what it takes
    kind = _KINDS[str(f.type)]
    if kind is float and isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
        value = float(value)  # YAML reads 1e-3 (no dot) as text; it is the number the user wrote
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, str))
    choices = f.metadata.get("choices")
    if not ok or (choices and value not in choices):
        raise ValueError(f"expected one of {', '.join(map(str, choices))}" if choices else
                         f"expected {'an' if kind is int else 'a'} {kind.__name__}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
    problem = f.metadata.get("range") and f.metadata["range"].error(value)
    if problem:
        raise ValueError(problem)
    return value


RESIZE_FORM = "SIDE:UNTIL[,SIDE:UNTIL...], e.g. 24:0.4 (24x24 for the first 40% of the steps)"


def parse_resize(text: str) -> tuple[tuple[int, float], ...]:
    """--resize-schedule's phases, ((side, until), ...): each side a whole number of pixels, larger than
    the one before; each `until` a fraction of the run's steps in (0, 1), larger than the one before
    ("": no phases, progressive resizing off). ValueError says what is wrong."""
    if not text.strip():
        return ()
    phases = []
    for part in text.split(","):
        side, colon, until = part.strip().partition(":")
        try:
            if not colon:
                raise ValueError
            side, until = int(side), float(until)
        except ValueError:
            raise ValueError(f"expected {RESIZE_FORM}") from None
        if side < 1:
            raise ValueError(f"a side must be a positive number of pixels, not {side}")
        if not 0.0 < until < 1.0:
            raise ValueError(f"each UNTIL is a fraction of the steps in (0, 1) (the last phase is at the full size), "
                             f"not {until:g}")
        if phases and side <= phases[-1][0]:
            raise ValueError(f"the sides must grow from phase to phase ({phases[-1][0]}, then {side})")
        if phases and until <= phases[-1][1]:
            raise ValueError(f"the fractions must grow from phase to phase ({phases[-1][1]:g}, then {until:g})")
        phases.append((side, until))
    return tuple(phases)


def resize_text(phases) -> str:
    """The --resize-schedule text of phases ((side, until), ...): how config.json stores them."""
    return ",".join(f"{side}:{float(until)!r}" for side, until in phases)


def switch(text) -> bool | str:
    """A value of an on/off/auto field (--amp, --xla): True, False or "auto"."""
    if isinstance(text, bool) or text == AUTO:
        return text
    key = str(text).strip().lower()
    if key not in _SWITCH:
        raise ValueError(text)
    return _SWITCH[key]


def env_defaults() -> dict:
    """{(section, name): value} of the fields whose default an environment variable sets (ENGINE_DATA,
    ENGINE_AMP, ENGINE_XLA)."""
    out = {}
    for section, dc in SECTIONS.items():
        for f in dataclasses.fields(dc):
            env = f.metadata.get("env")
            if env and os.environ.get(env):
                value = os.environ[env]
                if f.metadata.get("auto"):
                    try:
                        value = switch(value)
                    except ValueError:
                        raise EngineError(f"{env}={value!r}: expected on, off or auto") from None
                out[(section, f.name)] = value
    return out


def add_data_flags(group, source_help: str) -> None:
    """--data, --cache-dir, --label-mode and --image-size, as every tool that reads a data set takes them
    (argparse group)."""
    group.add_argument("--data", default=data_default(), metavar="SOURCE",
                       help=f"{source_help}; $ENGINE_DATA sets the default")
    group.add_argument("--cache-dir", default="", metavar="DIR",
                       help="decoded-data cache (empty: $ENGINE_CACHE or ~/.cache/engine)")
    # The flags that change the arrays a source decodes to, as engine train takes them; None: not given
    # (the default, or a run's own, engine.evaluate.run_data).
    group.add_argument("--label-mode", choices=FIELDS["data"]["label_mode"].metadata["choices"], default=None,
                       help=FIELDS["data"]["label_mode"].metadata["help"] + " (default: fine)")
    group.add_argument("--image-size", default=None, metavar="HxW", help=FIELDS["data"]["image_size"].metadata["help"])


def data_default() -> str:
    """The --data default of every tool: $ENGINE_DATA, else the Keras download."""
    return env_defaults().get(("data", "data"), DataConfig().data)
