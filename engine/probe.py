"""`engine probe` (or `python -m engine.probe`): a linear probe -- frozen backbone features (or raw pixels) ->
scikit-learn LogisticRegression, scored by stratified k-fold cross-validation (seed experiment 3).

    engine probe --model vgg16 --weights imagenet --class-subset 6,8 --folds 10

Features are the backbone's output (include_top=False) at --upsample size, flattened, computed in
batches on the device with the preprocessing a trained model of that backbone has (engine.models.
preprocess_for: a grayscale image's channel repeated to RGB in the graph, upsampled to at least the
backbone's default side, its own normalisation). The raw-pixel baseline (pixels / 255, flattened) runs
on the data's own pixels (28x28x1 for MNIST) of the same images and folds, so the two numbers compare
like for like.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from engine.cli import Parser, import_tensorflow_quietly, integer
from engine.config import ModelConfig, add_data_flags, default_cache_dir
from engine.contract import UPSAMPLE_METHODS, shape_text
from engine.errors import EngineError, cli


def parse(argv=None):
    p = Parser(prog="engine probe", description=__doc__.split("\n\n")[0])
    d = p.add_argument_group("data")
    add_data_flags(d, "data source as for engine train, e.g. digits (scikit-learn's 8x8 digits, 8x8x1) or digits32 "
                         "(the same at 32x32x3)")
    d.add_argument("--class-subset", "--classes", dest="classes", default="", metavar="A,B,...",
                   help="probe only these classes: comma-separated indices or names (empty: all)")
    d.add_argument("--limit", type=integer, default=0, metavar="N",
                   help="class-balanced subset of N training images (0: all)")
    m = p.add_argument_group("model")
    m.add_argument("--model", "--backbone", dest="backbone", default="vgg16", metavar="NAME",
                   help="a backbone model (vgg16, vgg19, inception_v3, densenet121, resnet50) or pixels")
    m.add_argument("--weights", default="imagenet", help="imagenet (downloads), none, or a weights file")
    m.add_argument("--upsample", type=integer, default=0, metavar="N",
                   help="input side (0: the backbone's default, or the images' side where larger)")
    m.add_argument("--upsample-method", choices=list(UPSAMPLE_METHODS), default="nearest",
                   help="upsampling interpolation")
    m.add_argument("--pixels", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the raw-pixel baseline on the same images and folds")
    c = p.add_argument_group("cross-validation")
    c.add_argument("--folds", type=integer, default=10, metavar="N", help="cross-validation folds")
    c.add_argument("--max-iter", type=integer, default=2000, metavar="N", help="LogisticRegression iterations")
    c.add_argument("--seed", type=integer, default=0, metavar="N",
                   help="seed of the fold split, the subset and a backbone's random init (--weights none)")
    o = p.add_argument_group("output")
    o.add_argument("--out", "--report", dest="report", default="", metavar="FILE",
                   help="write the results as JSON here (empty: print only)")
    return p.parse_args(argv)


def select_classes(spec: str, class_names: list) -> list[int]:
    if not spec:
        return list(range(len(class_names)))
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < len(class_names):
            out.append(int(item))
        elif item in class_names:
            out.append(class_names.index(item))
        else:
            raise EngineError(f"--class-subset: no class {item!r}; the classes are 0-{len(class_names) - 1}: "
                              f"{', '.join(class_names)}")
    if len(set(out)) < 2:
        raise EngineError("--class-subset needs at least two different classes")
    return sorted(set(out))


def check_backbone(name: str, weights: str = "none") -> None:
    """A one-line error, before any data is decoded or TensorFlow imported, for an unknown backbone or a
    --weights file that is not there."""
    from engine.models.catalog import BACKBONES
    if name not in BACKBONES:
        raise EngineError(f"--model {name!r}: choose pixels or one of {', '.join(BACKBONES)}")
    if weights not in ("imagenet", "none") and not os.path.isfile(weights):
        raise EngineError(f"--weights {weights}: no such file (use imagenet, none or a weights file)")


def backbone_features(name: str, weights: str, upsample: int, images: np.ndarray, seed: int = 0,
                      method: str = "nearest") -> tuple[np.ndarray, tuple, tuple]:
    """(flattened features [N, F], the backbone's input shape [S, S, 3], its output shape) of uint8
    images [N, H, W, C], through the preprocessing a trained model of this backbone has."""
    from engine import models
    check_backbone(name)
    spec = models.get(name)
    models.input_size(spec, upsample, tuple(images.shape[1:]))  # a side below the backbone's minimum: refused
    import_tensorflow_quietly()
    import keras
    preprocess = models.preprocess_for(spec, ModelConfig(upsample=upsample, upsample_method=method),
                                       tuple(images.shape[1:]))

    from engine.models import backbones
    from engine.train import feature_cache
    keras.utils.set_random_seed(seed)  # --weights none: the same random backbone every run
    base = backbones.backbone(name, preprocess.size, weights)
    out = feature_cache.extract(base, images, preprocess)
    return (out.reshape(len(out), -1), (preprocess.size, preprocess.size, preprocess.channels),
            tuple(int(d) for d in out.shape[1:]))


def check_folds(y: np.ndarray, folds: int, names: list | None = None) -> None:
    """A one-line error unless the labels y (0..K-1, K = len(names)) hold at least two classes and every
    class has at least `folds` (>= 2) images: what stratified k-fold cross-validation needs."""
    counts = np.bincount(y, minlength=len(names) if names else 0)
    present = np.flatnonzero(counts)
    names = names or [str(c) for c in range(len(counts))]
    if len(present) < 2:
        have = f"only class {names[present[0]]!r}" if len(present) else "no images"
        raise EngineError(f"a probe needs images of at least two classes; the data has {have}")
    if folds < 2:
        raise EngineError(f"--folds {folds}: cross-validation needs at least 2 folds")
    small = int(np.argmin(counts))
    n = int(counts[small])
    if n < folds:
        fix = f"give --folds 2 to {n}" if n >= 2 else "each class needs at least 2 (leave it out with --class-subset)"
        raise EngineError(f"--folds {folds}: class {names[small]!r} has {n} image{'s' * (n != 1)}, fewer than the "
                          f"folds; {fix}")


def cross_validate(x: np.ndarray, y: np.ndarray, folds: int, seed: int, max_iter: int) -> np.ndarray:
    """Per-fold accuracy of standardised features -> logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    check_folds(y, folds)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_score(model, x, y, cv=split, scoring="accuracy")


def run(a) -> dict:
    from engine import data
    if a.backbone != "pixels":
        check_backbone(a.backbone, a.weights)  # before the data is decoded
    splits = data.load(a.data, a.cache_dir or default_cache_dir(), log=print, label_mode=a.label_mode or "fine",
                       image_size=a.image_size or "")
    classes = select_classes(a.classes, splits.class_names)
    keep = np.isin(splits.y_train, classes)
    x, y = splits.x_train[keep], splits.y_train[keep]
    y = np.searchsorted(classes, y)
    if a.limit:
        x, y, _, _ = data.balanced_subset(x, y, a.limit, seed=a.seed, num_classes=len(classes))
    names = [splits.class_names[c] for c in classes]
    check_folds(y, a.folds, names)  # before any feature is computed
    print(f"probe: {len(x)} images of {shape_text(x.shape[1:])} of {', '.join(names)}; {a.folds}-fold "
          f"cross-validation")
    results = {}
    sources = ["pixels"] if a.backbone == "pixels" else [a.backbone] + (["pixels"] if a.pixels else [])
    for source in sources:
        t0 = time.perf_counter()
        if source == "pixels":  # the data's own pixels, e.g. 28x28x1
            feats = x.reshape(len(x), -1).astype(np.float32) / 255.0
            input_shape, feature_shape = tuple(x.shape[1:]), tuple(x.shape[1:])
        else:
            feats, input_shape, feature_shape = backbone_features(source, a.weights, a.upsample, x, a.seed,
                                                                  a.upsample_method)
        scores = cross_validate(feats, y, a.folds, a.seed, a.max_iter)
        results[source] = {"mean": float(scores.mean()), "std": float(scores.std()), "folds": scores.tolist(),
                           "features": int(feats.shape[1]), "input_shape": list(input_shape),
                           "feature_shape": list(feature_shape), "seconds": time.perf_counter() - t0}
        label = source if source == "pixels" else f"{source} ({a.weights}, {shape_text(input_shape)} input)"
        print(f"{label:28s} {feats.shape[1]:6d} features: accuracy {scores.mean():.4f} ± {scores.std():.4f}")
    report = {"data": a.data, "label_mode": a.label_mode or "fine", "image_size": a.image_size or "",
              "image_shape": shape_text(x.shape[1:]), "classes": names, "images": int(len(x)), "folds": a.folds,
              "weights": a.weights, "results": results}
    if a.report:
        from engine.files import write_json
        write_json(a.report, report)
    return report


@cli
def main(argv=None):
    run(parse(argv))


if __name__ == "__main__":
    main()
