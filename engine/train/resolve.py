"""The config a run trains with, and every check of it, before anything is built.

Resolution order (each later step overrides the earlier): the config dataclass defaults (the
default model's recipe), the chosen model's recipe, `--recipe NAME`, environment defaults
(ENGINE_DATA), the flags given. With --resume the run's saved config.json is the base instead, and
only the flags given override it. Imports no TensorFlow, so `--help` and a bad flag answer at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os

from engine import config as C
from engine import layout, models, recipes
from engine.cli import Parser, Switch
from engine.contract import NORMALIZATIONS
from engine.errors import EngineError
from engine.train import precision, resize


def recipe(model: str) -> dict:
    """{(section, name): value}: the training recipe the model brings (ModelSpec.recipe)."""
    return recipes.dotted(recipes.model_recipe(models.get(model).recipe))


def defaults(model: str | None = None) -> C.Config:
    """The default config for `model` (default: the default model): the dataclass defaults, the
    model's recipe over them, then environment-variable defaults (e.g. ENGINE_DATA)."""
    cfg = C.Config()
    model = model or cfg.model.model
    return cfg.replace("model", model=model).with_overrides(recipe(model)).with_overrides(C.env_defaults())


def build_parser(prog: str, description: str, model: str | None = None,
                 extra: dict | None = None, recipe: str | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per config field, grouped by task (config.HELP_GROUPS). Defaults are
    SUPPRESSed so that the parsed namespace holds exactly the flags the user gave; `--help` shows
    `model`'s defaults (the default model's), or those of named `recipe`. `extra` adds the command's own flags to a group:
    {group title: [(flag, add_argument keywords), ...]}."""
    parser = Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS,
                    usage=f"{prog} [options]")
    base = defaults(model)
    name = recipes.ALIASES.get(recipe.split("@")[0], recipe.split("@")[0]) if recipe else None
    named = recipes.RECIPES.get(name) if name else None  # (an unknown one is refused when parsed)
    if named is not None:  # --recipe X --help: the recipe's values (and its model's, unless --model says)
        given = recipes.overrides(named)
        base = defaults(model or given.get(("model", "model"))).with_overrides(given)
    fields = {f.name: (section, f) for section, dc in C.SECTIONS.items() for f in dataclasses.fields(dc)}
    for title, names in C.HELP_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            section, f = fields[name]
            meta = f.metadata
            default = getattr(getattr(base, section), f.name)
            default = f"{default:.4g}" if isinstance(default, float) else default
            shown = "" if "(default:" in meta["help"] else f" (default: {default if default != '' else 'none'})"
            kw = dict(dest=f"{section}.{f.name}", help=meta["help"] + shown)
            if meta.get("auto"):
                group.add_argument(C.flag(f.name), "--no-" + C.flag(f.name)[2:], action=Switch, nargs="?",
                                   type=C.switch, metavar="auto|on|off", **kw)
            elif f.type in ("bool", bool):
                group.add_argument(C.flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            else:
                group.add_argument(C.flag(f.name), type=_flag_type(section, f), choices=meta.get("choices"),
                                   metavar=None if meta.get("choices") else _metavar(f), **kw)
        for flag, kw in (extra or {}).get(title, []):
            group.add_argument(flag, **kw)
    return parser


def _flag_type(section: str, f):
    """The argparse type of a field's flag: the text parsed, then config.coerce's checks (the same
    as a config file's values get), a refusal naming the rule."""
    parse = {"int": int, "float": float, "str": str}[str(f.type)]
    if (parse is str and not f.metadata.get("parse")) or f.metadata.get("choices"):
        return parse  # argparse checks the choices: "invalid choice: 'lion' (choose from ...)"

    def value(text: str):
        v = parse(text)  # ValueError: argparse says "invalid number value: 'x'"
        try:
            return C.coerce(section, f.name, v)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}, got {text}") from None
    value.__name__ = {"int": "integer", "float": "number"}.get(str(f.type), "str")  # "invalid number value: 'x'"
    return value


