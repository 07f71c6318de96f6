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
import os
from dataclasses import dataclass, field

from engine import recipes
from engine.contract import NORMALIZATIONS, UPSAMPLE_METHODS
from engine.errors import EngineError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
_RECIPE = recipes.model_recipe(recipes.DEFAULT)


def _opt(default, help, choices=None, **kw):
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


def _recipe(key: str, help, choices=None):
    """A field whose default is the default model's recipe value (engine.recipes): written once, there."""
    return _opt(_RECIPE[key], help, choices, recipe=key)


CONFIG_FILE = "config.json"


def is_run_dir(path: str) -> bool:
    """A directory engine.train made a run of (it writes config.json once the run has started)."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def default_cache_dir() -> str:
    return os.environ.get("ENGINE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "engine")


@dataclass
class DataConfig:
    data: str = _opt(
        "cifar10",
        "cifar10 (Keras download), a train/<class>/ test/<class>/ folder tree, a .tar/.tar.gz of "
        "one, or cifar-10-python.tar.gz; the ENGINE_DATA environment variable sets the default",
        env="ENGINE_DATA")
    limit: int = _opt(0, "use a class-balanced subset of N training images (0: all)")
    limit_test: int = _opt(0, "use a class-balanced subset of N test images (0: all)")
    val_split: float = _opt(
        0.0, "hold out this class-balanced fraction of the training images for validation; "
             "0 validates on the test split, as the Keras examples do")
    val_images: int = _opt(
        2000, "without --val-split: validate each epoch on a fixed class-balanced subset of N test images "
              "(0: all), which keeps the per-epoch curves at a fifth of the cost; the final test accuracy and "
              "TTA always use the whole test split")
    cache_dir: str = _opt(
        "", "where decoded uint8 arrays are cached (default: $ENGINE_CACHE or ~/.cache/engine)")


@dataclass
class ModelConfig:
    model: str = _opt(recipes.DEFAULT, "model name from the registry (see --list-models), each bringing its training "
                                  "recipe as the defaults of the flags below; or your own: path/to/model.keras or "
                                  "pkg.module:function (returning an uncompiled Keras model), with the user recipe")
    weights: str = _opt("none", "backbone models: starting weights, imagenet (downloads), none, or a weights file")
    freeze: str = _opt("all", "backbone models: all (frozen backbone), none, or a backbone layer name: that "
                              "layer and the ones after it train (e.g. block5_conv1)")
    head: str = _opt("seed", "backbone models: the classifier head", choices=["seed", "dense512", "gap"])
    width: float = _opt(1.0, "airbench: multiply the conv group widths (64, 256, 256) by this")
    normalization: str = _opt(
        "", "your --model FILE.keras|module:function: the input scaling it expects (a kernels mode: cifar10, torch, "
            "tf, caffe, unit, raw; default cifar10, required for a .keras file); registered models bring their own",
        choices=["", *NORMALIZATIONS])
    upsample: int = _opt(0, "resize 32x32 inputs to NxN on the device (0: the model's default size)")
    upsample_method: str = _opt("nearest", "upsampling interpolation", choices=list(UPSAMPLE_METHODS))
    crop_pad: int = _recipe("model.crop_pad", "random-translate augmentation: pad by N pixels, crop back to 32 (0: off)")
    pad_mode: str = _recipe("model.pad_mode", "padding for random crops", choices=["reflect", "constant"])
    flip: str = _recipe("model.flip", "horizontal flips: random per image and step, or alternate (a fixed "
                                  "random half of the images mirrored on even epochs, the other half on "
                                  "odd epochs)", choices=["none", "random", "alternate"])
    data_init: bool = _opt(True, "the model's init from training data (airbench: the frozen patch-whitening "
                                 "stem); --no-data-init trains that layer from a random init instead")
    feature_cache: bool = _opt(True, "backbone models, fully frozen, no augmentation: compute the backbone's "
                                     "features once and train the head on them")
    tta: int = _recipe("model.tta", "test-time augmentation for the final test accuracy: 0 none, 1 mirror, "
                       "2 mirror + 1-px translations (6 views)", choices=[0, 1, 2])


@dataclass
class OptimConfig:
    optimizer: str = _recipe("optim.optimizer", "optimizer; muon: Newton-Schulz-orthogonalised momentum on conv filters "
                             "(--lr, --momentum), SGD with Nesterov momentum on the rest (--aux-lr, --aux-momentum)",
                             choices=["sgd", "adam", "rmsprop", "muon"])
    lr: float = _recipe("optim.lr", "peak learning rate (the loss is the batch mean)")
    momentum: float = _recipe("optim.momentum", "momentum (sgd, rmsprop)")
    nesterov: bool = _recipe("optim.nesterov", "Nesterov momentum (sgd)")
    sgd_momentum: str = _recipe(
        "optim.sgd_momentum", "sgd: pytorch keeps a buffer of gradients scaled by the current LR (as PyTorch's SGD); "
                   "keras a buffer of LR-scaled steps (keras.optimizers.SGD). They differ while the LR "
                   "changes", choices=["pytorch", "keras"])
    aux_lr: float = _recipe("optim.aux_lr",
                            "muon: peak SGD learning rate of dense kernels; biases and norm parameters take it "
                            "x --bias-lr-scale")
    aux_momentum: float = _recipe("optim.aux_momentum", "muon: SGD momentum of the non-filter variables")
    weight_decay: float = _recipe("optim.weight_decay", "weight decay (0: off); muon: the per-step shrink of the "
                                  "non-filter variables at the peak LR (coupled: added to the gradient / their LR)")
    weight_decay_mode: str = _recipe(
        "optim.weight_decay_mode", "decoupled: Keras's lr*wd*w step outside the momentum, not on biases or BatchNorm; "
              "l2: wd*w added to every trainable variable's gradient, as PyTorch SGD's weight_decay",
        choices=["decoupled", "l2"])
    bias_lr_scale: float = _recipe("optim.bias_lr_scale", "learning-rate multiplier for BatchNorm biases (sgd, rmsprop; "
                                   "their weight decay is not scaled); muon: of every bias and norm parameter, on --aux-lr")
    schedule: str = _recipe("optim.schedule", "learning-rate schedule",
                         choices=["constant", "step", "cosine", "onecycle"])
    warmup: float = _recipe("optim.warmup", "onecycle/cosine: fraction of training spent warming up linearly")
    lr_start: float = _recipe("optim.lr_start", "onecycle: the LR at step 0, as a fraction of --lr")
    lr_end: float = _recipe("optim.lr_end", "onecycle: the LR at the last step, as a fraction of --lr")
    lr_step_epochs: int = _opt(10, "step schedule: multiply the LR by --lr-decay every N epochs")
    lr_decay: float = _opt(0.1, "step schedule: LR factor at each step")
    label_smoothing: float = _recipe("optim.label_smoothing", "label smoothing of the cross-entropy loss")
    epochs: float = _recipe("optim.epochs", "training epochs; a fraction ends the last epoch early")
    batch_size: int = _recipe("optim.batch_size", "global batch size (split over replicas)")
    lookahead: bool = _recipe("optim.lookahead", "every 5 steps pull the weights and BatchNorm statistics back to a slow "
                                 "copy, decay 0.95^5 * (step/total)^3; the slow copy is the final model")
    early_stop: int = _opt(0, "stop after N epochs without a better validation accuracy (0: off)")


@dataclass
class RunConfig:
    out: str = _opt("runs/latest", "run directory: config, history, curves, checkpoints, metrics")
    resume: bool = _opt(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = _opt(False, "replace whatever run is in --out")
    seed: int = _opt(0, "seed for weights, shuffling and augmentation")
    xla: bool | str = _opt(
        "auto", "jit-compile the train step with XLA: --xla, --no-xla, or auto: on GPUs on; on CPUs whichever of "
                "the two a short timed probe of this model found faster (cached per CPU, model, batch and "
                "TensorFlow version)", auto=True, env="ENGINE_XLA")
    amp: bool | str = _opt(
        "auto", "mixed precision: bfloat16 on CPUs and on GPUs of compute capability >= 8.0, float16 + loss "
                "scaling on older GPUs. --amp, --no-amp, or auto: on GPUs on; on CPUs only where the probe "
                "measured it faster than float32", auto=True, env="ENGINE_AMP")
    steps_per_call: int = _opt(10, "train steps run inside one tf.function call")
    checkpoint_every: int = _opt(0, "also checkpoint every N steps (0: only at epoch ends)")
    keep_checkpoints: int = _opt(3, "how many recent checkpoints to keep")
    deterministic: bool = _opt(False, "enable TensorFlow op determinism (bitwise repeatable on CPU)")
    profile: int = _opt(0, "write a TensorBoard profiler trace of N train calls (after the first, which traces) "
                           "into OUT/tb; view it in TensorBoard's Profile tab (pip install tensorboard-plugin-profile)")
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
    "data": ["data", "limit", "limit_test", "val_split", "val_images", "cache_dir"],
    "model": ["model", "weights", "freeze", "head", "width", "normalization", "upsample", "upsample_method",
              "data_init", "feature_cache"],
    "augmentation and test-time augmentation (TTA)": ["crop_pad", "pad_mode", "flip", "tta"],
    "optimisation": ["optimizer", "lr", "momentum", "nesterov", "sgd_momentum", "aux_lr", "aux_momentum", "weight_decay",
                     "weight_decay_mode", "bias_lr_scale", "schedule", "warmup", "lr_start", "lr_end",
                     "lr_step_epochs", "lr_decay", "label_smoothing", "lookahead"],
    "length": ["epochs", "batch_size", "early_stop"],
    "speed": ["xla", "amp", "steps_per_call", "strategy", "deterministic", "profile", "compile_cache"],
    "run and checkpoints": ["out", "resume", "overwrite", "seed", "checkpoint_every", "keep_checkpoints", "quiet"],
}

# Fields that must match for --resume: changing them makes the checkpoint a different experiment.
RESUME_FIXED = {("model", "model"), ("model", "upsample"), ("data", "data"), ("data", "limit"),
                ("optim", "optimizer"), ("optim", "sgd_momentum"), ("optim", "batch_size"), ("run", "seed")}

# Fields added after runs were saved without them: the value such a run was trained with.
LEGACY = {("optim", "sgd_momentum"): "keras", ("data", "val_images"): 0}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        cfg = cls()
        for (section, name), value in LEGACY.items():
            if section in d and name not in d[section]:
                d = {**d, section: {**d[section], name: value}}
        for section, values in d.items():
            if section not in SECTIONS:
                continue
            cfg = cfg.replace(section, **{k: v for k, v in values.items()
                                          if k in _field_names(SECTIONS[section])})
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

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path: str) -> "Config":
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError) as e:
            raise EngineError(f"cannot read config {path}: {e}") from None


def _field_names(dc) -> set:
    return {f.name for f in dataclasses.fields(dc)}


def flag(name: str) -> str:
    """The command-line flag of a config field."""
    return "--" + name.replace("_", "-")


AUTO = "auto"
_SWITCH = {"auto": AUTO, "on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False,
           "no": False}


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
    """--data and --cache-dir, as every tool that reads a data set takes them (argparse group)."""
    group.add_argument("--data", default=data_default(), metavar="SOURCE",
                       help=f"{source_help}; $ENGINE_DATA sets the default")
    group.add_argument("--cache-dir", default="", metavar="DIR",
                       help="decoded-data cache (empty: $ENGINE_CACHE or ~/.cache/engine)")


def data_default() -> str:
    """The --data default of every tool: $ENGINE_DATA, else the Keras download."""
    return env_defaults().get(("data", "data"), DataConfig().data)
