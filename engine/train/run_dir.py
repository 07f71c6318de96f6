"""The run directory: what a run may write where, its checkpoints and its history.

    config.json  classes.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/

A run never loses another: --out is checked against --resume/--overwrite before any work starts,
--overwrite removes only the files a run writes, and a damaged newest checkpoint falls back to the
one before it.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import tensorflow as tf

from engine.config import CONFIG_FILE, is_run_dir
from engine.errors import EngineError
from engine.files import read_json, write_json
from engine.train.resolve import require_run

RUN_FILES = (CONFIG_FILE, "classes.json", "history.json", "metrics.json", "curves.png", "checkpoints", "tb")


def prepare_run_dir(run) -> bool:
    """Check --out against --resume/--overwrite before any work starts; never lose a run. Returns
    whether --out was created here (a start that fails removes it again)."""
    out = run.out
    created = not os.path.exists(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise EngineError(f"--out {out} is a file, not a directory")
    has_run = is_run_dir(out)
    if run.resume:
        require_run(out)
    elif has_run and not run.overwrite:
        raise EngineError(f"{out} already holds a run; pass --resume to continue it or --overwrite "
                          f"to replace it")
    elif os.path.isdir(out) and os.listdir(out) and not has_run and not run.overwrite:
        raise EngineError(f"{out} is not empty and holds no engine run; choose another --out")
    if run.overwrite:
        for name in RUN_FILES:  # only what a run writes; anything else of the user's stays
            p = os.path.join(out, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    _check_writable(out)
    return created


def _check_writable(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out) as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise EngineError(f"cannot write to --out {out}: {e.strerror or e}") from None


class Checkpoints:
    """The latest-N checkpoints of the whole training state (model, optimizer, epoch, and what the
    loop adds: the lookahead's slow copy) and the best-validation model, under out/checkpoints."""

    def __init__(self, out: str, model, optimizer, loop_state: dict, keep: int, step):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._keep = max(keep, 1)
        self._step_counter = step
        self._ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch, **loop_state)
        # Checkpoints written before the loop had its own step counter (engine 0.1.0): the step is
        # the optimizer's, which then counted every step (no loss scaling skipped any on CPUs).
        self._legacy = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch,
                                           **{k: v for k, v in loop_state.items() if k != "step"})
        self._legacy_step = (step, optimizer.iterations)
        self._latest = self._manager(out)
        self._best = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                                os.path.join(out, "checkpoints", "best"), max_to_keep=1)

    def _manager(self, out: str):
        return tf.train.CheckpointManager(self._ckpt, os.path.join(out, "checkpoints"), max_to_keep=self._keep,
                                          step_counter=self._step_counter)

    @property
    def last(self) -> str | None:
        return self._latest.latest_checkpoint

    def save(self, step: int) -> str:
        return self._latest.save(checkpoint_number=step)

    def save_best(self, step: int) -> str:
        return self._best.save(checkpoint_number=step)

    def restore(self, source_out: str | None = None) -> str:
        """Restore the newest readable checkpoint (of `source_out`'s run, where another process
        writes it); a damaged newest one falls back to the one before."""
        manager = self._manager(source_out) if source_out else self._latest
        candidates = _candidates(manager)
        if not candidates:
            raise EngineError(f"nothing to resume: {manager.directory} holds no checkpoint")
        for path in candidates:
            try:
                self._restore(path)
                if path != candidates[0]:
                    print(f"warning: newest checkpoint unreadable; resumed from {path}", file=sys.stderr)
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:  # IndexError: truncated file
                print(f"warning: cannot read checkpoint {path}: {type(e).__name__}", file=sys.stderr)
        raise EngineError(f"no readable checkpoint in {manager.directory}")


    def _restore(self, path: str) -> None:
        if any(name.startswith("step/") for name, _ in tf.train.list_variables(path)):
            self._ckpt.restore(path).assert_existing_objects_matched()
            return
        self._legacy.restore(path).assert_existing_objects_matched()
        step, iterations = self._legacy_step
        step.assign(tf.cast(iterations, tf.int64))


def _candidates(manager) -> list[str]:
    """Checkpoint paths of a manager's directory, newest first."""
    state = tf.train.get_checkpoint_state(manager.directory)
    paths = [manager.latest_checkpoint] if manager.latest_checkpoint else []
    if state is not None:
        paths += [p for p in reversed(state.all_model_checkpoint_paths) if p not in paths]
    return [p if os.path.isabs(p) else os.path.join(manager.directory, p) for p in paths]


class History:
    """history.json (one entry per epoch), the best validation epoch, and TensorBoard scalars."""

    SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "img_s")

    def __init__(self, out: str, entries: list):
        self.path = os.path.join(out, "history.json")
        self.entries = entries
        best = max(entries, key=lambda h: h["val_accuracy"]) if entries else None
        self.best_acc = best["val_accuracy"] if best else -1.0
        self.best_epoch = best["epoch"] if best else 0
        self._writer = tf.summary.create_file_writer(os.path.join(out, "tb"))

    @classmethod
    def resumed(cls, out: str, source_out: str, start_epoch: int) -> "History":
        """The history of the run in `source_out` up to `start_epoch`."""
        entries = read_json(os.path.join(source_out, "history.json"), [])
        return cls(out, [h for h in entries if h["epoch"] <= start_epoch])

    @property
    def last(self) -> dict | None:
        return self.entries[-1] if self.entries else None

    def improves(self, val_accuracy: float) -> bool:
        return val_accuracy > self.best_acc

    def add(self, entry: dict) -> None:
        """Record an epoch (after its checkpoints are saved)."""
        self.entries.append(entry)
        if self.improves(entry["val_accuracy"]):
            self.best_acc, self.best_epoch = entry["val_accuracy"], entry["epoch"]
        write_json(self.path, self.entries)
        with self._writer.as_default(step=entry["epoch"]):
            for k in self.SCALARS:
                tf.summary.scalar(k, entry[k])
        self._writer.flush()
