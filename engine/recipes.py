"""Named, versioned training recipes: the seed experiments our users come from, as configs.

`python -m engine.train --recipe NAME` starts from the recipe's model defaults, applies the recipe,
then the flags given on the command line. `--list-recipes` prints this table. A recipe's values never
change under the same version: a changed recipe gets a new version number, and a run records
`NAME@vVERSION` in its config.json.

Values the seed write-ups do not state (e.g. epochs of experiment 2) are ours and marked "ours".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import dotted
from engine.errors import EngineError


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    reproduces: str
    reported: str
    values: dict = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}"


_SEED_HEAD = {"model.freeze": "all", "model.weights": "imagenet", "model.crop_pad": 0, "model.flip": "none",
              "optim.label_smoothing": 0.0, "optim.weight_decay": 0.0}


def _experiment1(model: str) -> dict:
    """Seed experiment 1: frozen backbone, 32->64, the seed head, Adam at a constant 0.001/31."""
    return {**_SEED_HEAD, "model.model": model, "model.upsample": 64, "model.head": "seed",
            "optim.optimizer": "adam", "optim.lr": 0.001 / 31, "optim.schedule": "constant",
            "optim.batch_size": 128, "optim.epochs": 30}


RECIPES = {r.name: r for r in [
    Recipe("seed-vgg16-frozen", 1,
           "experiment 1: VGG16 (ImageNet, frozen), 32->64 upsampling, Flatten-512-256 head with dropout "
           "0.2, Adam at a constant 0.001/31, batch 128, 30 epochs",
           "92.05% (best epoch 22)", _experiment1("vgg16")),
    Recipe("seed-densenet121-frozen", 1, "experiment 1 with DenseNet121 as the backbone",
           "within 0.08% of VGG16", _experiment1("densenet121")),
    Recipe("seed-vgg19-224", 1,
           "experiment 2: VGG19 (ImageNet, frozen) at 224x224; logits out, so no softmax-into-from-logits "
           "pitfall; head, Adam 1e-4, batch 64 and 10 epochs are ours",
           "not stated",
           {**_SEED_HEAD, "model.model": "vgg19", "model.upsample": 224, "model.head": "gap",
            "optim.optimizer": "adam", "optim.lr": 1e-4, "optim.schedule": "constant",
            "optim.batch_size": 64, "optim.epochs": 10}),
    Recipe("seed-inception-frozen", 1,
           "experiment 4: InceptionV3 (ImageNet, frozen) at 75x75, two added layers (Dense 512, Dense), "
           "Adam with LR decay (x0.5 every 5 epochs: ours) and early stopping (patience 3: ours)",
           "87% val / 98% train",
           {**_SEED_HEAD, "model.model": "inception_v3", "model.upsample": 75, "model.head": "dense512",
            "optim.optimizer": "adam", "optim.lr": 1e-3, "optim.schedule": "step", "optim.lr_step_epochs": 5,
            "optim.lr_decay": 0.5, "optim.batch_size": 128, "optim.epochs": 30, "optim.early_stop": 3}),
    Recipe("seed-vgg16-finetune", 1,
           "experiment 5: VGG16 fine-tuned from block5_conv1 at 32x32, Flatten -> Dense 512 head, RMSprop "
           "(lr 1e-4, 20 epochs: ours); it overfits, as the curves show",
           "overfits (no accuracy stated)",
           {**_SEED_HEAD, "model.model": "vgg16", "model.upsample": 32, "model.freeze": "block5_conv1",
            "model.head": "dense512", "optim.optimizer": "rmsprop", "optim.lr": 1e-4, "optim.momentum": 0.0,
            "optim.schedule": "constant", "optim.batch_size": 128, "optim.epochs": 20}),
]}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise EngineError(f"unknown recipe {name!r}; choose from {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def overrides(recipe: Recipe) -> dict:
    """{(section, name): value} for Config.with_overrides."""
    return dotted(recipe.values)


def table() -> str:
    lines = []
    for r in RECIPES.values():
        lines.append(f"{r.tag:30s} {r.reproduces}; reported: {r.reported}")
    return "\n".join(lines)
