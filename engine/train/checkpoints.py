"""A run's checkpoints and history, and the warm start from another run's weights.

    checkpoints/  checkpoints/best/  history.json  tb/

A damaged newest checkpoint falls back to the one before it; a damaged checkpoint state file is
kept aside and the checkpoints beside it are found by name.
"""
from __future__ import annotations

import collections
import gc
import logging
import os
import re
import warnings

import tensorflow as tf

from engine import layout
from engine.errors import EngineError
from engine.files import read_json, write_json

class Checkpoints:
    """The latest-N checkpoints of the whole training state (model, optimizer, epoch, and what the
    loop adds: the lookahead's slow copy) and the best-validation model, under out/checkpoints."""

    def __init__(self, out: str, model, optimizer, loop_state: dict, keep: int, step, warn):
        self._warn = warn  # (a damaged checkpoint or state file is said, and passed over)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # The training loss, correct count and images of the epoch so far, for a checkpoint written
        # inside an epoch: a resumed epoch's history entry covers all of its steps, not only the last.
        self.partial = tf.Variable(tf.zeros([3], tf.float64), trainable=False, name="partial_epoch")
        self._keep = max(keep, 1)
        self._step_counter = step
        self._objects = dict(model=model, optimizer=optimizer, epoch=self.epoch, partial_epoch=self.partial,
                             **loop_state)
        self._ckpt = tf.train.Checkpoint(**self._objects)
        # Checkpoints written before the loop had its own step counter (engine 0.1.0): the step is
        # the optimizer's, which then counted every step (no loss scaling skipped any on CPUs).
        self._iterations = optimizer.iterations
        self._latest = self._manager(out)
        self._best = _manager(tf.train.Checkpoint(model=model), layout.checkpoint_dir(out, "best"), warn, max_to_keep=1)

    def _manager(self, out: str):
        return _manager(self._ckpt, layout.checkpoint_dir(out), self._warn, max_to_keep=self._keep,
                        step_counter=self._step_counter)

    @property
    def last(self) -> str | None:
        return self._latest.latest_checkpoint

    def save(self, step: int, partial: tuple = (0.0, 0.0, 0.0)) -> str:
        """The whole training state at `step`; `partial`: (loss sum, correct, images) of the epoch so
        far when `step` is inside an epoch."""
        self.partial.assign(tf.constant(partial, tf.float64))
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
                    self._warn(f"newest checkpoint unreadable; resumed from {path}")
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:  # IndexError: truncated file
                self._warn(f"cannot read checkpoint {path}: {type(e).__name__}")
        raise EngineError(f"no readable checkpoint in {manager.directory}")

    def _restore(self, path: str) -> None:
        saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(path)}
        # (older checkpoints have no step counter of their own, or no partial epoch; a run that did not
        # prune, no pruning state, which then starts afresh: all else must match)
        objects = {k: v for k, v in self._objects.items()
                   if k in saved or not (k in ("step", "partial_epoch") or k.startswith("prune_"))}
        self.partial.assign(tf.zeros([3], tf.float64))
        tf.train.Checkpoint(**objects).restore(path).assert_existing_objects_matched()
        if "step" not in saved:
            self._step_counter.assign(tf.cast(self._iterations, tf.int64))


def _manager(checkpoint, directory: str, warn, **kw):
    """A CheckpointManager; where its state file (`checkpoint`) is damaged beyond reading, the file is
    kept aside as checkpoint.damaged (with a warning) and the checkpoints beside it are found by name."""
    try:
        return tf.train.CheckpointManager(checkpoint, directory, **kw)
    except (ValueError, tf.errors.OpError) as e:  # UnicodeDecodeError: random bytes
        state = os.path.join(directory, "checkpoint")
        os.replace(state, state + ".damaged")
        warn(f"the checkpoint state file {state} is unreadable ({type(e).__name__}); kept as "
             f"{state}.damaged, the checkpoints beside it are used")
        return tf.train.CheckpointManager(checkpoint, directory, **kw)