def _metavar(f) -> str:
    """N for a count, X for a number, else what the string names (a path, a name)."""
    if f.type in ("int", int):
        return "N"
    if f.type in ("float", float):
        return "X"
    return {"data": "SOURCE", "cache_dir": "DIR", "out": "DIR", "init_from": "RUN[:best|latest]",
            "model": "NAME|FILE.keras|MODULE:FUNCTION", "weights": "WEIGHTS", "freeze": "all|none|LAYER",
            "recipe": "NAME", "resize_schedule": "SIDE:UNTIL[,...]"}.get(f.name, f.name.upper())


def overrides_from(ns: argparse.Namespace) -> dict:
    """{(section, name): value} for every config flag given on the command line."""
    return {tuple(key.split(".", 1)): value for key, value in vars(ns).items() if "." in key}


def resolve(overrides: dict, file_values: dict | None = None) -> C.Config:
    """The config of a run from the flags given ({(section, name): value}) and a config file's
    values (read_config_file), which sit between the named recipe and the flags."""
    overrides, file_values = dict(overrides), dict(file_values or {})
    base = {}
    recipe_name = overrides.get(("run", "recipe")) or file_values.get(("run", "recipe"))
    if recipe_name:
        if overrides.get(("run", "resume")):
            raise EngineError("--recipe starts a new run; --resume continues one from its saved config: drop one")
        named = recipes.get(recipe_name.split("@")[0])
        base = recipes.overrides(named)
        if named.after and not (overrides.get(("run", "init_from")) or file_values.get(("run", "init_from"))):
            raise EngineError(f"--recipe {named.name} is the second phase of a fine-tune: give --init-from RUN, a run "
                              f"of --recipe {named.after}")
        overrides[("run", "recipe")] = named.tag
        file_values.pop(("run", "recipe"), None)
    model = overrides.get(("model", "model")) or file_values.get(("model", "model")) or base.get(("model", "model"))
    cfg = defaults(model).with_overrides(base).with_overrides(file_values).with_overrides(overrides)
    if cfg.model.model.endswith(".keras"):  # the run records where the file is, wherever it is resumed from
        cfg = cfg.replace("model", model=os.path.abspath(os.path.expanduser(cfg.model.model)))
    if not cfg.run.out and cfg.run.resume:
        raise EngineError("--resume needs --out DIR: the run to continue")
    if cfg.run.resume:
        cfg = _resumed(cfg.run.out, overrides)
    return cfg


# A config file describes an experiment; where this launch writes and whether it continues a run
# are the command line's (so a run's own config.json reruns it as a new run, in the --out given).
_NOT_FROM_FILES = {("run", "out"), ("run", "resume"), ("run", "overwrite")}


def with_out(cfg: C.Config) -> C.Config:
    """`cfg` with its run folder decided: --out, else a new folder for this run (auto_out). Decided
    when the run starts, not when the config is resolved (--print-config shows out as given)."""
    return cfg if cfg.run.out else cfg.replace("run", out=auto_out(cfg.model.model))


