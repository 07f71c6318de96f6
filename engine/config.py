"""Run configuration: dataclasses that are the one definition of every flag and its default.

`python -m engine.train --help` is generated from these fields, `config.json` in a run directory is
`Config.to_dict()`, and a resumed run starts from its saved config with only the flags given on the
command line overriding it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field

from engine.errors import EngineError


def _opt(default, help, choices=None, **kw):
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


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
             "0 validates on the test split, as the seed experiments do")
    cache_dir: str = _opt(
        "", "where decoded uint8 arrays are cached (default: $ENGINE_CACHE or ~/.cache/engine)")


@dataclass
class ModelConfig:
    model: str = _opt("resnet9", "model name from the registry (see --list-models)")
    upsample: int = _opt(0, "resize 32x32 inputs to NxN on the device (0: the model's default size)")
    upsample_method: str = _opt("nearest", "upsampling interpolation", choices=["nearest", "bilinear"])
    crop_pad: int = _opt(4, "random-crop augmentation: pad by N pixels, crop back to 32 (0: off)")
    pad_mode: str = _opt("reflect", "padding for random crops", choices=["reflect", "constant"])
    flip: bool = _opt(True, "random horizontal flips")


@dataclass
class OptimConfig:
    optimizer: str = _opt("sgd", "optimizer", choices=["sgd", "adam", "rmsprop"])
    lr: float = _opt(0.4, "peak learning rate")
    momentum: float = _opt(0.9, "momentum (sgd, rmsprop)")
    nesterov: bool = _opt(True, "Nesterov momentum (sgd)")
    weight_decay: float = _opt(5e-4, "decoupled weight decay (0: off)")
    schedule: str = _opt("onecycle", "learning-rate schedule",
                         choices=["constant", "step", "cosine", "onecycle"])
    warmup: float = _opt(0.2, "onecycle/cosine: fraction of training spent warming up linearly")
    lr_step_epochs: int = _opt(10, "step schedule: multiply the LR by --lr-decay every N epochs")
    lr_decay: float = _opt(0.1, "step schedule: LR factor at each step")
    label_smoothing: float = _opt(0.2, "label smoothing of the cross-entropy loss")
    epochs: int = _opt(24, "training epochs")
    batch_size: int = _opt(512, "global batch size (split over replicas)")
    early_stop: int = _opt(0, "stop after N epochs without a better validation accuracy (0: off)")


@dataclass
class RunConfig:
    out: str = _opt("runs/latest", "run directory: config, history, curves, checkpoints, metrics")
    resume: bool = _opt(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = _opt(False, "replace whatever run is in --out")
    seed: int = _opt(0, "seed for weights, shuffling and augmentation")
    xla: bool = _opt(False, "jit-compile the train step with XLA (on CPU it can be slower: measure)")
    amp: bool = _opt(False, "mixed precision: float16 + loss scaling on GPU, bfloat16 on CPU")
    steps_per_call: int = _opt(10, "train steps run inside one tf.function call")
    checkpoint_every: int = _opt(0, "also checkpoint every N steps (0: only at epoch ends)")
    keep_checkpoints: int = _opt(3, "how many recent checkpoints to keep")
    deterministic: bool = _opt(False, "enable TensorFlow op determinism (bitwise repeatable on CPU)")
    quiet: bool = _opt(False, "one line per epoch instead of a progress bar")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}

# Fields that must match for --resume: changing them makes the checkpoint a different experiment.
RESUME_FIXED = {("model", "model"), ("model", "upsample"), ("data", "data"), ("data", "limit"),
                ("optim", "optimizer"), ("optim", "batch_size"), ("run", "seed")}


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
    return "--" + name.replace("_", "-")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is our one line and exit code 2 (no usage block). Every CLI uses it."""

    def error(self, message):
        raise EngineError(f"{self.prog}: {message}")


def integer(s: str) -> int:
    v = int(s)
    if v < 0:
        raise ValueError(s)
    return v


def number(s: str) -> float:
    v = float(s)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(s)
    return v


_TYPES = {"int": integer, "float": number, "str": str}


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per config field. Defaults are SUPPRESSed so that the parsed namespace
    holds exactly the flags the user gave; `--help` still shows every default."""
    parser = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    base = defaults()
    for section, dc in SECTIONS.items():
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(dc):
            meta = f.metadata
            default = getattr(getattr(base, section), f.name)
            kw = dict(dest=f"{section}.{f.name}", help=f"{meta['help']} (default: {default})")
            if f.type in ("bool", bool):
                group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            else:
                group.add_argument(flag(f.name), type=_TYPES[f.type], choices=meta.get("choices"),
                                   metavar=None if meta.get("choices") else f.name.upper(), **kw)
    return parser


def overrides_from(ns: argparse.Namespace) -> dict:
    """{(section, name): value} for every config flag given on the command line."""
    out = {}
    for key, value in vars(ns).items():
        if "." in key:
            section, name = key.split(".", 1)
            out[(section, name)] = value
    return out


def defaults() -> Config:
    """The default config, with environment-variable defaults applied (e.g. ENGINE_DATA)."""
    cfg = Config()
    for section, dc in SECTIONS.items():
        for f in dataclasses.fields(dc):
            env = f.metadata.get("env")
            if env and os.environ.get(env):
                cfg = cfg.replace(section, **{f.name: os.environ[env]})
    return cfg