def _candidates(manager) -> list[str]:
    """Checkpoint paths of a manager's directory, newest first: those its `checkpoint` state file
    lists, then any other ckpt-N on disk (a damaged state file does not hide the checkpoints)."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a damaged state file: the checkpoints on disk say enough
    try:
        state = tf.train.get_checkpoint_state(manager.directory)
        latest = manager.latest_checkpoint
    except (tf.errors.OpError, ValueError):
        state, latest = None, None
    finally:
        logger.setLevel(level)
    paths = [latest] if latest else []
    if state is not None:
        paths += [p for p in reversed(state.all_model_checkpoint_paths) if p not in paths]
    # TensorFlow gives these paths already joined with the (possibly relative) directory
    paths = [p if os.path.isabs(p) or os.path.dirname(p) else os.path.join(manager.directory, p) for p in paths]
    try:
        names = os.listdir(manager.directory)
    except OSError:
        names = []
    on_disk = sorted((int(m.group(1)) for m in map(re.compile(r"ckpt-(\d+)\.index$").match, names) if m),
                     reverse=True)
    paths += [p for p in (os.path.join(manager.directory, f"ckpt-{n}") for n in on_disk)
              if os.path.normpath(p) not in map(os.path.normpath, paths)]
    return paths


class History:
    """history.json (one entry per epoch), the best validation epoch, and TensorBoard scalars."""

    SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "img_s")

    def __init__(self, out: str, entries: list):
        self.path = layout.run_file(out, layout.HISTORY_FILE)
        self.entries = entries
        validated = [h for h in entries if h["val_accuracy"] is not None]  # (--eval-every: not every epoch)
        best = max(validated, key=lambda h: h["val_accuracy"]) if validated else None
        self.best_acc = best["val_accuracy"] if best else -1.0
        self.best_epoch = best["epoch"] if best else 0
        self._writer = tf.summary.create_file_writer(layout.run_file(out, layout.TB_DIR))

    @classmethod
    def resumed(cls, out: str, source_out: str, start_epoch: int) -> "History":
        """The history of the run in `source_out` up to `start_epoch`."""
        entries = read_json(layout.run_file(source_out, layout.HISTORY_FILE), [])
        return cls(out, [h for h in entries if h["epoch"] <= start_epoch])

    @property
    def last(self) -> dict | None:
        return self.entries[-1] if self.entries else None

    @property
    def validated(self) -> int:
        """How many of the epochs were validated."""
        return sum(h["val_accuracy"] is not None for h in self.entries)

    def improves(self, val_accuracy: float | None) -> bool:
        return val_accuracy is not None and val_accuracy > self.best_acc

    def add(self, entry: dict) -> None:
        """Record an epoch (after its checkpoints are saved)."""
        self.entries.append(entry)
        if self.improves(entry["val_accuracy"]):
            self.best_acc, self.best_epoch = entry["val_accuracy"], entry["epoch"]
        write_json(self.path, self.entries)
        with self._writer.as_default(step=entry["epoch"]):
            for k in self.SCALARS:
                if entry[k] is not None:
                    tf.summary.scalar(k, entry[k])
        self._writer.flush()


def warm_start(model, source: str) -> str:
    """Load `model`'s weights from another run (RUN[:best|latest]) or a .weights.h5 file; returns
    what was read. Only the model: the optimizer and the schedule start anew."""
    if source.endswith(".h5"):
        try:
            with warnings.catch_warnings():  # Keras warns for each layer it skips before it raises
                warnings.simplefilter("ignore")
                model.load_weights(source)
        except (OSError, ValueError) as e:
            raise EngineError(f"--init-from {source}: cannot load it into {model.name}: "
                              f"{' '.join(str(e).split())[:200]}") from None
        return source
    run, which = layout.parse_source(source)
    if not layout.is_run_dir(run):
        raise EngineError(f"--init-from {source}: {run} is not a run directory (or pass a .weights.h5 file)")
    not_this = (f"--init-from {source}: its model is not this one (same --model, --upsample and --head "
                f"are needed)")
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)  # TensorFlow's warnings on a failed restore: the error says it in one line
    try:
        try:
            path = tf.train.latest_checkpoint(layout.checkpoint_dir(run, which))
        except (ValueError, tf.errors.OpError):  # a state file that is not even text
            raise EngineError(f"--init-from {source}: the checkpoint state file of {run} is damaged; name a "
                              f".weights.h5 file, or the other checkpoint (:best or :latest)") from None
        if path is None:
            raise EngineError(f"--init-from {source}: {run} has no {which} checkpoint")
        try:
            saved = collections.Counter(tuple(shape) for name, shape in tf.train.list_variables(path)
                                        if name.endswith("VARIABLE_VALUE"))  # (weights may sit under optimizer/)
            if collections.Counter(tuple(v.shape) for v in model.weights) - saved:
                raise EngineError(not_this)
            tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
        except (AssertionError, ValueError):
            raise EngineError(not_this) from None
        except (tf.errors.OpError, IndexError) as e:  # IndexError: a truncated data file
            raise EngineError(f"--init-from {source}: cannot read {path}: it is damaged or truncated "
                              f"({type(e).__name__})") from None
    finally:
        gc.collect()  # a failed restore warns when its status is collected: here, while quiet
        logger.setLevel(level)
    return path
