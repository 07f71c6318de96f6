"""One-line errors of the data loaders name the file they are about, in words (no Python repr)."""
from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest

from engine.data import sources
from engine.errors import EngineError


def _tar(path, members: dict):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return str(path)


def test_a_file_pil_cannot_identify_is_named_without_a_python_repr(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "t" / split / c).mkdir(parents=True)
            (tmp_path / "t" / split / c / "0.png").write_bytes(b"not a png at all" * 8)
    with pytest.raises(EngineError) as e:
        sources.load(str(tmp_path / "t"))
    assert f"{tmp_path / 't'}:" in str(e.value) and "/a/0.png: not an image PIL can read" in str(e.value)
    assert "BytesIO" not in str(e.value) and " at 0x" not in str(e.value)


def test_a_cifar_batch_that_is_not_a_dict_is_named(tmp_path):
    path = _tar(tmp_path / "c10.tar.gz", {"cifar-10-batches-py/data_batch_1": pickle.dumps([1, 2, 3], protocol=2),
                                          "cifar-10-batches-py/test_batch": pickle.dumps([1], protocol=2)})
    with pytest.raises(EngineError, match=r"c10\.tar\.gz:data_batch_1: the pickle holds a list, "
                                          r"not the dict of a CIFAR batch"):
        sources.load(path)


def test_a_cifar100_pickle_without_coarse_labels_is_named(tmp_path):
    x = np.zeros((2, 3072), np.uint8)
    split = pickle.dumps({b"data": x, b"fine_labels": [0, 1]}, protocol=2)
    meta = pickle.dumps({b"fine_label_names": [b"a", b"b"], b"coarse_label_names": [b"c"]}, protocol=2)
    path = _tar(tmp_path / "c100.tar.gz", {"cifar-100-python/train": split, "cifar-100-python/test": split,
                                           "cifar-100-python/meta": meta})
    with pytest.raises(EngineError, match=r"c100\.tar\.gz:train: the CIFAR pickle has no "
                                          r"'coarse_labels' entry"):
        sources.load(path, label_mode="coarse")
