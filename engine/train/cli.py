"""`python -m engine.train` (run by engine/train/__main__.py): argparse over the config
dataclasses -> resolve -> Trainer."""
from __future__ import annotations

from engine import config as C
from engine import models, recipes
from engine.errors import cli
from engine.train import resolve

DESCRIPTION = ("Train a CIFAR-10 image classifier with the engine's compiled loop. The defaults are "
               "the chosen model's training recipe (shown: airbench, the default model; resnet9 and tiny "
               "use Page's ResNet-9 recipe); every flag overrides them. With --resume, the run's saved "
               "config.json is the base instead.")


def parse(argv=None) -> C.Config:
    parser = resolve.build_parser("python -m engine.train", DESCRIPTION)
    parser.add_argument("--list-models", action="store_true", help="list the registered models and exit")
    parser.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    ns = parser.parse_args(argv)
    if getattr(ns, "list_recipes", False):
        print(recipes.table())
        raise SystemExit(0)
    if getattr(ns, "list_models", False):
        for spec in models.specs():
            print(f"{spec.name:12s} {spec.description} (input >= {spec.min_size}, default {spec.default_size})")
        raise SystemExit(0)
    return resolve.resolve(resolve.overrides_from(ns))


@cli
def main(argv=None):
    cfg = parse(argv)
    resolve.check(cfg)
    from engine.cli import import_tensorflow_quietly
    import_tensorflow_quietly()
    from engine.train.trainer import Trainer  # builds Keras and the models: only once the flags are sane
    Trainer(cfg).run()

