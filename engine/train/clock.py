"""Where a run's wall time goes: the timed training steps (img/s) and every other phase by name."""
from __future__ import annotations

import collections
import contextlib
import time

# The phases metrics.json's wall_breakdown names that readers use (bench/reference/summary.py).
TRAINING = "training steps"
FIRST_CALL = "first call (tracing, compilation)"
EVALUATION = "evaluation"
TTA = "test-time augmentation"
CHECKPOINT_SAVES = "checkpoint saves"


class Clock:
    """The first train call (tracing, compilation) is not training time; checkpoint writing,
    evaluation and the input pipeline's start and stop are phases of their own."""

    def __init__(self):
        self.start = time.perf_counter()
        self.phases = collections.Counter()  # wall seconds outside the timed training steps, by phase
        self.images = 0
        self.seconds = 0.0
        self.warm = False

    @contextlib.contextmanager
    def timed(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] += time.perf_counter() - t

    def earlier(self, phase: str, seconds: float | None) -> None:
        """Count a phase that ran before the clock started (the feature cache's backbone pass) as part
        of the run's wall time."""
        if seconds:
            self.start -= seconds
            self.phases[phase] += seconds

    def train_call(self, images: int, seconds: float, traced: bool = False) -> bool:
        """Account one train call; False for the run's first and for one that `traced` a new compiled
        call (a --resize-schedule phase's side, a variable frozen): those are not timed."""
        if not self.warm or traced:
            self.phases[FIRST_CALL] += seconds
            self.warm = True
            return False
        self.images += images
        self.seconds += seconds
        return True

    @property
    def img_s(self) -> float | None:
        return self.images / self.seconds if self.seconds else None

    def breakdown(self) -> tuple[float, dict]:
        """(wall seconds so far, {phase: seconds}) whose parts add up to the wall time."""
        wall = time.perf_counter() - self.start
        self.phases["other"] = max(0.0, wall - self.seconds - sum(v for k, v in self.phases.items() if k != "other"))
        return wall, {TRAINING: self.seconds, **{k: v for k, v in self.phases.items() if v}}


class EpochStats:
    """Loss, accuracy and speed of one epoch's train calls (the run's first call is not timed)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.loss = self.correct = 0.0
        self.seen = self.images = 0
        self.seconds = 0.0

    def add(self, images: int, loss: float, correct: float, timed_seconds: float | None) -> None:
        self.seen += images
        self.loss += loss
        self.correct += correct
        if timed_seconds is not None:
            self.images += images
            self.seconds += timed_seconds

    @property
    def img_s(self) -> float:
        return self.images / self.seconds if self.images else self.seen / (time.perf_counter() - self.start)

    def summary(self) -> dict:
        return {"loss": self.loss / self.seen, "accuracy": self.correct / self.seen, "img_s": self.img_s,
                "seconds": time.perf_counter() - self.start}


class ProfileWindow:
    """--profile N: a TensorBoard profiler trace of train calls 2..N+1 of this process (the first
    traces and compiles), written under `logdir` (plugins/profile/<time>/). Their wall time is a
    phase of its own, not training time: the profiler slows them."""

    def __init__(self, calls: int, logdir: str):
        self.calls, self.logdir, self.seen, self.active = calls, logdir, 0, False

    def before_call(self) -> bool:
        """Whether the call about to run is profiled (starting the trace at the first)."""
        self.seen += 1
        if self.calls and self.seen == 2:
            import tensorflow as tf
            tf.profiler.experimental.start(self.logdir)
            self.active = True
        return self.active

    def after_call(self) -> str | None:
        """Stops the trace after its last call; returns where it went (None while it goes on)."""
        if self.active and self.seen >= self.calls + 1:
            return self.stop()
        return None

    def stop(self) -> str | None:
        if not self.active:
            return None
        import tensorflow as tf
        tf.profiler.experimental.stop()
        self.active = False
        return self.logdir



class Rate(float):
    """A figure that Keras's progress bar shows with one decimal (it formats every value with four:
    `img/s: 3159.1000`)."""

    def __truediv__(self, other):  # the bar divides each value by its count (1) before formatting it
        return Rate(float(self) / other)

    def __format__(self, spec):
        return f"{float(self):.1f}"


def progress_bar(target: int, quiet: bool, header: str = "", unit: str = "step", stream=None):
    """Keras's progress bar (as model.fit shows it) over `target` units, after a `header` line such as
    fit's "Epoch 3/8". None under --quiet or where stdout is not a terminal: piped to a file, the bar's
    colour codes and carriage-return frames would fill it (the epoch line says what it would)."""
    import sys
    stream = stream or sys.stdout
    if quiet or not target or not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    import keras
    if header:
        print(header, file=stream, flush=True)
    return keras.utils.Progbar(target, stateful_metrics=["loss", "accuracy", "img/s"], unit_name=unit)


class Ticker:
    """Progress of a long pass that prints nothing else (the feature cache's pass through a frozen
    backbone): a Keras progress bar on a terminal, otherwise (piped, or --quiet) a plain line every
    `every` seconds, so that a log shows the run is alive."""

    def __init__(self, total: int, what: str, quiet: bool = False, log=print, every: float = 30.0):
        self.total, self.what, self.log, self.every = total, what, log, every
        self.start = self.last = time.perf_counter()
        self.bar = progress_bar(total, quiet, unit="image")

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(done, values=[("img/s", Rate(done / max(now - self.start, 1e-9)))])
        elif now - self.last >= self.every and done < self.total:
            self.last = now
            self.log(f"{self.what}: {done}/{self.total} images, {now - self.start:.0f}s")