def auto_out(model: str) -> str:
    """Where a run goes without --out: a new folder per run, as timm and Lightning make one,
    runs/<model>-<date>-<time> (-2, -3, ... if two start in the same second)."""
    import time
    from engine.files import free_name
    name = os.path.basename(model)
    name = os.path.splitext(name)[0] if name.endswith(".keras") else name.rsplit(":", 1)[-1]
    return free_name(os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"))


def read_config_file(path: str, given: dict | None = None) -> dict:
    """{(section, name): value} from a YAML, TOML or JSON file (a run's config.json too), written as
    sections ({"optim": {"lr": 0.4}}), dotted keys ({"optim.lr": 0.4}) or plain field or flag names
    ({"lr": 0.4, "batch-size": 256}). Every value gets the checks its flag gets. `given`: the flags
    on the command line ({(section, name): value}), which decide what a file may not."""
    given = given or {}
    if given.get(("run", "resume")):
        raise EngineError("--config starts a new run; --resume continues the run in --out from its saved "
                          f"{layout.CONFIG_FILE}: give the changes as flags, or drop --resume")
    values = _parse_config(path, C.read_small(path, "--config"))
    if not isinstance(values, dict):
        raise EngineError(f"--config {path}: expected a mapping of config sections or fields, got {C.shown(values)}")
    out = {}

    def put(key: tuple, value, written: str) -> None:
        if key in out:
            raise EngineError(f"--config {path}: {key[0]}.{key[1]} is given twice (the second time as {written})")
        out[key] = value

    for key, value in values.items():
        if not isinstance(key, str):
            raise EngineError(f"--config {path}: the key {C.shown(key)} is not a config section or field name")
        name = _name(key)
        if isinstance(value, dict):
            if name not in C.SECTIONS:
                raise EngineError(f"--config {path}: {C.shown(key)} is not a config section ({', '.join(C.SECTIONS)})"
                                  f"{_suggest(name)}")
            for field, v in value.items():
                if not isinstance(field, str):
                    raise EngineError(f"--config {path}: {name}.{C.shown(field)} is not a config field")
                put((name, _name(field)), v, f"{name}: {field}")
        elif "." in name:
            put(tuple(name.split(".", 1)), value, key)
        elif name in C.SECTION_OF:
            put((C.SECTION_OF[name], name), value, key)
        elif name in C.SECTIONS:
            raise EngineError(f"--config {path}: {key} is a config section: give it a mapping of its fields")
        else:
            raise EngineError(f"--config {path}: {C.shown(key)} is not a config field{_suggest(name)}")
    out = {k: _typed(path, k, v) for k, v in out.items() if k not in _NOT_FROM_FILES}
    model = out.get(("model", "model"))
    if model and ":" in model and not model.endswith(".keras") and ("model", "model") not in given:
        raise EngineError(f"--config {path}: model.model {C.shown(model)} names Python code to import and run; a "
                          f"config file is data only: give --model {C.shown(model)[1:-1]} on the command line (a "
                          f"file may name a registered model or a .keras file)")
    return out


def _name(key: str) -> str:
    """A key as a field name: flag spellings (batch-size, --batch-size) as the field (batch_size)."""
    return key.strip().lstrip("-").replace("-", "_")


# What other trainers' configs call some fields (timm, Lightning, Hugging Face): suggested, not taken,
# as their meaning differs (warmup is a fraction here, not epochs or steps).
_OTHER_NAMES = {"learning_rate": "lr", "max_epochs": "epochs", "num_epochs": "epochs", "warmup_epochs": "warmup",
                "warmup_steps": "warmup", "warmup_ratio": "warmup", "smoothing": "label_smoothing", "opt": "optimizer",
                "sched": "schedule", "lr_scheduler_type": "schedule", "batch": "batch_size",
                "per_device_train_batch_size": "batch_size"}


def _suggest(name: str) -> str:
    """'; did you mean lr (optim.lr)?' for the field name closest to `name`, if one is close."""
    name = name.split(".")[-1]
    close = [_OTHER_NAMES[name]] if name in _OTHER_NAMES else difflib.get_close_matches(name, list(C.SECTION_OF), n=1)
    return f"; did you mean {close[0]} ({C.SECTION_OF[close[0]]}.{close[0]})?" if close else \
        " (engine train --print-config shows every field in its section)"


def _unique_pairs(pairs):
    """A JSON object that names no key twice (json keeps the last silently)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is given twice")
        seen[key] = value
    return seen


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML's safe loader, refusing a mapping that names a key twice (PyYAML keeps the last)."""

        def construct_mapping(self, node, deep=False):
            keys = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in keys:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                            key_node.start_mark)
                keys.add(key)
            return super().construct_mapping(node, deep)
    return Loader


