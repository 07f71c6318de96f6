"""The config a run trains with, and every check of it, before anything is built.

Resolution order (each later step overrides the earlier): the config dataclass defaults (the
default model's recipe), the chosen model's recipe, `--recipe NAME`, environment defaults
(ENGINE_DATA), the flags given. With --resume the run's saved config.json is the base instead, and
only the flags given override it. Imports no TensorFlow, so `--help` and a bad flag answer at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from engine import config as C
from engine import models, recipes
from engine.cli import Parser, integer, number
from engine.errors import EngineError

_TYPES = {"int": integer, "float": number, "str": str}


def recipe(model: str) -> dict:
    """{(section, name): value}: the training recipe the model brings (ModelSpec.recipe)."""
    return recipes.dotted(recipes.model_recipe(models.get(model).recipe))


def defaults(model: str | None = None) -> C.Config:
    """The default config for `model` (default: the default model): the dataclass defaults, the
    model's recipe over them, then environment-variable defaults (e.g. ENGINE_DATA)."""
    cfg = C.Config()
    model = model or cfg.model.model
    return cfg.replace("model", model=model).with_overrides(recipe(model)).with_overrides(C.env_defaults())


def build_parser(prog: str, description: str, model: str | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per config field. Defaults are SUPPRESSed so that the parsed namespace
    holds exactly the flags the user gave; `--help` shows `model`'s defaults (the default model's)."""
    parser = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    base = defaults(model)
    for section, dc in C.SECTIONS.items():
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(dc):
            meta = f.metadata
            default = getattr(getattr(base, section), f.name)
            default = f"{default:.4g}" if isinstance(default, float) else default
            kw = dict(dest=f"{section}.{f.name}", help=f"{meta['help']} (default: {default})")
            if f.type in ("bool", bool):
                group.add_argument(C.flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            else:
                group.add_argument(C.flag(f.name), type=_TYPES[f.type], choices=meta.get("choices"),
                                   metavar=None if meta.get("choices") else f.name.upper(), **kw)
    return parser


def overrides_from(ns: argparse.Namespace) -> dict:
    """{(section, name): value} for every config flag given on the command line."""
    return {tuple(key.split(".", 1)): value for key, value in vars(ns).items() if "." in key}


def resolve(overrides: dict) -> C.Config:
    """The config of a run from the flags given ({(section, name): value})."""
    overrides = dict(overrides)
    base = {}
    if overrides.get(("run", "recipe")):
        if overrides.get(("run", "resume")):
            raise EngineError("--recipe starts a new run; --resume continues one from its saved config: drop one")
        named = recipes.get(overrides[("run", "recipe")])
        base = recipes.overrides(named)
        overrides[("run", "recipe")] = named.tag
    model = overrides.get(("model", "model")) or base.get(("model", "model"))
    cfg = defaults(model).with_overrides(base).with_overrides(overrides)
    if cfg.run.resume:
        cfg = _resumed(cfg.run.out, overrides)
    return cfg


def require_run(out: str) -> None:
    if not C.is_run_dir(out):
        raise EngineError(f"nothing to resume: {out} holds no engine run")


def _resumed(out: str, overrides: dict) -> C.Config:
    """The saved config of the run in `out` with the flags given over it."""
    require_run(out)
    saved = C.Config.load(os.path.join(out, C.CONFIG_FILE))
    for section, name in C.RESUME_FIXED:
        was = getattr(getattr(saved, section), name)
        if (section, name) in overrides and overrides[(section, name)] != was:
            raise EngineError(f"{C.flag(name)} differs from the run being resumed ({was}); start a new --out instead")
    # Where the run continues is this launch's choice, not the experiment's: a run started on a
    # cluster resumes in one process (and back) unless --strategy says otherwise.
    overrides = {("run", "strategy"): C.RunConfig().strategy, **overrides}
    return saved.with_overrides(overrides)


# -- checks -------------------------------------------------------------------------------------

OPTIONS = ("weights", "freeze", "head", "width")  # model options that only some models read


def check(cfg: C.Config) -> None:
    """Every rule a config must keep, as one-line errors; run before any training object exists."""
    o, r = cfg.optim, cfg.run
    spec = models.get(cfg.model.model)
    models.input_size(spec, cfg.model.upsample)
    _check_options(spec, cfg.model)
    if o.batch_size < 1 or r.steps_per_call < 1 or o.epochs <= 0:
        raise EngineError("--batch-size and --steps-per-call must be at least 1, --epochs above 0")
    if o.bias_lr_scale != 1.0 and o.optimizer == "adam":
        raise EngineError("--bias-lr-scale has no effect with adam (it normalises gradient scale); "
                          "use sgd or rmsprop, or --bias-lr-scale 1")
    if r.deterministic and r.xla:
        raise EngineError("--deterministic cannot be combined with --xla: XLA has no deterministic "
                          "max-pool gradient; drop one of them")
    if r.resume and r.overwrite:
        raise EngineError("--resume and --overwrite contradict each other; pass one")
    if not 0.0 <= cfg.data.val_split < 1.0:
        raise EngineError(f"--val-split must be in [0, 1), got {cfg.data.val_split}")
    if r.strategy not in C.STRATEGIES:
        raise EngineError(f"unknown --strategy {r.strategy!r}; choose from {', '.join(C.STRATEGIES)}")


def _check_options(spec, opts) -> None:
    """A model option set away from its default on a model that does not read it is an error, not
    something silently ignored."""
    base = C.ModelConfig()
    for name in OPTIONS:
        if name not in spec.options and getattr(opts, name) != getattr(base, name):
            takers = [s.name for s in models.specs() if name in s.options]
            raise EngineError(f"--{name} does not apply to model {spec.name}; it is for {', '.join(takers)}")


def check_replicas(cfg: C.Config, policy: str, num_replicas: int) -> int:
    """The rules that need the strategy and the precision policy; returns the per-replica batch."""
    if policy == "mixed_float16" and cfg.run.xla and num_replicas > 1:
        raise EngineError("--xla --amp in float16 (GPUs of compute capability 7.x) over several replicas has not "
                          "been run on GPUs: under XLA, Keras's loss scaling can decide differently per replica; "
                          "drop --xla, or train on one GPU")
    return check_batch_split(cfg.optim.batch_size, num_replicas)


def check_batch_split(global_batch: int, num_replicas: int) -> int:
    """The per-replica batch of a global batch split evenly over `num_replicas` replicas."""
    if global_batch % num_replicas:
        raise EngineError(f"--batch-size {global_batch} does not split evenly over {num_replicas} replicas; "
                          f"use a multiple of {num_replicas}")
    return global_batch // num_replicas


def feature_cache_applies(cfg: C.Config) -> bool:
    """Whether the run trains its head on cached backbone features: a backbone model, fully frozen,
    with no augmentation and no test-time augmentation (the features then never change)."""
    m = cfg.model
    return (models.get(m.model).backbone and m.feature_cache and m.freeze == "all" and not m.crop_pad
            and m.flip == "none" and not m.tta)
