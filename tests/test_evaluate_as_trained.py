"""`engine evaluate` on a run (its folder, or an export inside it) evaluates it on the data as it was trained:
the data flags its config.json stores (--data, --label-mode, --image-size, --limit-test) are the defaults,
so the user does not repeat them. A --label-mode or --image-size that contradicts the run is refused in one
line (exit 2): the model knows only its own classes and image size, so any other value would only print a
wrong accuracy. --data and --limit-test given override the run's (another test set of the images it takes, or
fewer of them), with a line saying so. Through the CLI, from a temporary working directory, relative paths."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, make_tar

TRAIN = ["--model", "tiny", "--epochs", "1", "--batch-size", "16", "--val-images", "0", "--no-amp", "--no-xla",
         "--quiet"]


def engine(cwd, *args):
    env = {**os.environ, "ENGINE_CACHE": str(cwd / "cache")}
    env.pop("ENGINE_DATA", None)
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def mixed_size_tree(root, n=(8, 4)):
    """PNGs of three sizes (none 48x48), two classes: without --image-size the tree is refused."""
    from PIL import Image
    rng = np.random.default_rng(0)
    sizes = [(40, 40), (56, 48), (48, 64)]
    for split, k in zip(("train", "test"), n):
        for c, shade in (("dark", 40), ("light", 200)):
            (root / split / c).mkdir(parents=True)
            for i in range(k):
                h, w = sizes[i % 3]
                img = np.clip(rng.normal(shade, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i}.png")
    return root


def cifar100_tar(path, n_train=160, n_test=80):
    """The official cifar-100-python.tar.gz layout: train, test, meta pickles (32x32x3, fine and coarse)."""
    rng = np.random.default_rng(3)
    members = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [(i % 20) * 5 + i // 20 % 5 for i in range(n)]  # every coarse class (fine // 5) in each split
        members.append((f"cifar-100-python/{split}", pickle.dumps(
            {b"filenames": [b"f.png"] * n, b"batch_label": b"x", b"fine_labels": fine,
             b"coarse_labels": [f // 5 for f in fine], b"data": x.transpose(0, 3, 1, 2).reshape(n, -1)}, protocol=2)))
    members.append(("cifar-100-python/meta", pickle.dumps(
        {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
         b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]}, protocol=2)))
    return make_tar(path, members)


def same_accuracy(report, run, images):
    """evaluate's top-1 on the run's test split is the one the run measured (within an image's rounding)."""
    measured = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert report["images"] == images
    assert abs(report["top1_accuracy"] - measured) <= 1 / images + 1e-9, (report, measured)


def test_a_run_trained_with_image_size_on_a_mixed_tree_is_evaluated_at_that_size(tmp_path):
    mixed_size_tree(tmp_path / "photos")
    p = engine(tmp_path, "train", *TRAIN, "--data", "photos", "--image-size", "48x48", "--out", "runs/t")
    assert p.returncode == 0, p.stderr
    p = engine(tmp_path, "evaluate", "runs/t", "--out", "e.json")  # no --data, no --image-size
    assert p.returncode == 0, p.stderr
    assert "--data photos --image-size 48x48" in p.stdout
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["image_size"] == "48x48" and report["data"] == "photos" and report["classes"] == 2
    same_accuracy(report, tmp_path / "runs/t", 8)

    p = engine(tmp_path, "evaluate", "runs/t", "--image-size", "32x32", "--out", "f.json")
    assert_one_line_error(p, "--image-size 32x32: runs/t takes 48x48 images (trained at --image-size 48x48)")
    assert p.returncode == 2 and not (tmp_path / "f.json").exists()

    # int8 calibration reads the run's data as the run did: at its --image-size (the tree alone is refused)
    p = engine(tmp_path, "export", "onnx", "runs/t", "--precision", "int8", "--calib-images", "8", "--out", "q.onnx")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "q.onnx").is_file()


def test_a_run_trained_on_cifar100_coarse_labels_is_evaluated_on_its_20_classes(tmp_path):
    cifar100_tar(tmp_path / "cifar-100-python.tar.gz")
    p = engine(tmp_path, "train", *TRAIN, "--data", "cifar-100-python.tar.gz", "--label-mode", "coarse",
               "--limit-test", "40", "--out", "runs/c")
    assert p.returncode == 0, p.stderr
    p = engine(tmp_path, "evaluate", "runs/c", "--out", "e.json")
    assert p.returncode == 0, p.stderr
    assert "--label-mode coarse --limit-test 40" in p.stdout
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["label_mode"] == "coarse" and report["classes"] == 20
    same_accuracy(report, tmp_path / "runs/c", 40)

    p = engine(tmp_path, "evaluate", "runs/c", "--label-mode", "fine", "--out", "f.json")
    assert_one_line_error(p, "--label-mode fine: runs/c was trained on coarse labels")
    assert p.returncode == 2 and not (tmp_path / "f.json").exists()

    # Its export moved out of the run: no settings to read, so the default fine labels, 100 classes for the
    # model's 20 outputs: refused, not scored.
    assert engine(tmp_path, "export", "onnx", "runs/c", "--out", "c.onnx").returncode == 0
    p = engine(tmp_path, "evaluate", "c.onnx", "--data", "cifar-100-python.tar.gz", "--out", "f.json")
    assert_one_line_error(p, "c.onnx has 20 outputs but --data cifar-100-python.tar.gz has 100 classes")
    assert p.returncode == 2 and not (tmp_path / "f.json").exists()
