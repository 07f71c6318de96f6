"""`python -m engine.train`: argparse over the config dataclasses -> Trainer."""
from __future__ import annotations

import os

from engine import config as C
from engine.errors import EngineError, cli

DESCRIPTION = ("Train a CIFAR-10 image classifier with the engine's compiled loop. The defaults are "
               "the chosen model's training recipe (shown: airbench, the default model; resnet9 and tiny "
               "use Page's ResNet-9 recipe); every flag overrides them. With --resume, the run's saved "
               "config.json is the base instead.")


def parse(argv=None) -> C.Config:
    parser = C.build_parser("python -m engine.train", DESCRIPTION)
    parser.add_argument("--list-models", action="store_true", help="list the registered models and exit")
    parser.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    ns = parser.parse_args(argv)
    if getattr(ns, "list_recipes", False):
        from engine import recipes
        print(recipes.table())
        raise SystemExit(0)
    if getattr(ns, "list_models", False):
        from engine import models
        for name in models.names():
            spec = models.get(name)
            print(f"{name:12s} {spec.description} (input >= {spec.min_size}, default {spec.default_size})")
        raise SystemExit(0)
    overrides = C.overrides_from(ns)
    base = {}
    if overrides.get(("run", "recipe")):
        from engine import recipes
        if overrides.get(("run", "resume")):
            raise EngineError("--recipe starts a new run; --resume continues one from its saved config: drop one")
        recipe = recipes.get(overrides[("run", "recipe")])
        base = recipes.overrides(recipe)
        overrides[("run", "recipe")] = recipe.tag
    model = overrides.get(("model", "model")) or base.get(("model", "model"))
    cfg = C.defaults(model).with_overrides(base).with_overrides(overrides)
    if cfg.run.resume:
        if not C.is_run_dir(cfg.run.out):
            raise EngineError(f"nothing to resume: {cfg.run.out} holds no engine run")
        saved = C.Config.load(os.path.join(cfg.run.out, C.CONFIG_FILE))
        for section, name in C.RESUME_FIXED:
            if (section, name) in overrides and overrides[(section, name)] != getattr(getattr(saved, section), name):
                raise EngineError(f"--{name.replace('_', '-')} differs from the run being resumed "
                                  f"({getattr(getattr(saved, section), name)}); start a new --out instead")
        # Where the run continues is this launch's choice, not the experiment's: a run started on a
        # cluster resumes in one process (and back) unless --strategy says otherwise.
        overrides.setdefault(("run", "strategy"), C.RunConfig().strategy)
        cfg = saved.with_overrides(overrides)
    return cfg


@cli
def main(argv=None):
    cfg = parse(argv)
    from engine.trainer import Trainer  # builds Keras and the models: only once the flags are sane
    Trainer(cfg).run()


if __name__ == "__main__":
    main()
