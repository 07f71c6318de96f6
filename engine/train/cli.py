"""`python -m engine.train` (run by engine/train/__main__.py): argparse over the config
dataclasses -> resolve -> Trainer."""
from __future__ import annotations

import json
import os
import sys

from engine import config as C
from engine import models, recipes
from engine.errors import EngineError, cli
from engine.train import resolve

DESCRIPTION = ("Train a CIFAR-10 image classifier with the engine's compiled loop. The defaults are "
               f"the chosen model's training recipe (shown: the --model given, else {recipes.DEFAULT}, the default "
               "model), then --recipe, then --config, then every flag given. With --resume, the run's saved "
               "config.json is the base instead.")


# The command's own flags (not config fields), in the help group where a user looks for them.
EXTRA_FLAGS = {
    "start from": [
        ("--config", dict(metavar="FILE", help="start from a YAML, TOML or JSON file of flag values (keys: flag "
                          "or field names, the sections --print-config shows, or section.field; a run's "
                          "config.json reruns that run as a new one); the flags given override it, and --out, "
                          "--resume, --overwrite and a module:function --model come only from the command line")),
        ("--print-config", dict(action="store_true", help="print the resolved config as JSON and exit")),
        ("--list-models", dict(action="store_true", help="list the registered models and exit")),
        ("--list-recipes", dict(action="store_true", help="list the named recipes and exit")),
    ],
    "run and checkpoints": [
        ("--seeds", dict(metavar="N,N,...", help="train once per seed into OUT/seed-N/ and print the report over "
                         "them (engine report)")),
    ],
}


def parse(argv=None) -> C.Config:
    return parse_with_seeds(argv)[0]


def parse_with_seeds(argv=None) -> tuple[C.Config, list[int]]:
    """The resolved config, and the seeds of --seeds (empty without it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = resolve.build_parser("engine train", DESCRIPTION, _model_named(argv), extra=EXTRA_FLAGS)
    ns = parser.parse_args(argv)
    if getattr(ns, "list_recipes", False):
        print(recipes.table())
        raise SystemExit(0)
    if getattr(ns, "list_models", False):
        specs = models.specs()
        width = max(len(spec.name) for spec in specs)
        for spec in specs:
            default = "; the default" if spec.name == recipes.DEFAULT else ""
            print(f"{spec.name:{width}s} {spec.description}{default} (input >= {spec.min_size}, "
                  f"default {spec.default_size})")
        raise SystemExit(0)
    given = resolve.overrides_from(ns)
    file_values = resolve.read_config_file(ns.config, given) if getattr(ns, "config", None) else {}
    cfg = resolve.resolve(given, file_values)
    seeds = _seeds(getattr(ns, "seeds", None), cfg)
    if getattr(ns, "print_config", False):
        resolve.check(cfg)
        print(json.dumps(cfg.to_dict(), indent=2))
        raise SystemExit(0)
    return cfg, seeds


def _seeds(text: str | None, cfg) -> list[int]:
    if text is None:
        return []
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise EngineError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or cfg.run.resume:
        raise EngineError("--seeds needs distinct seeds, and starts new runs (not with --resume)")
    return seeds


def _model_named(argv: list) -> str | None:
    """The --model given, so that --help shows that model's defaults."""
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


@cli
def main(argv=None):
    cfg, seeds = parse_with_seeds(argv)
    resolve.check(cfg)
    from engine.cli import import_tensorflow_quietly
    import_tensorflow_quietly()
    from engine.train.trainer import Trainer  # builds Keras and the models: only once the flags are sane
    if not seeds:
        Trainer(cfg).run()
        return
    outs = [os.path.join(cfg.run.out, f"seed-{seed}") for seed in seeds]
    os.makedirs(cfg.run.out, exist_ok=True)
    for seed, out in zip(seeds, outs):
        Trainer(cfg.replace("run", seed=seed, out=out)).run()
    from engine import report
    print(report.table([report.load(out) for out in outs]))

