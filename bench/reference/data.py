"""The engine's data in the files the reference airbench94 reads (`cifar10/train.pt`, `test.pt`).

Two steps, because the engine and PyTorch usually live in different environments:

    python -m bench.reference.data export DIR            # the engine's environment: DIR/cifar10.npz
    REF_PYTHON -m bench.reference.data pt DIR            # an environment with torch: DIR/cifar10/*.pt

`export` decodes `--data` (default: ENGINE_DATA) exactly as training does and puts the 50,000 training
images in one fixed mixed-class order (numpy.random.default_rng(0).permutation): the reference
whitens its first layer from the first 5,000 training images, so a class-sorted order would whiten
from a few classes only. The test images keep their order. This module imports neither TensorFlow
nor torch at the top, so either environment runs it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ORDER_SEED = 0


def ordered(x_train, y_train, seed: int = ORDER_SEED):
    """The training images and labels in the reference's fixed order."""
    perm = np.random.default_rng(seed).permutation(len(x_train))
    return x_train[perm], y_train[perm]


def export(out_dir: str, source: str) -> str:
    from engine import data
    from engine.config import default_cache_dir
    splits = data.load(source, default_cache_dir(), log=lambda *a, **k: None)
    x, y = ordered(splits.x_train, splits.y_train)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "cifar10.npz")
    np.savez(path, x_train=x, y_train=y, x_test=splits.x_test, y_test=splits.y_test,
             classes=np.array(splits.class_names))
    return path


def to_torch(out_dir: str) -> list[str]:
    import torch
    arrays = np.load(os.path.join(out_dir, "cifar10.npz"))
    classes = [str(c) for c in arrays["classes"]]
    os.makedirs(os.path.join(out_dir, "cifar10"), exist_ok=True)
    paths = []
    for split in ("train", "test"):
        path = os.path.join(out_dir, "cifar10", f"{split}.pt")
        torch.save({"images": torch.tensor(arrays[f"x_{split}"]),
                    "labels": torch.tensor(arrays[f"y_{split}"].astype(np.int64)), "classes": classes}, path)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reference.data", description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["export", "pt"])
    p.add_argument("dir")
    p.add_argument("--data", default=os.environ.get("ENGINE_DATA", "cifar10"),
                   help="what `engine train --data` takes (default: ENGINE_DATA, else cifar10)")
    a = p.parse_args(argv)
    if a.step == "pt":
        try:
            print("wrote " + ", ".join(to_torch(a.dir)))
        except ImportError as e:
            print(f"error: this step needs torch (pip install torch): {e}", file=sys.stderr)
            return 2
        except FileNotFoundError as e:
            print(f"error: {e.filename}: not found (run the export step first)", file=sys.stderr)
            return 2
        return 0
    from engine.errors import EngineError
    try:
        print(f"wrote {export(a.dir, a.data)}")
    except EngineError as e:  # bad --data: one line already
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
