"""`python -m engine.train` (run by engine/train/__main__.py): argparse over the config
dataclasses -> resolve (and its checks, before TensorFlow is imported) -> Trainer."""
from __future__ import annotations

import json
import os
import sys

from engine import config as C
from engine import files, layout, models, recipes
from engine.errors import EngineError, Interrupted, Preempted, cli
from engine.train import resolve

DESCRIPTION = ("Train a CIFAR-10 image classifier with the engine's compiled loop. The defaults are "
               f"the chosen model's training recipe (shown: the --model given, else {recipes.DEFAULT}, the default "
               "model), then --recipe, then --config, then every flag given. With --resume, the run's saved "
               f"{layout.CONFIG_FILE} is the base instead.")


# The command's own flags (not config fields), in the help group where a user looks for them.
EXTRA_FLAGS = {
    "start from": [
        ("--config", dict(metavar="FILE", help="start from a YAML, TOML or JSON file of flag values (keys: flag "
                          "or field names, the sections --print-config shows, or section.field; a run's "
                          f"{layout.CONFIG_FILE} reruns that run as a new one); the flags given override it, and --out, "
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
    parser = resolve.build_parser("engine train", DESCRIPTION, _named(argv, "--model"), extra=EXTRA_FLAGS,
                                  recipe=_named(argv, "--recipe"))
    ns = parser.parse_args(argv)
    if getattr(ns, "list_recipes", False):
        print(recipes.table())
        raise SystemExit(0)
    if getattr(ns, "list_models", False):
        specs = models.specs()
        width = max(len(spec.name) for spec in specs)
        for spec in specs:
            default = "; the default" if spec.name == recipes.DEFAULT else ""
            side = spec.default_size or "the images' side"
            print(f"{spec.name:{width}s} {spec.description}{default} (input >= {spec.min_size}, default {side})")
        raise SystemExit(0)
    overrides = resolve.overrides_from(ns)
    file_values = resolve.read_config_file(ns.config, overrides) if getattr(ns, "config", None) else {}
    sweep = getattr(ns, "seeds", None) is not None
    resume = overrides.get(("run", "resume"))
    if sweep and resume:  # each seed's run is resumed from its own folder (main)
        overrides[("run", "resume")] = False
    cfg = resolve.resolve(overrides, file_values)
    if sweep and resume:
        cfg = cfg.replace("run", resume=True)
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
    for seed in seeds:
        try:
            C.coerce("run", "seed", seed)
        except ValueError as e:
            raise EngineError(f"--seeds: {seed}: {e}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise EngineError("--seeds needs distinct seeds")
    return seeds


def _sweep_config(outs: list) -> C.Config:
    """The experiment of a sweep being resumed: the saved config of its first started seed (the
    command line of a resume names only --resume, --seeds and --out)."""
    for out in outs:
        if layout.is_run_dir(out):
            return C.Config.load(layout.run_file(out, layout.CONFIG_FILE))
    raise EngineError(f"nothing to resume: no seed of the sweep in {os.path.dirname(outs[0]) or '.'} has started")


def _without_seeds(argv: list) -> list:
    """The command line without its --seeds value (to resolve one seed's run of a sweep)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--seeds":
            skip = True
        elif not arg.startswith("--seeds="):
            out.append(arg)
    return out


def _named(argv: list, flag: str) -> str | None:
    """The --model (or --recipe) given, so that --help shows that model's (recipe's) defaults."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def precheck(cfg: C.Config, seeds: list[int]) -> None:
    """The refusals that need no TensorFlow (what --out holds, a --data path that is not there), made
    before TensorFlow's import, so that they answer in a second."""
    from engine.data.sources import check_source
    from engine.train.precision import float16_forced
    check_source(cfg.data.data, cfg.data.image_size, cfg.data.label_mode)
    float16_forced()  # a bad ENGINE_AMP_FLOAT16, with or without --amp
    if "TF_CONFIG" in os.environ:  # a worker of a cluster: the chief checks --out when it starts
        return
    if not seeds:
        if os.path.isdir(cfg.run.out):  # a run in progress there: say so first (the run locks it again)
            files.Lock(cfg.run.out, "a run writes there, or an export reads it").release()
        layout.check_out(cfg.run.out, cfg.run.resume, cfg.run.overwrite)
        return
    if os.path.lexists(cfg.run.out) and not os.path.isdir(cfg.run.out):
        raise EngineError(f"--out {cfg.run.out} is a file, not a directory")
    for seed in seeds:
        out = os.path.join(cfg.run.out, f"seed-{seed}")
        if not cfg.run.resume:
            layout.check_out(out, False, cfg.run.overwrite)


@cli
def main(argv=None):
    cfg, seeds = parse_with_seeds(argv)
    resolve.check(cfg)
    cfg = resolve.with_out(cfg)
    precheck(cfg, seeds)
    from engine.cli import import_tensorflow_quietly
    import_tensorflow_quietly()
    from engine import devices
    devices.warn_gpu_setup()  # TensorFlow's own word on a GPU it cannot use is kept quiet: ours, in one line
    from engine.train.trainer import Trainer  # builds Keras and the models: only once the flags are sane
    if not seeds:
        Trainer(cfg, checked=True).run()  # (checked above, once)
        return
    outs = [os.path.join(cfg.run.out, f"seed-{seed}") for seed in seeds]
    for seed, out in zip(seeds, outs):
        if cfg.run.resume and os.path.isfile(layout.run_file(out, layout.METRICS_FILE)):
            print(f"{out}: finished; not trained again")
            continue
        if cfg.run.resume and layout.is_run_dir(out):  # its own saved config, as for one run
            seed_cfg = parse(_without_seeds(argv if argv is not None else sys.argv[1:]) + ["--out", out])
        elif cfg.run.resume:  # a seed not started yet starts now, as the sweep's started seeds did
            seed_cfg = _sweep_config(outs).replace("run", seed=seed, out=out, resume=False, overwrite=False)
        else:
            seed_cfg = cfg.replace("run", seed=seed, out=out, resume=False)
        try:
            Trainer(seed_cfg).run()  # (each seed's config is checked when its run starts)
        except (Interrupted, Preempted) as e:  # the hint continues the whole sweep, not one seed
            raise type(e)(str(e).replace(f"--resume --out {out}",
                                         f"--resume --seeds {','.join(map(str, seeds))} --out {cfg.run.out}")) from None
    from engine import report
    print(report.table([report.load(out) for out in outs]))
