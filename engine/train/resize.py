"""Progressive resizing (--resize-schedule): the run's phases in steps, and the rules a schedule must
keep for a model. Imports no TensorFlow (engine.train.resolve checks a schedule before it loads).

A schedule SIDE:UNTIL[,SIDE:UNTIL...] (engine.config.parse_resize) trains at each side up to its
fraction of the run's steps, then at the next, and at the model's full input side after the last.
A phase ends at the step its fraction reaches, rounded up (as --epochs and --whiten-bias-epochs);
the train step (engine.train.loop) shrinks each augmented batch to the phase's side, and the trainer
cuts its train calls at every phase's end, so a phase's steps are the same whatever --steps-per-call,
after a resume and on every replica.
"""
from __future__ import annotations

import math

from engine import config as C
from engine.errors import EngineError


def phases(schedule: str, total_steps: int) -> tuple[tuple[int, int], ...]:
    """((side, the first global step after its phase), ...) of a --resize-schedule over `total_steps`
    steps; () when the schedule is off. A phase that rounds to no steps is left out."""
    out, start = [], 0
    for side, until in C.parse_resize(schedule):
        end = min(total_steps, math.ceil(round(until * total_steps, 6)))
        if end > start:
            out.append((side, end))
        start = max(start, end)
    return tuple(out)


def side_at(resize: tuple, step: int) -> int | None:
    """The side the phases `resize` (phases()) train global step `step` at; None: the full size."""
    for side, end in resize:
        if step < end:
            return side
    return None


def steps_by_side(resize: tuple, steps: int) -> dict:
    """{side (None: the full size): steps of the first `steps` global steps trained at it}."""
    out, start = {}, 0
    for side, end in resize:
        out[side] = max(0, min(end, steps) - start)
        start = end
    out[None] = max(0, steps - start)
    return out


def check(schedule: str, model: str, min_size: int, input_side: int | tuple | None) -> None:
    """The rules of a schedule for a model whose smallest input side is `min_size` and whose input
    side is `input_side` (None: not known yet, before the data is loaded): a one-line error."""
    sides = [side for side, _ in C.parse_resize(schedule)]
    if not sides:
        return
    if isinstance(input_side, tuple):  # images that are not square: (H, W)
        if input_side[0] != input_side[1]:
            raise EngineError(f"--resize-schedule {schedule}: the images are {input_side[0]}x{input_side[1]}, not "
                              f"square; a schedule trains at square sides (give --upsample N, or no schedule)")
        input_side = input_side[0]
    if input_side is not None and sides[-1] >= input_side:
        raise EngineError(f"--resize-schedule {schedule}: the side {sides[-1]} is not below the model's input side "
                          f"({input_side}x{input_side}); each phase must train at a smaller side")
    if sides[0] < min_size:
        raise EngineError(f"--resize-schedule {schedule}: model {model} takes inputs of at least {min_size}x{min_size} "
                          f"(its pooling would shrink {sides[0]}x{sides[0]} below 1 pixel)")


def check_model(model, resize: tuple) -> None:
    """A built Keras model takes the sides of the phases `resize`: its layers' shapes at each side
    are worked out (engine.models.flops) and a layer that refuses one, or shrinks it to nothing, is a
    one-line error (a Flatten before a Dense fixes the side, a pooling stack needs a minimum)."""
    from engine.models import flops
    for side, _ in resize:
        try:
            flops.layer_flops(model, side)
        except ValueError as e:
            reason = " ".join(str(e).split())[:200]
            raise EngineError(f"--resize-schedule: model {model.name} cannot train on {side}x{side} inputs: {reason}") \
                from None
