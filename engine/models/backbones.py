"""Transfer-learning models: a `keras.applications` backbone (include_top=False) plus a head.

    uint8 32x32 -> kernels.upsample -> kernels.normalize (the backbone's preprocess_input) ->
    backbone (nested model named "backbone") -> head -> logits

`--weights imagenet|none|PATH` picks the backbone's starting weights, `--freeze all|none|LAYER`
what trains (LAYER: that backbone layer and everything after it; a frozen BatchNormalization runs in
inference mode), `--head` the classifier on top. The heads are the seed experiments':

    seed      Flatten -> Dense 512 ReLU -> Dropout 0.2 -> Dense 256 ReLU -> Dropout 0.2 -> Dense
    dense512  Flatten -> Dense 512 ReLU -> Dense
    gap       GlobalAveragePooling -> Dense

Heads end in logits: a softmax belongs in the loss (from logits) and in whoever asks for
probabilities, never in the model.
"""
from __future__ import annotations

import os

import keras

from engine.errors import EngineError
from engine.models.catalog import BACKBONES  # noqa: F401 - re-exported: the backbone table
from engine.models.registry import BACKBONE

L = keras.layers
HEADS = ("seed", "dense512", "gap")


def backbone(name: str, size: int, weights: str = "none"):
    """The keras.applications model without its top, named BACKBONE. `weights`: imagenet, none or
    a weights file (e.g. one saved with `save_weights`)."""
    ctor = getattr(keras.applications, BACKBONES[name][0])
    if weights not in ("imagenet", "none") and not os.path.isfile(weights):
        raise EngineError(f"--weights {weights}: no such file (use imagenet, none or a weights file)")
    try:
        model = ctor(include_top=False, weights=None if weights == "none" else weights,
                     input_shape=(size, size, 3), name=BACKBONE)
    except Exception as e:  # keras raises plain Exceptions for failed downloads and bad files
        if weights == "imagenet":
            raise EngineError(f"cannot download the ImageNet weights of {name} (no internet?): fetch them where "
                              f"you can and pass --weights FILE, or use --weights none") from None
        raise EngineError(f"cannot load --weights {weights} into {name}: {str(e).splitlines()[0][:200]}") from None
    return model


def apply_freeze(model, freeze: str, label: str = "") -> None:
    """all: the whole backbone frozen; none: all trains; LAYER: backbone layers before LAYER frozen."""
    if freeze == "none":
        return
    if freeze == "all":
        model.trainable = False
        return
    names = [layer.name for layer in model.layers]
    if freeze not in names:
        raise EngineError(f"--freeze {freeze}: {label or model.name} has no such layer; choose all, none or one of "
                          f"{', '.join(n for n in names if 'conv' in n or 'block' in n)[:300]}")
    start = names.index(freeze)
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= start


def head(x, kind: str, num_classes: int):
    if kind == "gap":
        return L.Dense(num_classes, name="logits_dense")(L.GlobalAveragePooling2D()(x))
    x = L.Flatten()(x)
    if kind == "seed":
        x = L.Dropout(0.2)(L.Dense(512, activation="relu")(x))
        x = L.Dropout(0.2)(L.Dense(256, activation="relu")(x))
    elif kind == "dense512":
        x = L.Dense(512, activation="relu")(x)
    else:
        raise EngineError(f"unknown --head {kind!r}; choose from {', '.join(HEADS)}")
    return L.Dense(num_classes, name="logits_dense")(x)


def body(x, num_classes, opts=None, name="vgg16"):
    base = backbone(name, x.shape[1], opts.weights if opts else "none")
    apply_freeze(base, opts.freeze if opts else "all", name)
    return head(base(x), opts.head if opts else "seed", num_classes)
