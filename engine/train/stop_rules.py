"""Rules that stop a run between epochs because going on would waste it. Pure Python: the trainer
calls them with an epoch's numbers.

A loss can explode and stay finite: a softmax model's loss is capped where its probabilities
underflow (engine.models.user clips log p at log 1e-30, 69 nats), a logits model's grows to 1e9 and
beyond without overflowing float32. The in-step check (a non-finite loss or weights) never fires on
those, and the run would train at chance accuracy to its last epoch. So: after an epoch whose mean
training loss is far above what a uniform guess over the classes costs, stop.

The limit, for C classes: max(3 ln C, ln C + 5) nats, i.e. at least 3x the uniform guess's loss and
a true-class probability at least e^5 ~ 150x below the uniform guess's, averaged (geometrically)
over a whole epoch: 7.3 for C = 10, 5.7 for C = 2, 13.8 for C = 100, 20.7 for C = 1000.
- Uniform guessing costs ln C under any label smoothing (a uniform prediction's cross-entropy
  against any target distribution is ln C); smoothing only raises the loss's floor, and it bounds
  the logit margins a model learns, so a healthy smoothed run stays near or below ln C.
- Healthy first epochs, the worst epoch of a run (bench/results, C = 10, ln C = 2.30): airbench and
  airbench-muon 1.74-2.43 (label smoothing 0.2), the tiny model 2.03, frozen-backbone transfer
  recipes 2.29-2.31, a Keras-tutorial CNN of the user's (softmax out, Adam) 2.96-3.22. The
  highest is 1.4 ln C, under half of 7.3.
- Diverged runs seen: 31 and 58 (a softmax model under SGD at lr 0.4), 9e4 and 2.5e9 (its logits
  twin).
"""
from __future__ import annotations

import math

from engine.errors import Diverged

FACTOR = 3.0  # x the uniform guess's loss, ln C
MARGIN = 5.0  # nats above it


def loss_limit(num_classes: int) -> float:
    """The mean training loss of an epoch above which the run has diverged."""
    uniform = math.log(max(num_classes, 2))
    return max(FACTOR * uniform, uniform + MARGIN)


def check_epoch_loss(loss: float, epoch: int, num_classes: int, optim, last_checkpoint: str | None = None) -> None:
    """Raise Diverged if `loss`, the mean training loss of 1-based `epoch`, is past loss_limit.
    `optim`: the run's config.OptimConfig, for what to try instead."""
    limit = loss_limit(num_classes)
    if math.isfinite(loss) and loss <= limit:
        return
    uniform = math.log(max(num_classes, 2))
    if optim.optimizer == "adam":
        hint = f"Try a lower --lr (this run's: {optim.lr:.3g}), e.g. --lr {optim.lr / 10:.3g}"
    else:
        hint = f"Try a lower --lr (this run's: {optim.lr:.3g}), or --optimizer adam --lr 0.001"
    kept = f"; last checkpoint: {last_checkpoint}" if last_checkpoint else ""
    raise Diverged(f"training diverged: epoch {epoch}'s mean training loss {loss:.4g} is far above {uniform:.2f}, what "
                   f"a uniform guess over {num_classes} classes costs (limit {limit:.2f}); stopped. {hint}{kept}")
