"""An .npz (or MNIST-style IDX files) holds as many classes as its largest label + 1: names '0'..'K-1',
Fashion-MNIST's ten names only for ten classes under a path naming fashion; MNIST stays as it was."""
from __future__ import annotations

import numpy as np

from engine.data import mnist, sources
from engine.data.cache import cache_path, write_cache
from engine.data.splits import Splits


def _npz(path, k, n_train=24, n_test=12):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 5, 7), dtype=np.uint8), y_train=np.arange(n_train) % k,
             x_test=rng.integers(0, 256, (n_test, 5, 7), dtype=np.uint8), y_test=np.arange(n_test) % k)
    return str(path)


def test_a_three_class_npz_has_three_classes(tmp_path):
    s = mnist.load_npz(_npz(tmp_path / "c3.npz", 3))
    assert s.class_names == ["0", "1", "2"]


def test_a_twenty_class_npz_has_twenty_classes(tmp_path):
    s = mnist.load_npz(_npz(tmp_path / "c20.npz", 20, n_train=40, n_test=20))
    assert s.class_names == [str(c) for c in range(20)] and int(s.y_train.max()) == 19


def test_the_class_count_is_the_largest_label_of_either_split_plus_one(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8), y_train=np.array([0, 1, 0, 1]),
             x_test=rng.integers(0, 256, (2, 5, 5), dtype=np.uint8), y_test=np.array([0, 4]))
    assert mnist.load_npz(str(tmp_path / "d.npz")).class_names == ["0", "1", "2", "3", "4"]


def test_the_ten_clothing_names_only_for_ten_classes(tmp_path):  # (no "fashion" in tmp_path)
    assert mnist.load_npz(_npz(tmp_path / "fashion10.npz", 10)).class_names == mnist.FASHION_MNIST_CLASSES
    assert mnist.load_npz(_npz(tmp_path / "fashion3.npz", 3)).class_names == ["0", "1", "2"]
    assert mnist.load_npz(_npz(tmp_path / "mnist.npz", 10)).class_names == [str(c) for c in range(10)]


def test_a_cache_holding_the_old_ten_names_for_three_classes_is_decoded_again(tmp_path):
    path = _npz(tmp_path / "c3.npz", 3)
    right = mnist.load_npz(path)
    stale = Splits(right.x_train, right.y_train, right.x_test, right.y_test, list(mnist.DIGITS))
    write_cache(cache_path(path, str(tmp_path / "cache")), stale, print)  # as an older version wrote it
    assert sources.load(path, str(tmp_path / "cache"), log=lambda *a: None).class_names == ["0", "1", "2"]


def test_a_cached_mnist_is_read_from_the_cache_as_before(tmp_path):
    path = _npz(tmp_path / "mnist.npz", 10)
    cache = str(tmp_path / "cache")
    sources.load(path, cache, log=lambda *a: None)
    seen = []
    s = sources.load(path, cache, log=seen.append)
    assert seen == [] and s.class_names == [str(c) for c in range(10)]  # no "decoding" line: the cache served it


def test_image_size_resizes_an_npz_as_a_trees_images_are(tmp_path):
    from PIL import Image
    path = _npz(tmp_path / "g.npz", 3)
    s = sources.load(path, str(tmp_path / "cache"), log=lambda *a: None, image_size="10x14")
    raw = np.load(path)["x_train"]
    assert s.image_shape == (10, 14, 1)
    want = np.asarray(Image.fromarray(raw[5]).resize((14, 10), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(s.x_train[5, ..., 0], want)


def test_image_size_resizes_the_digits(tmp_path):
    s = sources.load("digits", image_size="16x16", log=lambda *a: None)
    assert s.image_shape == (16, 16, 1) and s.x_test.shape[1:] == (16, 16, 1)


def test_a_cache_an_older_version_wrote_unresized_is_decoded_again(tmp_path):
    path = _npz(tmp_path / "g.npz", 3)
    unresized = mnist.load_npz(path)
    write_cache(cache_path(path, str(tmp_path / "cache"), "labels=fine:size=(10, 14)"), unresized, print)
    assert sources.load(path, str(tmp_path / "cache"), log=lambda *a: None, image_size="10x14").image_shape == (10, 14, 1)