def _parse_config(path: str, raw: bytes):
    import json
    import tomllib

    import yaml
    try:
        if path.endswith(".toml"):
            return tomllib.loads(raw.decode())
        if path.endswith((".yaml", ".yml")):
            return yaml.load(raw, Loader=_yaml_loader()) or {}
        if path.endswith(".json"):
            return json.loads(raw, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise EngineError(f"--config {path} is not valid: nested too deeply") from None
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise EngineError(f"--config {path} is not valid: {' '.join(str(e).split())[:200]}") from None
    raise EngineError(f"--config {path}: expected a .yaml, .yml, .toml or .json file")


def _typed(path: str, key: tuple, value):
    """`value` as the type of config field `key`, or a one-line error naming it."""
    section, name = key
    if section not in C.SECTIONS:
        raise EngineError(f"--config {path}: {section}.{name} is not a config field: {section} is not a section "
                          f"({', '.join(C.SECTIONS)}){_suggest(name)}")
    if name not in C.FIELDS[section]:
        if name in C.SECTION_OF:
            raise EngineError(f"--config {path}: {section}.{name} is not a config field: {name} is in section "
                              f"{C.SECTION_OF[name]} ({C.SECTION_OF[name]}.{name}, or plain {name})")
        raise EngineError(f"--config {path}: {section}.{name} is not a config field{_suggest(name)}")
    try:
        return C.coerce(section, name, value)
    except ValueError as e:
        raise EngineError(f"--config {path}: {section}.{name} is {C.shown(value)}, {e}") from None


def require_run(out: str) -> None:
    if not layout.is_run_dir(out):
        raise EngineError(f"nothing to resume: {out} holds no engine run")


def _resumed(out: str, overrides: dict) -> C.Config:
    """The saved config of the run in `out` with the flags given over it."""
    require_run(out)
    saved = C.Config.load(layout.run_file(out, layout.CONFIG_FILE))
    for section, name in C.RESUME_FIXED:
        was = getattr(getattr(saved, section), name)
        if (section, name) in overrides and overrides[(section, name)] != was:
            raise EngineError(f"{C.flag(name)} differs from the run being resumed ({was}); start a new --out instead")
    # Where the run continues is this launch's choice, not the experiment's: a run started on a
    # cluster resumes in one process (and back) unless --strategy says otherwise.
    # --overwrite was the first launch's, too.
    overrides = {("run", "strategy"): C.RunConfig().strategy, ("run", "overwrite"): False, **overrides}
    return saved.with_overrides(overrides)


# -- checks -------------------------------------------------------------------------------------

OPTIONS = ("weights", "freeze", "head", "width", "normalization", "whiten_bias_epochs", "bn_momentum")  # model options only some models read


def check(cfg: C.Config) -> None:
    """Every rule a config must keep, as one-line errors; run before any training object exists."""
    o, r = cfg.optim, cfg.run
    if r.strategy not in C.STRATEGIES:
        raise EngineError(f"unknown --strategy {r.strategy!r}; choose from {', '.join(C.STRATEGIES)}")
    for section, fields in C.FIELDS.items():  # the ranges of config.coerce, whatever set the values
        for name in fields:
            value = getattr(getattr(cfg, section), name)
            try:
                C.coerce(section, name, value)
            except ValueError as e:
                raise EngineError(f"{C.flag(name)} {e}, got {C.shown(value)}") from None
    spec = models.get(cfg.model.model)
    if not models.is_user_model(spec.name) or cfg.model.upsample:  # (a user's model: its own side, when built)
        # (the images' shape is known here only for a resumed run; the start checks it against the data)
        side = models.input_size(spec, cfg.model.upsample, cfg.image_shape if cfg.data.image_shape else None)
        resize.check(cfg.model.resize_schedule, spec.name, 1 if models.is_user_model(spec.name) else spec.min_size,
                     side or None)  # (a user's model: the layers' shapes tell, when built)
    _check_options(spec, cfg.model)
    if spec.name.endswith(".keras") and not cfg.model.normalization:
        raise EngineError(f"--model {spec.name} needs --normalization, the input scaling it was trained with: "
                          f"one of {', '.join(NORMALIZATIONS)}")
    if o.bias_lr_scale != 1.0 and o.optimizer == "adam":
        raise EngineError("--bias-lr-scale has no effect with adam (it normalises gradient scale); "
                          "use sgd or rmsprop, or --bias-lr-scale 1")
    if o.early_stop and cfg.data.eval_every != 1:
        raise EngineError(f"--early-stop counts epochs without a better validation accuracy: it needs every epoch "
                          f"validated (--eval-every 1), not --eval-every {cfg.data.eval_every}")
    if cfg.model.tta_fraction < 1 and not cfg.model.tta:
        raise EngineError("--tta-fraction chooses the images test-time augmentation applies to: give --tta 1 or 2")
    d = cfg.data
    if not d.prune_fraction and d.prune_until != C.DataConfig().prune_until:
        raise EngineError(f"--prune-until {d.prune_until:g} says when sample pruning ends: give --prune-fraction X "
                          f"too (0 < X < 1)")
    precision.xla_options(r.xla, r.deterministic)  # --xla refused where XLA may not compile the run
    if r.init_from:
        _check_init_from(r.init_from, r.out)
    if r.resume and r.overwrite:
        raise EngineError("--resume and --overwrite contradict each other; pass one")


def _check_init_from(source: str, out: str) -> None:
    if source.endswith(".h5"):
        if not os.path.isfile(source):
            raise EngineError(f"--init-from {source}: no such weights file")
        return
    run, _ = layout.parse_source(source)
    if not layout.is_run_dir(run):
        raise EngineError(f"--init-from {source}: {run} is not a run directory (or pass a .weights.h5 file)")
    if os.path.abspath(run) == os.path.abspath(out):
        raise EngineError("--init-from names the run in --out itself; to continue it use --resume")


def _check_options(spec, opts) -> None:
    """A model option set away from its default on a model that does not read it is an error, not
    something silently ignored."""
    base = C.ModelConfig()
    for name in OPTIONS:
        if name not in spec.options and getattr(opts, name) != getattr(base, name):
            takers = ", ".join(s.name for s in models.specs() if name in s.options) or \
                "your own models (--model FILE.keras or module:function)"
            raise EngineError(f"{C.flag(name)} does not apply to model {spec.name}; it is for {takers}")


def check_replicas(cfg: C.Config, policy: str, num_replicas: int) -> int:
    """The rules that need the strategy and the precision policy; returns the per-replica batch."""
    precision.xla_options(cfg.run.xla, cfg.run.deterministic, policy, num_replicas)
    return check_batch_split(cfg.optim.batch_size, num_replicas)


def check_batch_split(global_batch: int, num_replicas: int) -> int:
    """The per-replica batch of a global batch split evenly over `num_replicas` replicas."""
    if global_batch % num_replicas:
        fits = " or ".join(map(str, batches_that_split(global_batch, num_replicas)))
        raise EngineError(f"--batch-size {global_batch} does not split evenly over {num_replicas} replicas; "
                          f"use a multiple of {num_replicas} ({fits})")
    return global_batch // num_replicas


def batches_that_split(global_batch: int, num_replicas: int) -> list[int]:
    """The multiples of `num_replicas` nearest `global_batch`, below (if any) and above."""
    below = global_batch - global_batch % num_replicas
    return [b for b in (below, below + num_replicas) if b > 0]


def replicas_that_split(global_batch: int, devices: int) -> int:
    """The most of `devices` replicas (at least 1) over which `global_batch` splits evenly."""
    return max(k for k in range(1, devices + 1) if global_batch % k == 0)


def feature_cache_applies(cfg: C.Config) -> bool:
    """Whether the run trains its head on cached backbone features: a backbone model, fully frozen,
    with no augmentation and no test-time augmentation (the features then never change)."""
    m = cfg.model
    return (models.get(m.model).backbone and m.feature_cache and m.freeze == "all" and not m.crop_pad
            and m.flip == "none" and not m.tta and not m.brightness and not m.contrast and not m.resize_schedule)
