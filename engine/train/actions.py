"""What happens at the end of each epoch, once it is evaluated: a short list of actions, each a
callable applied to the epoch's `EpochEnd`, in this order (as Orbit's actions and Keras's callbacks):

    WriteHistory     history.json and TensorBoard's scalars
    SaveCheckpoints  the best model (on a better validation accuracy; never validated: the final one),
                     then the whole training state; then the run that --overwrite replaced goes (the new
                     one has a checkpoint)
    LogEpoch         the epoch's line
    StopOnSignal     a SIGTERM or Ctrl-C seen during the epoch: stop, naming the checkpoint just saved
    EarlyStop        --early-stop epochs without a better validation accuracy: end the run here

The history comes before the checkpoints: a crash between the two resumes from the checkpoint
before, and a resume keeps only the history up to its checkpoint, so neither loses an epoch. Every
action runs; one that returns True ends the training after this epoch (the run then finishes: test,
metrics.json). One that raises stops the run.
"""
from __future__ import annotations

import dataclasses

from engine.errors import Interrupted, Preempted
from engine.train import clock


@dataclasses.dataclass(frozen=True)
class EpochEnd:
    entry: dict      # its history.json entry: epoch (from 1), loss, accuracy, val_loss, val_accuracy (null: not
                     # validated, --eval-every), lr, img_s, seconds
    step: int        # the global step at its end
    improves: bool   # a better validation accuracy than every epoch before it (or, never validated: the last)
    last: bool       # the run's last epoch


def standard(session, timer) -> list:
    """The actions of a run, in their order; `timer`: the run's clock.Clock."""
    cfg = session.config
    return [WriteHistory(session.history),
            SaveCheckpoints(session.checkpoints, session.run_folder, timer),
            LogEpoch(session.log, session.training.length.num_epochs),
            StopOnSignal(session.stop, session.checkpoints, session.source_out),
            EarlyStop(cfg.optim.early_stop, session.history, session.log)]


class WriteHistory:
    def __init__(self, history):
        self.history = history

    def __call__(self, end: EpochEnd) -> None:
        self.history.add(end.entry)


class SaveCheckpoints:
    def __init__(self, checkpoints, run_folder, timer):
        self.checkpoints, self.run_folder, self.timer = checkpoints, run_folder, timer

    def __call__(self, end: EpochEnd) -> None:
        self.checkpoints.epoch.assign(end.entry["epoch"])
        with self.timer.timed(clock.CHECKPOINT_SAVES):
            if end.improves:
                self.checkpoints.save_best(end.step)
            self.checkpoints.save(end.step)
        self.run_folder.settle()  # the new run has a checkpoint: the run it replaces goes


class LogEpoch:
    def __init__(self, log, num_epochs: int):
        self.log, self.num_epochs = log, num_epochs

    def __call__(self, end: EpochEnd) -> None:
        e = end.entry
        val = (f"val_loss {e['val_loss']:.4f} val_acc {e['val_accuracy']:.4f}" if e["val_accuracy"] is not None
               else "not validated (--eval-every)")
        self.log(f"epoch {e['epoch']}/{self.num_epochs}: loss {e['loss']:.4f} acc {e['accuracy']:.4f} {val} "
                 f"lr {e['lr']:.3g} {e['img_s']:.1f} img/s {e['seconds']:.1f}s")


class StopOnSignal:
    """After the last epoch the run finishes instead: its results are a few seconds away."""

    def __init__(self, stop, checkpoints, source_out: str):
        self.stop, self.checkpoints, self.source_out = stop, checkpoints, source_out

    def __call__(self, end: EpochEnd) -> None:
        if not end.last and self.stop.requested():
            raise stopped(self.stop.seen, end.step, self.checkpoints.last, self.source_out)


class EarlyStop:
    def __init__(self, patience: int, history, log):
        self.patience, self.history, self.log = patience, history, log

    def __call__(self, end: EpochEnd) -> bool:
        if not self.patience or end.entry["epoch"] - self.history.best_epoch < self.patience:
            return False
        self.log(f"early stop: no better validation accuracy for {self.patience} epochs "
                 f"(best {self.history.best_acc:.4f} at epoch {self.history.best_epoch})")
        return True


def stopped(signame: str | None, step: int, checkpoint: str, source_out: str) -> Exception:
    """The error of a run stopped by a signal at a step boundary, after saving `checkpoint`."""
    signame = signame or "SIGTERM"  # (another worker's signal)
    error = Interrupted if signame == "SIGINT" else Preempted
    return error(f"{signame}: stopped at step {step} after saving {checkpoint}; continue with "
                 f"--resume --out {source_out}")
