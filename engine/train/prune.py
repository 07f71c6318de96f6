"""Sample pruning with annealing (--prune-fraction, --prune-until): InfoBatch (Qin et al., ICLR 2024)
in the engine's compiled loop. Imports no TensorFlow.

Every training image has a score, its loss (the label-smoothed cross entropy) the last time it was
trained on; +inf before that, so the first epoch prunes nothing and an image never trained on is never
"well learned". At the start of each epoch that begins before --prune-until of the run's steps, the
images whose score is below the mean of the finite scores are the well-learned ones: a random
--prune-fraction R of them (a whole number, rounded down, drawn from the run's seed and the epoch:
the same after a resume and on every replica and worker, with no state of its own) is left out of
the epoch, and the rest of them train with their loss scaled by 1/(1-R), so that the epoch's expected
gradient is the full data's. Epochs from --prune-until on train every image unscaled (the annealing).

A pruned epoch is shorter: its kept images, in the order of the epoch's permutation, batched as any
epoch (the last partial batch dropped). Every other schedule of the run keeps its meaning in epochs:
the engine's step counter stays on the grid of an unpruned run (`steps_per_epoch` steps an epoch),
and the k steps of a pruned epoch of S steps sit at its positions base + floor(i*S/k), i = 0..k-1
(EpochMap). The learning-rate schedule, Muon's horizons, the lookahead's, the whitening bias's
freeze, --resize-schedule's phases, the alternating flip's epochs, the augmentation keys and the
checkpoint numbers are all read at that position; so each epoch, pruned or not, spans the same part
of the one-cycle schedule, whose steps are larger in a pruned epoch, and the run still ends at the
schedule's end (its last epoch is at full data unless --prune-until is 1).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


def select(scores: np.ndarray, fraction: float, rng: np.random.Generator, min_kept: int = 1) -> np.ndarray:
    """The loss weights of one epoch, float32 [images]: 0 for a pruned image, 1/(1-fraction) for a
    kept well-learned one (score below the mean of the finite scores), 1 for every other. The pruned
    are floor(fraction x the well-learned) of them, drawn by `rng` without replacement; never so many
    that fewer than `min_kept` images remain (a batch)."""
    scores = np.asarray(scores, np.float64)
    weights = np.ones(len(scores), np.float32)
    finite = np.isfinite(scores)
    if not fraction or not finite.any():
        return weights
    low = np.flatnonzero(finite & (scores < scores[finite].mean()))
    drop = min(math.floor(round(fraction * len(low), 6)), max(0, len(scores) - min_kept))
    if drop <= 0:
        return weights
    weights[low] = np.float32(1.0 / (1.0 - fraction))
    weights[rng.choice(low, drop, replace=False)] = 0.0
    return weights


def rng(seed: int, epoch: int) -> np.random.Generator:
    """The pruning draw of `epoch` (its own stream: the epoch's permutation is np.random.default_rng([seed, epoch]))."""
    return np.random.default_rng([seed, epoch, 0x9B])


def prunes(epoch: int, steps_per_epoch: int, total_steps: int, until: float) -> bool:
    """Whether 0-based `epoch` may prune: it starts before `until` of the run's steps."""
    return epoch * steps_per_epoch < round(until * total_steps, 6)


@dataclasses.dataclass(frozen=True)
class EpochMap:
    """The steps of one epoch: `steps` actual steps over the `span` step positions from `base` (an
    unpruned epoch: steps == span, each step its own position)."""
    base: int
    span: int
    steps: int

    @property
    def pruned(self) -> bool:
        return self.steps < self.span

    def position(self, i: int) -> int:
        """The global step (position) of the epoch's actual step i (i == steps: the epoch's end)."""
        return self.base + i * self.span // self.steps

    def actual(self, position: int) -> int:
        """How many of the epoch's actual steps come before global step `position` (the first actual
        step at or after it; position() inverted)."""
        return -(-(position - self.base) * self.steps // self.span)


def plan(weights: np.ndarray, base: int, span: int, steps_per_epoch: int, batch: int) -> EpochMap:
    """The EpochMap of an epoch of `span` positions from `base` that trains the images whose weight is
    not 0 (an unpruned epoch of steps_per_epoch steps trains `span` of them; a pruned one the same
    share of its kept images' batches, at least one)."""
    kept = int(np.count_nonzero(weights))
    return EpochMap(base, span, max(1, min(span, kept // batch * span // steps_per_epoch)))


def positions(images_per_epoch, steps_per_epoch: int, total_steps: int, batch: int) -> list[int]:
    """The global steps (positions) trained, from the images each epoch trained (0: not run)."""
    out = []
    for epoch, images in enumerate(images_per_epoch):
        span = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        m = EpochMap(epoch * steps_per_epoch, span, int(images) // batch)
        out += [m.position(i) for i in range(m.steps)] if m.steps else []
    return out


def steps_in_call(m: EpochMap, done: int, steps_per_call: int, checkpoint_every: int, horizons=()) -> int:
    """Steps of the next train call of a pruned epoch `m` after its first `done` steps (as
    trainer.steps_in_call): --steps-per-call, cut at the epoch's end and before the first step at or
    after the next --checkpoint-every multiple and each horizon (in positions: a variable freezes, a
    resizing phase ends, there)."""
    at = m.position(done)
    cuts = [m.base + m.span] + [h for h in horizons if h > at]
    if checkpoint_every:
        cuts.append(at + checkpoint_every - at % checkpoint_every)
    return min(steps_per_call, min(m.actual(c) for c in cuts) - done)


def trained_per_epoch(entries, length, batch: int) -> list[int]:
    """The images each epoch of a pruning run trained, from its history (each entry's "images"; an
    epoch trained before the run pruned: all of its steps')."""
    return [int(h["images"]) if "images" in h else length.steps_in_epoch(h["epoch"] - 1) * batch for h in entries]


def begin_epoch(training, cfg, epoch: int, span: int, skip: int):
    """(the images an epoch of `span` steps trains, or None: all; its EpochMap), set in the training's
    loop. Chosen at the epoch's start from the scores (+inf before an image is first trained, so the
    first epoch keeps all); a resume inside the epoch takes them from its checkpoint."""
    loop, length, d, batch = training.loop, training.length, cfg.data, cfg.optim.batch_size
    weights = None
    if skip:
        kept = loop.weights.numpy()
    elif prunes(epoch, length.steps_per_epoch, length.total_steps, d.prune_until):
        kept = weights = select(loop.scores.numpy(), d.prune_fraction, rng(cfg.run.seed, epoch), min_kept=batch)
    else:
        kept = weights = np.ones(loop.cfg.train_size, np.float32)
    epoch_map = plan(kept, epoch * length.steps_per_epoch, span, length.steps_per_epoch, batch)
    loop.begin_epoch(epoch_map, weights)
    return (None if kept.all() else kept > 0), epoch_map


def record(training, cfg, entries) -> dict | None:
    """metrics.json's `pruning` (None: off): the images each epoch trained (from the history's entries),
    their sum and the images left out."""
    if not training.loop.cfg.prune:
        return None
    length, batch = training.length, cfg.optim.batch_size
    per_epoch = trained_per_epoch(entries, length, batch)
    full = sum(length.steps_in_epoch(e) * batch for e in range(len(per_epoch)))
    return {"fraction": cfg.data.prune_fraction, "until": cfg.data.prune_until, "images_per_epoch": per_epoch,
            "images_trained": sum(per_epoch), "images_pruned": full - sum(per_epoch)}


def describe(p: dict) -> str:
    """The log line of a run's `pruning` record."""
    return (f"sample pruning: trained on {p['images_trained']:,} images, left out {p['images_pruned']:,} "
            f"({p['images_pruned'] / max(p['images_trained'] + p['images_pruned'], 1):.1%})")
