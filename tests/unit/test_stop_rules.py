"""The divergence rule between epochs (engine.train.stop_rules): a loss that exploded but stayed
finite stops the run with Diverged (exit 3), and no healthy epoch ever trips it."""
import math
from types import SimpleNamespace

import pytest

from engine.errors import EXIT_DIVERGED, Diverged
from engine.train.stop_rules import check_epoch_loss, loss_limit

SGD = SimpleNamespace(optimizer="sgd", lr=0.4)
ADAM = SimpleNamespace(optimizer="adam", lr=0.001)


@pytest.mark.parametrize("classes,limit", [(2, math.log(2) + 5), (10, math.log(10) + 5), (100, 3 * math.log(100)),
                                           (1000, 3 * math.log(1000))])
def test_the_limit_is_3x_and_5_nats_above_a_uniform_guess(classes, limit):
    assert loss_limit(classes) == pytest.approx(limit)
    assert loss_limit(classes) < 69  # below where a saturated softmax model's loss is capped (log 1e-30)


# Healthy first epochs (bench/results; C = 10): airbench-muon, airbench with label smoothing 0.2,
# tiny, frozen-backbone transfer, a Keras-tutorial CNN of the user's under Adam.
@pytest.mark.parametrize("loss", [1.74, 2.03, 2.31, 2.43, 3.22, 1e-4, 0.0])
def test_healthy_epochs_pass(loss):
    check_epoch_loss(loss, 1, 10, SGD)


@pytest.mark.parametrize("loss,epoch", [(31.31, 1), (58.37, 2), (90805.1, 1), (2.5e9, 2), (float("nan"), 3),
                                        (float("inf"), 1)])
def test_an_exploded_loss_stops_the_run_naming_loss_epoch_and_what_to_try(loss, epoch):
    with pytest.raises(Diverged) as e:
        check_epoch_loss(loss, epoch, 10, SGD, "runs/x/checkpoints/ckpt-32")
    msg = str(e.value)
    assert e.value.exit_code == EXIT_DIVERGED == 3
    assert f"epoch {epoch}'s mean training loss {loss:.4g}" in msg and "10 classes" in msg
    assert "lower --lr (this run's: 0.4), or --optimizer adam --lr 0.001" in msg
    assert msg.endswith("last checkpoint: runs/x/checkpoints/ckpt-32") and "\n" not in msg


def test_under_adam_it_suggests_a_lower_lr():
    with pytest.raises(Diverged, match=r"lower --lr \(this run's: 0.001\), e.g. --lr 0.0001$"):
        check_epoch_loss(12.0, 1, 10, ADAM)


def test_the_limit_depends_on_the_classes():
    check_epoch_loss(13.0, 1, 100, SGD)  # 13 nats is under 3 ln 100 = 13.8
    with pytest.raises(Diverged):
        check_epoch_loss(13.0, 1, 10, SGD)
