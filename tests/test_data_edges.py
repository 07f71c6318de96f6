"""Data sets at the edges of what the loaders take, met through the CLI from a temporary working folder with
relative paths, as a user meets them: what they cannot take is one line (exit 2, `error: ...`, no
traceback)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_error, png_bytes


def engine(cwd, *args) -> subprocess.CompletedProcess:
    """`python -m engine args...` run from `cwd`, with this checkout's engine and a private data cache."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), ENGINE_CACHE=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def train(cwd, data, *extra) -> subprocess.CompletedProcess:
    return engine(cwd, "train", "--model", "tiny", "--data", data, "--epochs", "1", "--batch-size", "2",
                  "--no-amp", "--no-xla", "--quiet", "--out", "runs/t", *extra)


def _tree_tar(path, big_side=128):
    """A .tar (or .tar.gz) of a train/<class>/ test/<class>/ tree whose last member is a PNG of noise of
    big_side x big_side (about 50 KB), so that a cut in the second half of the file falls in its data."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz" if str(path).endswith(".gz") else "w") as tar:
        members = [(f"{split}/{c}/{i}.png", png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
                   for split in ("train", "test") for c in ("a", "b") for i in range(2)]
        members.append(("train/b/big.png", png_bytes(rng.integers(0, 256, (big_side, big_side, 3), dtype=np.uint8))))
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("name", ["t.tar", "t.tar.gz"])
def test_an_archive_cut_inside_a_members_data_is_one_line_naming_it(name, tmp_path):
    full = _tree_tar(tmp_path / ("whole-" + name)).read_bytes()
    cut = len(full) * 3 // 4
    if name == "t.tar":  # the cut inside the big member's data (not at a header), as `head -c` makes it
        with tarfile.open(tmp_path / ("whole-" + name)) as tar:
            big = tar.getmember("train/b/big.png")
        assert big.offset_data < cut < big.offset_data + big.size
    (tmp_path / name).write_bytes(full[:cut])
    p = train(tmp_path, name)
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, f"cannot read {tmp_path / name}", "not a valid or complete tar archive")
    assert not (tmp_path / "runs").exists()  # nor the folder above the run that the start made


def _png_tree(root, counts: dict, side=8):
    """train/<class>/ and test/<class>/ of `counts[class]` noise PNGs each."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c, n in counts.items():
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (side, side, 3),
                                                                                   dtype=np.uint8)))
    return root


def test_a_probe_of_one_class_is_one_line_before_any_feature(tmp_path):
    _png_tree(tmp_path / "one", {"a": 4})
    p = engine(tmp_path, "probe", "--data", "one", "--model", "vgg16", "--weights", "none", "--folds", "2")
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "at least two classes", "only class 'a'")
    assert "probe:" not in p.stdout  # the line printed before the features are computed


def test_a_probe_with_a_class_smaller_than_the_folds_is_one_line_before_any_feature(tmp_path):
    _png_tree(tmp_path / "t", {"a": 4, "b": 2})
    p = engine(tmp_path, "probe", "--data", "t", "--model", "vgg16", "--weights", "none", "--folds", "3")
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "--folds 3: class 'b' has 2 images", "give --folds 2 to 2")
    assert "probe:" not in p.stdout


def _npz(path, k, n_train=24, n_test=12, shape=(8, 8, 3)):
    """An .npz of noise images with labels 0..k-1 (each class in both splits)."""
    rng = np.random.default_rng(2)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), y_train=np.arange(n_train) % k,
             x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), y_test=np.arange(n_test) % k)
    return path


def test_an_npz_of_twelve_classes_trains_a_twelve_class_model(tmp_path):
    _npz(tmp_path / "c12.npz", 12)
    p = train(tmp_path, "c12.npz", "--crop-pad", "0")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "runs" / "t" / "classes.json").read_text()) == [str(c) for c in range(12)]


@pytest.mark.parametrize("data, kind", [("c3.npz", "is an .npz"), ("digits", "is the digits data set"),
                                        ("t.tar", "is a source of image folders")])
def test_label_mode_coarse_where_it_cannot_apply_is_one_line(tmp_path, data, kind):
    _npz(tmp_path / "c3.npz", 3)
    _tree_tar(tmp_path / "t.tar", big_side=8)
    # a tree's kind is known once it is opened: refused at its first image (probe's load, without TensorFlow)
    if data == "t.tar":
        p = engine(tmp_path, "probe", "--data", data, "--label-mode", "coarse", "--model", "pixels", "--folds", "2")
    else:
        p = train(tmp_path, data, "--label-mode", "coarse")
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, f"--label-mode coarse: {data if data != 't.tar' else tmp_path / data} {kind}",
                          "applies only to CIFAR-100")
    assert not (tmp_path / "runs").exists()  # nor the folder above the run that the start made


def test_image_size_resizes_an_npz_and_the_run_records_the_size_it_trained_at(tmp_path):
    _npz(tmp_path / "g.npz", 3, shape=(8, 8))
    p = train(tmp_path, "g.npz", "--image-size", "12x16", "--crop-pad", "0")
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "runs" / "t" / "config.json").read_text())["data"]
    assert (data["image_size"], data["image_shape"]) == ("12x16", "12x16x1")


def test_training_on_one_class_is_one_line(tmp_path):
    _npz(tmp_path / "one.npz", 1)
    p = train(tmp_path, "one.npz")
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "the training images of --data one.npz are all of class '0'", "at least two classes")
    assert not (tmp_path / "runs").exists()  # nor the folder above the run that the start made


def test_crop_pad_on_images_of_one_pixel_says_to_turn_it_off(tmp_path):
    _png_tree(tmp_path / "px", {"a": 2, "b": 2}, side=1)
    p = train(tmp_path, "px", "--crop-pad", "4")
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "--crop-pad 4 must be below the images' side (1); give --crop-pad 0 (off)")
    assert "to 0" not in p.stderr
