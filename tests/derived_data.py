"""Real images at shapes other than CIFAR-10's, derived from the shared JPEG CIFAR-10 (ENGINE_DATA):

- 28x28 grayscale, written as Keras's official `mnist.npz` (x_train uint8 [N,28,28], y_train,
  x_test, y_test): each image converted to luminance (PIL's convert("L")), then resized with PIL's
  bilinear filter, the order `engine predict --resize` uses for a colour image given to a grey model;
- 64x64 RGB, written as a `train/<class>/NNNNN.png`, `test/<class>/NNNNN.png` folder tree: each image
  resized with PIL's bilinear filter.

No MNIST or Tiny-ImageNet can be downloaded on the machines that test this project; these are real
photographs at those shapes, with CIFAR-10's ten classes. The tests take class-balanced subsets
(tests/conftest.py's derived_* fixtures); bench/results/.../derived-shapes/ derives the whole set:

    python -m tests.derived_data ARCHIVE OUT_DIR [--train N] [--test N] [--only grey28|rgb64]

writes OUT_DIR/grey28/mnist.npz and the tree OUT_DIR/rgb64/ (resized with the filter
`engine train --data ARCHIVE --image-size 64x64` uses: PIL's bilinear).
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

GREY28 = (28, 28, 1)
RGB64 = (64, 64, 3)


def resize(images: np.ndarray, shape: tuple) -> np.ndarray:
    """uint8 [N,32,32,3] -> uint8 [N,H,W,C] (C 1: luminance first, then the size; PIL bilinear)."""
    from PIL import Image
    h, w, c = shape

    def one(a):
        im = Image.fromarray(a)
        if c == 1:
            im = im.convert("L")
        return np.asarray(im.resize((w, h), Image.BILINEAR))
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        out = np.stack(list(pool.map(one, images, chunksize=256)))
    return out if c == 3 else out[..., None]


def subset(splits, n_train: int = 0, n_test: int = 0):
    """(x_train, y_train, x_test, y_test): class-balanced subsets of n images (0: all), seed 0."""
    from engine.data import balanced_subset
    xtr, ytr, xte, yte = splits.x_train, splits.y_train, splits.x_test, splits.y_test
    if n_train:
        xtr, ytr, _, _ = balanced_subset(xtr, ytr, n_train, seed=0)
    if n_test:
        xte, yte, _, _ = balanced_subset(xte, yte, n_test, seed=0)
    return xtr, ytr, xte, yte


def write_mnist_npz(path: str, x_train, y_train, x_test, y_test) -> str:
    """Keras's mnist.npz layout: uint8 [N,H,W] images, uint8 labels, uncompressed."""
    sq = (lambda x: x[..., 0]) if x_train.shape[-1] == 1 else (lambda x: x)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez(path, x_train=sq(x_train), y_train=y_train.astype(np.uint8),
             x_test=sq(x_test), y_test=y_test.astype(np.uint8))
    return path


def write_png_tree(root: str, classes, x_train, y_train, x_test, y_test) -> str:
    """train/<class>/NNNNN.png and test/<class>/NNNNN.png, lossless."""
    from PIL import Image

    def save(item):
        path, a = item
        Image.fromarray(a if a.shape[-1] == 3 else a[..., 0]).save(path, format="PNG", compress_level=1)
    jobs = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
        jobs += [(os.path.join(root, split, classes[int(label)], f"{i:05d}.png"), a)
                 for i, (a, label) in enumerate(zip(x, y))]
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(save, jobs, chunksize=256))
    return root


def derive_grey28(splits, path: str, n_train: int = 0, n_test: int = 0) -> str:
    """mnist.npz of 28x28 grey versions of a class-balanced subset (0: all) of `splits`."""
    xtr, ytr, xte, yte = subset(splits, n_train, n_test)
    return write_mnist_npz(path, resize(xtr, GREY28), ytr, resize(xte, GREY28), yte)


def derive_rgb64(splits, root: str, n_train: int = 0, n_test: int = 0) -> str:
    """A PNG class-folder tree of 64x64 RGB versions of a class-balanced subset (0: all) of `splits`."""
    xtr, ytr, xte, yte = subset(splits, n_train, n_test)
    return write_png_tree(root, list(splits.class_names), resize(xtr, RGB64), ytr, resize(xte, RGB64), yte)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.derived_data", description=__doc__.split("\n\n")[0])
    p.add_argument("archive", help="the JPEG CIFAR-10 (a class-folder tree or a .tar/.tar.gz of one)")
    p.add_argument("out", help="writes OUT/grey28/mnist.npz and OUT/rgb64/{train,test}/<class>/*.png")
    p.add_argument("--train", type=int, default=0, help="a class-balanced subset of N training images (0: all)")
    p.add_argument("--test", type=int, default=0, help="a class-balanced subset of N test images (0: all)")
    p.add_argument("--only", choices=("grey28", "rgb64"), help="derive only this one")
    a = p.parse_args(argv)
    from engine import data
    from engine.config import default_cache_dir
    splits = data.load(a.archive, default_cache_dir())
    if a.only != "rgb64":
        print(derive_grey28(splits, os.path.join(a.out, "grey28", "mnist.npz"), a.train, a.test))
    if a.only != "grey28":
        print(derive_rgb64(splits, os.path.join(a.out, "rgb64"), a.train, a.test))


if __name__ == "__main__":
    main()
