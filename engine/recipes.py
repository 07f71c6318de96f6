"""Training recipes: the one home of every hyperparameter value the engine ships.

A recipe is {"section.field": value} over the config fields (engine.config). Four families of
models bring one each (`ModelSpec.recipe` names it): AIRBENCH, AIRBENCH_MUON (the default model's,
where the config dataclass defaults come from), CLASSIC and TRANSFER, and a model of the user's
brings USER. Each sets every field that any of them sets, so that no model inherits a value from
another model's recipe. The named recipes at the end reproduce the seed experiments our users come
from: `python -m engine.train --recipe NAME` starts from the recipe's model's defaults, applies the
recipe, then the flags given on the command line. `--list-recipes` prints them. A named recipe's values never change under the
same version: a changed recipe gets a new version number, and a run records `NAME@vVERSION` in its config.json.

Units are the engine's: the loss is the mean over the global batch, an LR is per step of that loss,
epochs may be fractional. Values the seed write-ups do not state are ours and marked "ours".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import EngineError

# The SGD half of --optimizer muon (the variables that are not conv filters), at airbench94_muon's
# values: its head LR 0.67 per image of its summed loss over a batch of 2000 is 0.67 * 2000 per step
# of the batch-mean loss. Every recipe carries them, so that --optimizer muon means the same anywhere.
_MUON_BATCH = 2000
MUON_SGD = {
    "optim.aux_lr": 0.67 * _MUON_BATCH,  # SGD LR of the head and BatchNorm biases, per step of the mean loss
    "optim.aux_momentum": 0.85,
}

# ---------------------------------------------------------------------------------------------
# airbench94 (Keller Jordan): the reference's `hyp`, in engine units.
#
# The reference sums the loss over a batch of 1024 and steps PyTorch's SGD with lr 11.5 / (1024 *
# kilostep), kilostep = 1 + 1 / (1 - momentum) = 7.67: per step of the batch-MEAN loss that is
# lr = 11.5 / 7.67 = 1.5. Its weight decay 0.0153 * 1024 / (1024 * kilostep) enters the gradient
# divided by the lr (PyTorch SGD's coupled L2): a coefficient of 0.0153 / 11.5 on the mean-loss gradient.
_AIRBENCH_LR_PER_1024 = 11.5   # the reference's learning rate per 1024 examples
_AIRBENCH_WD_PER_1024 = 0.0153  # the reference's weight decay per 1024 examples
AIRBENCH = {
    "model.crop_pad": 2,                 # px: reflect-pad and crop back (random 2-px translation)
    "model.pad_mode": "reflect",
    "model.flip": "alternate",           # each image mirrored on every other epoch
    "model.tta": 2,                      # test-time views: image, mirror, 1-px diagonal shifts (6)
    "optim.optimizer": "sgd",
    "optim.sgd_momentum": "pytorch",     # momentum buffer of gradients, as the reference's torch SGD
    "optim.lr": 1.5,                     # peak LR per step of the mean loss (derivation above)
    "optim.momentum": 0.85,
    "optim.nesterov": True,
    "optim.weight_decay": _AIRBENCH_WD_PER_1024 / _AIRBENCH_LR_PER_1024,  # coupled L2 coefficient
    "optim.weight_decay_mode": "l2",
    "optim.bias_lr_scale": 64.0,         # x LR for BatchNorm biases (not their weight decay)
    "optim.schedule": "onecycle",
    "optim.warmup": 0.23,                # fraction of the steps spent rising to the peak
    "optim.lr_start": 0.2,               # LR at step 0, as a fraction of the peak
    "optim.lr_end": 0.07,                # LR at the last step, as a fraction of the peak
    "optim.label_smoothing": 0.2,
    "optim.epochs": 9.9,                 # epochs (the last one ends early)
    "optim.batch_size": 1024,            # images per step, over all replicas
    "optim.lookahead": True,
    **MUON_SGD,
}

# airbench94_muon (Keller Jordan): Muon on the conv filters, 8 epochs, batch 2000, no lookahead, a
# linear decay from the peak to zero. The reference sums the loss over its batch of 2000: its SGD LRs
# (head 0.67, biases 0.053) are 2000x larger per step of the batch-MEAN loss; its weight decay 2e-6 per
# image (0.004 per step) enters each SGD group's gradient divided by that group's LR (engine.train.muon).
# Muon's step does not depend on the gradient's scale, so its LR (0.24) is the reference's.
AIRBENCH_MUON = {
    **{k: v for k, v in AIRBENCH.items() if k.startswith("model.")},  # augmentation and TTA as airbench94
    "model.model": "airbench-muon",      # airbench's net, its head scaled by 1/width and initialised at std 1
    "optim.optimizer": "muon",
    "optim.sgd_momentum": "pytorch",     # the SGD groups' momentum buffer holds gradients, as torch's
    "optim.lr": 0.24,                    # Muon LR of the conv filters
    "optim.momentum": 0.6,               # Muon momentum
    "optim.nesterov": True,
    **MUON_SGD,
    "optim.bias_lr_scale": 0.053 / 0.67,  # biases and norm parameters: SGD LR 0.053 (reference units)
    "optim.weight_decay": 2e-6 * _MUON_BATCH,  # per step, at the peak LR
    "optim.weight_decay_mode": "l2",
    "optim.schedule": "onecycle",
    "optim.warmup": 0.0,                 # no warm-up: linear from the peak ...
    "optim.lr_start": 1.0,
    "optim.lr_end": 0.0,                 # ... to zero at the last step
    "optim.label_smoothing": 0.2,
    "optim.epochs": 8,
    "optim.batch_size": _MUON_BATCH,
    "optim.lookahead": False,
}
# hiverge's CIFAR-10 speedrun (cifar10_speedrun.py, Sep 2025): airbench94_muon retuned, in engine units.
# Its loss is also summed over its batch (1536): its SGD LRs (head 0.5415, biases 0.0573) are 1536x larger
# per step of the batch-MEAN loss, and its weight decay 1.0418e-6 per image enters each SGD group's
# gradient divided by that group's LR, as airbench94_muon's. Muon's LR and momentum are the reference's.
# BatchNorm momentum 0.5566 is Keras's meaning (it builds torch's BatchNorm2d with momentum 1 - 0.5566).
# Its colour jitter (brightness +-0.1399, contrast +-0.1308) acts on the normalised images, as ours.
# The whitening bias trains ceil(0.19 x 32) = 7 steps. TTA: the 6 views on the 25% least confident test
# images; no validation during training. Not expressed here: decoupled weight decay on the Muon filters,
# equal weights of the 6 TTA views, whitening from its first 960 images, its Newton-Schulz coefficients,
# SiLU and lazy filter renormalisation.
_HIVERGE_BATCH = 1536
AIRBENCH_MUON_HIVERGE = {
    **AIRBENCH_MUON,
    "optim.lr": 0.205,                   # Muon LR of the conv filters
    "optim.momentum": 0.655,             # Muon momentum
    "optim.aux_lr": 0.5415 * _HIVERGE_BATCH,  # head LR 0.5415 (reference units)
    "optim.aux_momentum": 0.825,
    "optim.bias_lr_scale": 0.0573 / 0.5415,  # biases and norm parameters: SGD LR 0.0573 (reference units)
    "optim.weight_decay": 1.0418e-6 * _HIVERGE_BATCH,  # per step, at the peak LR
    "optim.label_smoothing": 0.09,
    "optim.epochs": 7.59,                # 243 steps of 1536 on 50,000 images (32 a epoch)
    "optim.batch_size": _HIVERGE_BATCH,
    "model.bn_momentum": 0.5566,
    "model.brightness": 0.1399,
    "model.contrast": 0.1308,
    "model.whiten_bias_epochs": 0.19,
    "model.tta_fraction": 0.25,
    "data.eval_every": 0,
}
LOOKAHEAD_EVERY = 5       # steps between two lookahead pulls (airbench's lookahead)
LOOKAHEAD_DECAY = 0.95    # per step: a pull keeps DECAY ** EVERY * (step / total) ** 3 of the slow copy
WHITEN_BIAS_EPOCHS = 3    # epochs the whitening stem's bias trains before it is frozen too

# Page's ResNet-9 recipe (DAWNBench): one-cycle SGD to 0.4, decoupled weight decay, 24 epochs of
# random 4-px crops and random flips. Registered models that do not say otherwise train with it.
CLASSIC = {
    "model.crop_pad": 4,                 # px: reflect-pad and crop back (random 4-px translation)
    "model.pad_mode": "reflect",
    "model.flip": "random",              # each image mirrored with probability 1/2 at every step
    "model.tta": 0,
    "optim.optimizer": "sgd",
    "optim.sgd_momentum": "keras",       # Keras's momentum rule (buffer of LR-scaled steps)
    "optim.lr": 0.4,                     # peak LR per step of the mean loss
    "optim.momentum": 0.9,
    "optim.nesterov": True,
    "optim.weight_decay": 5e-4,          # decoupled: lr * wd * w per step, not on biases or BatchNorm
    "optim.weight_decay_mode": "decoupled",
    "optim.bias_lr_scale": 1.0,
    "optim.schedule": "onecycle",
    "optim.warmup": 0.2,                 # fraction of the steps spent rising to the peak
    "optim.lr_start": 0.0,               # LR at step 0, as a fraction of the peak
    "optim.lr_end": 0.0,                 # LR at the last step, as a fraction of the peak
    "optim.label_smoothing": 0.2,
    "optim.epochs": 24,
    "optim.batch_size": 512,             # images per step, over all replicas
    "optim.lookahead": False,
    **MUON_SGD,
}

# Transfer learning starts from the seed experiment 1 setup (frozen ImageNet backbone, the seed
# head, Adam at a constant 0.001/31, batch 128, 30 epochs); --recipe picks the others.
TRANSFER = {
    "model.weights": "imagenet",         # the backbone's starting weights
    "model.freeze": "all",               # the whole backbone frozen: only the head trains
    "model.head": "seed",                # Flatten -> 512 -> 256 (dropout 0.2) -> classes
    "model.crop_pad": 0, "model.flip": "none", "model.tta": 0,  # no augmentation (as the seed script)
    "model.pad_mode": "reflect",
    "optim.optimizer": "adam",
    "optim.lr": 0.001 / 31,              # the seed's Adam LR, constant
    # used once a recipe or flag picks SGD, RMSprop or a one-cycle schedule: airbench's (ours)
    **{k: AIRBENCH[k] for k in ("optim.momentum", "optim.nesterov", "optim.sgd_momentum", "optim.warmup",
                                "optim.lr_start", "optim.lr_end")},
    "optim.weight_decay": 0.0,
    "optim.weight_decay_mode": "decoupled",
    "optim.bias_lr_scale": 1.0,
    "optim.schedule": "constant",
    "optim.label_smoothing": 0.0,
    "optim.epochs": 30,
    "optim.batch_size": 128,             # images per step
    "optim.lookahead": False,
    **MUON_SGD,
}

# Your own model (`--model FILE.keras` or `module:function`): a net the engine has never seen, so
# what model.fit trains it with. Adam at Keras's 1e-3 and Keras's batch of 32 (the batch a model of
# unknown size was developed with and fits in memory at); a cosine decay to zero, so that the final
# weights (what the run reports and exports) are annealed; plain cross-entropy, so that losses read
# as model.fit's; no weight decay. No augmentation, as model.fit: an unknown model may augment
# itself (Keras tutorials put RandomFlip and RandomTranslation layers in the model, which the
# engine's crops and flips would double), and flips do not suit every data set; `--crop-pad 4
# --flip random` turns the classic ones on. No test-time augmentation: the test accuracy is what
# model.evaluate reports. On a Keras-tutorial CNN (4096 CIFAR-10 images, 3 epochs) crops and flips
# cost 3-4 points of accuracy against this. The SGD-side values (used once --optimizer sgd or
# --schedule onecycle is given) are the classic recipe's. Page's SGD at 0.4 was this default before:
# it diverges on a Keras-tutorial CNN.
USER = {
    "model.crop_pad": 0,
    "model.pad_mode": "reflect",
    "model.flip": "none",
    "model.tta": 0,
    "optim.optimizer": "adam",
    "optim.lr": 1e-3,                    # Keras's Adam default
    **{k: CLASSIC[k] for k in ("optim.momentum", "optim.nesterov", "optim.sgd_momentum", "optim.lr_start",
                                "optim.lr_end")},
    "optim.weight_decay": 0.0,
    "optim.weight_decay_mode": "decoupled",
    "optim.bias_lr_scale": 1.0,
    "optim.schedule": "cosine",
    "optim.warmup": 0.0,                 # from 1e-3 at step 0, as model.fit
    "optim.label_smoothing": 0.0,
    "optim.epochs": 20,                  # ours
    "optim.batch_size": 32,              # model.fit's default
    "optim.lookahead": False,
    **MUON_SGD,
}

MODEL_RECIPES = {"airbench": AIRBENCH, "airbench-muon": {k: v for k, v in AIRBENCH_MUON.items() if k != "model.model"},
                 "classic": CLASSIC, "transfer": TRANSFER, "user": USER}
DEFAULT = "airbench-muon"  # the default model (and its recipe's name): the config dataclass defaults read it


def model_recipe(name: str) -> dict:
    if name not in MODEL_RECIPES:
        raise EngineError(f"unknown model recipe {name!r}; choose from {', '.join(MODEL_RECIPES)}")
    return MODEL_RECIPES[name]


def dotted(values: dict) -> dict:
    """{"section.name": value} (how recipes are written) -> {(section, name): value} (Config.with_overrides)."""
    return {tuple(key.split(".", 1)): value for key, value in values.items()}


# ---------------------------------------------------------------------------------------------
# Named, versioned recipes: the seed experiments


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    reproduces: str
    reported: str
    values: dict = field(default_factory=dict)
    after: str = ""  # a second phase: the recipe whose run --init-from must name

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
    Recipe("airbench-muon", 1,
           "airbench94_muon (Keller Jordan, 2024): Muon on the conv filters, SGD-Nesterov on the rest, batch 2000, "
           "8 epochs, linear decay to zero, no lookahead",
           "94.01% mean over 200 runs on the original CIFAR-10, 2.59 s on an A100", dict(AIRBENCH_MUON)),
    Recipe("airbench-muon-hiverge", 1,
           "hiverge's CIFAR-10 speedrun (2025): airbench94_muon retuned: batch 1536, 7.59 epochs, label smoothing "
           "0.09, colour jitter, Muon 0.205/0.655, SGD momentum 0.825, BatchNorm momentum 0.5566, whitening bias "
           "trained 7 steps, TTA on the 25% least confident test images, no validation during training",
           "94.01% mean over 2,000 runs on the original CIFAR-10, 2.015 s on an A100", dict(AIRBENCH_MUON_HIVERGE)),
    Recipe("vgg16-frozen-64", 1,
           "experiment 1: VGG16 (ImageNet, frozen), 32->64 upsampling, Flatten-512-256 head with dropout "
           "0.2, Adam at a constant 0.001/31, batch 128, 30 epochs",
           "92.05% (best epoch 22)", _experiment1("vgg16")),
    Recipe("densenet121-frozen-64", 1, "experiment 1 with DenseNet121 as the backbone",
           "within 0.08% of VGG16", _experiment1("densenet121")),
    Recipe("vgg19-frozen-224", 1,
           "experiment 2: VGG19 (ImageNet, frozen) at 224x224; logits out, so no softmax-into-from-logits "
           "pitfall; head, Adam 1e-4, batch 64 and 10 epochs are ours",
           "not stated",
           {**_SEED_HEAD, "model.model": "vgg19", "model.upsample": 224, "model.head": "gap",
            "optim.optimizer": "adam", "optim.lr": 1e-4, "optim.schedule": "constant",
            "optim.batch_size": 64, "optim.epochs": 10}),
    Recipe("inceptionv3-frozen-75", 1,
           "experiment 4: InceptionV3 (ImageNet, frozen) at 75x75, two added layers (Dense 512, Dense), "
           "Adam with LR decay (x0.5 every 5 epochs: ours) and early stopping (patience 3: ours)",
           "87% val / 98% train",
           {**_SEED_HEAD, "model.model": "inception_v3", "model.upsample": 75, "model.head": "dense512",
            "optim.optimizer": "adam", "optim.lr": 1e-3, "optim.schedule": "step", "optim.lr_step_epochs": 5,
            "optim.lr_decay": 0.5, "optim.batch_size": 128, "optim.epochs": 30, "optim.early_stop": 3}),
    Recipe("vgg16-finetune-32", 1,
           "experiment 5: VGG16 fine-tuned from block5_conv1 at 32x32, Flatten -> Dense 512 head, RMSprop "
           "(lr 1e-4, 20 epochs: ours); it overfits, as the curves show",
           "overfits (no accuracy stated)",
           {**_SEED_HEAD, "model.model": "vgg16", "model.upsample": 32, "model.freeze": "block5_conv1",
            "model.head": "dense512", "optim.optimizer": "rmsprop", "optim.lr": 1e-4, "optim.momentum": 0.0,
            "optim.schedule": "constant", "optim.batch_size": 128, "optim.epochs": 20}),
    Recipe("vgg16-finetune-block5", 1,
           "phase 2 of the two-phase fine-tune: from a vgg16-frozen-64 run's weights (--init-from RUN), "
           "block5_conv1 on trains with the head, Adam at a constant 1e-5 (ours), 4-px crops and flips, 10 epochs",
           "ours (not a seed experiment)",
           {**_experiment1("vgg16"), "model.weights": "none",  # every weight comes from --init-from
            "model.freeze": "block5_conv1", "model.crop_pad": 4, "model.flip": "random", "optim.lr": 1e-5,
            "optim.epochs": 10}, after="vgg16-frozen-64"),
]}


# The names the recipes had first, after the seed experiments' numbers: still accepted.
ALIASES = {"seed-vgg16-frozen": "vgg16-frozen-64", "seed-densenet121-frozen": "densenet121-frozen-64",
           "seed-vgg19-224": "vgg19-frozen-224", "seed-inception-frozen": "inceptionv3-frozen-75",
           "seed-vgg16-finetune": "vgg16-finetune-32"}


def get(name: str) -> Recipe:
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        raise EngineError(f"unknown recipe {name!r}; choose from {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def overrides(recipe: Recipe) -> dict:
    """{(section, name): value} for Config.with_overrides."""
    return dotted(recipe.values)


def table() -> str:
    return "\n".join(f"{r.tag:30s} {r.reproduces}; reported: {r.reported}" + (f"; after: {r.after}" if r.after else "")
                     for r in RECIPES.values())
