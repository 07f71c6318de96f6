"""How a global batch meets the replicas it is split over: the most GPUs it splits over evenly, and
the batches named when it does not split (no TensorFlow: plain arithmetic)."""
import pytest

from engine import models
from engine.errors import EngineError
from engine.train import resolve


@pytest.mark.parametrize("model", models.names())
def test_every_models_default_batch_splits_over_some_of_1_to_8_gpus(model):
    batch = resolve.defaults(model).optim.batch_size
    for gpus in range(1, 9):
        used = resolve.replicas_that_split(batch, gpus)
        assert 1 <= used <= gpus and batch % used == 0
        assert all(batch % k for k in range(used + 1, gpus + 1))  # the most that split it


def test_the_default_batches_on_3_6_and_7_gpus():
    assert [resolve.replicas_that_split(2000, n) for n in (3, 6, 7, 8)] == [2, 5, 5, 8]
    assert [resolve.replicas_that_split(1024, n) for n in (3, 6, 7, 8)] == [2, 4, 4, 8]


def test_a_batch_that_does_not_split_is_refused_with_batches_that_do():
    with pytest.raises(EngineError, match=r"--batch-size 2000 does not split evenly over 7 replicas; "
                                          r"use a multiple of 7 \(1995 or 2002\)$"):
        resolve.check_batch_split(2000, 7)
    with pytest.raises(EngineError, match=r"use a multiple of 8 \(8\)$"):
        resolve.check_batch_split(5, 8)
    assert resolve.batches_that_split(1024, 3) == [1023, 1026]
