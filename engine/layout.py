"""A run folder, as files on disk, and the rules for `--out`: no TensorFlow, so that every refusal
comes before TensorFlow is imported.

    config.json  classes.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/

and, beside them, what `engine export` and `engine evaluate` write there by default (model.onnx,
model-int8.xml, model.savedmodel/, evaluate-*.json, ...).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import shutil
import tempfile

from engine import files
from engine.errors import EngineError

CONFIG_FILE = "config.json"      # the run's resolved config; its presence marks a run folder
CLASSES_FILE = "classes.json"    # the class names, in label order
HISTORY_FILE = "history.json"    # one entry per epoch
METRICS_FILE = "metrics.json"    # the final figures (Metrics below), written when the run ends
CURVES_FILE = "curves.png"
CHECKPOINTS = "checkpoints"      # the latest checkpoints; the best epoch's in checkpoints/best
BEST_DIR = "best"
TB_DIR = "tb"                    # TensorBoard scalars and profiles
RUN_FILES = (CONFIG_FILE, CLASSES_FILE, HISTORY_FILE, METRICS_FILE, CURVES_FILE, CHECKPOINTS, TB_DIR)
WHICH = ("best", "latest")       # the checkpoints a run offers: RUN:best, RUN:latest
# What engine export / engine evaluate write into a run folder by default: made from the run's old
# model, so a run replaced with --overwrite does not keep them.
EXPORTS = ("model*.onnx", "model*.savedmodel", "model*.xml", "model*.bin", "model*.engine", "timing.cache",
           "evaluate-*.json")


def run_file(run: str, name: str) -> str:
    """A file of the run folder `run` (one of RUN_FILES)."""
    assert name in RUN_FILES, name
    return os.path.join(run, name)


def checkpoint_dir(run: str, which: str = "latest") -> str:
    """Where the run's best or latest checkpoints are."""
    if which not in WHICH:
        raise ValueError(f"which checkpoint: {which!r}, not one of {WHICH}")
    folder = os.path.join(run, CHECKPOINTS)
    return os.path.join(folder, BEST_DIR) if which == "best" else folder


def parse_source(source: str, default: str = "best") -> tuple[str, str]:
    """"RUN", "RUN:best" or "RUN:latest" -> (RUN, which)."""
    run, sep, which = source.rpartition(":")
    return (run, which) if sep and which in WHICH else (source, default)


def is_run_dir(path: str) -> bool:
    """A directory engine.train made a run of (it writes config.json once the run has started)."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def has_checkpoint(out: str) -> bool:
    """Whether a run folder holds any training checkpoint (not counting checkpoints/best)."""
    folder = checkpoint_dir(out)
    try:
        return any(name.startswith("ckpt-") and name.endswith(".index") for name in os.listdir(folder))
    except OSError:
        return False


def reading(paths, verb: str) -> contextlib.ExitStack:
    """Shared locks on those of `paths` that are run folders, for a command that reads their checkpoints
    (`verb`: export, evaluate, predict), held until the stack is closed: refused in one line while `engine train`
    writes one (its checkpoints are those of a run still going on, and are deleted as it goes);
    meanwhile no `engine train` starts in them, while other readers may."""
    stack = contextlib.ExitStack()
    for run in paths:
        if not run or not is_run_dir(run):
            continue
        try:
            stack.enter_context(files.Lock(run, f"{verb} reads it", shared=True))
        except files.Busy:
            stack.close()
            pids = files.lock_holders(run)
            by = f" (pid {pids[0]})" if len(pids) == 1 else ""
            raise EngineError(f"{run} is being trained by another engine process{by}: {verb} it when that has "
                              f"finished or been stopped") from None
    return stack


def check_out(out: str, resume: bool, overwrite: bool) -> None:
    """What --out holds against --resume/--overwrite, before any work: never lose a run."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise EngineError(f"--out {out} is a file, not a directory")
    has_run = is_run_dir(out)
    if resume:
        if not has_run:
            raise EngineError(f"nothing to resume: {out} holds no engine run")
    elif has_run and not overwrite:
        stuck = "" if has_checkpoint(out) else (" (it stopped before its first checkpoint: --resume starts it "
                                                "again from its config.json)")
        raise EngineError(f"{out} already holds a run{stuck}; pass --resume to continue it or --overwrite "
                          f"to replace it")
    elif os.path.isdir(out) and os.listdir(out) and not has_run:  # (--overwrite replaces a run, nothing else)
        reason = protected(out)
        raise EngineError(f"{out} is {reason or 'not empty and holds no engine run'}; choose another --out")
    reason = None if has_run else protected(out)
    if reason:  # e.g. a new run inside another run's checkpoints/
        raise EngineError(f"--out {out} is {reason}; choose another --out")


def replaced_files(out: str) -> list[str]:
    """The paths in `out` that --overwrite replaces: the run's own files and the exports and reports
    engine wrote from its model. Anything else of the user's stays."""
    try:
        names = os.listdir(out)
    except OSError:
        return []
    return [os.path.join(out, n) for n in sorted(names)
            if n in RUN_FILES or any(fnmatch.fnmatch(n, p) for p in EXPORTS)]


def remove_run(out: str) -> None:
    """Remove what `replaced_files` lists."""
    for p in replaced_files(out):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)


def move_aside(out: str) -> str | None:
    """Move what --overwrite replaces into a hidden folder inside `out` (.replaced-*), to be dropped
    once the new run has its first checkpoint, or put back if it fails before. None if nothing was there."""
    items = replaced_files(out)
    if not items:
        return None
    aside = tempfile.mkdtemp(dir=out, prefix=".replaced-")
    for p in items:
        os.replace(p, os.path.join(aside, os.path.basename(p)))
    return aside


def put_back(out: str, aside: str) -> None:
    """Undo `move_aside`: the new run's files go, the old run's come back."""
    remove_run(out)
    for name in os.listdir(aside):
        os.replace(os.path.join(aside, name), os.path.join(out, name))
    os.rmdir(aside)


def drop_aside(aside: str) -> None:
    shutil.rmtree(aside, ignore_errors=True)


def protected(path: str) -> str | None:
    """Why `path` must never be replaced by an export or a report, or a run be made there: a run
    folder, a folder holding runs, a run's own file, or anything inside a run's checkpoints/ or tb/.
    None if nothing forbids it."""
    if os.path.isdir(path):
        if is_run_dir(path):
            return "a run folder"
        try:
            if any(is_run_dir(os.path.join(path, n)) for n in os.listdir(path)):
                return "a folder holding runs"
        except OSError:
            pass
    child = os.path.abspath(path)
    parent = os.path.dirname(child)
    while parent != child:
        if is_run_dir(parent) and os.path.basename(child) in RUN_FILES:
            shown = os.path.relpath(parent)
            return f"part of the run in {parent if shown.startswith('..') else shown}"
        child, parent = parent, os.path.dirname(parent)
    return None


@dataclasses.dataclass
class Metrics:
    """metrics.json: what a finished run measured. The trainer writes it once, at the end; `engine
    report`, the self-check and the reference comparison read it through `read_metrics`. A key an
    older run did not write reads as None."""

    test_accuracy: float | None = None       # top-1 on the whole test split
    test_loss: float | None = None
    tta: int | None = None                   # the test-time augmentation level used for the next field
    test_accuracy_tta: float | None = None
    best_epoch: int | None = None            # the epoch checkpoints/best holds
    best_val_accuracy: float | None = None
    epochs_run: int | None = None
    stopped_early: bool | None = None
    steps: int | None = None
    train_img_s: float | None = None         # training images per second of training time
    train_seconds: float | None = None       # the training loop alone
    wall_seconds: float | None = None        # start to end
    wall_breakdown: dict | None = None       # {phase: seconds}
    train_images: int | None = None
    test_images: int | None = None
    val_is_test: bool | None = None
    val_images: int | None = None
    policy: str | None = None                # the Keras mixed-precision policy trained in
    xla: bool | None = None
    steps_per_call: int | None = None
    batch_size: int | None = None            # the global batch
    replicas: int | None = None              # the replicas it was split over
    device: str | None = None
    tensorflow: str | None = None
    feature_cache: bool | None = None
    feature_seconds: float | None = None
    speed_choice: dict | None = None         # the automatic choice: what was chosen and why
    compile_cache: dict | None = None        # the XLA compile cache used, or None
    eval_every: int | None = None            # validated every N-th epoch and the last (0: never)
    tta_fraction: float | None = None        # the fraction of the test images the TTA views were for
    tta_images: int | None = None            # the test images the TTA views were computed for
    resize_schedule: str | None = None       # the --resize-schedule trained with ("": off)
    pruning: dict | None = None              # sample pruning: fraction, until, images_per_epoch, images_trained
                                             # and images_pruned (None: off)
    flops: dict | None = None                # training_flops, evaluation_flops and what they count

    @classmethod
    def from_dict(cls, raw: dict) -> "Metrics":
        """The known keys of a metrics.json object, as written (values are not coerced: a damaged file
        shows as such where it is read)."""
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_metrics(run: str) -> Metrics:
    """The run's metrics.json; a one-line error where it is missing or unreadable."""
    if not is_run_dir(run):
        raise EngineError(f"{run} is not a run directory (no {CONFIG_FILE})")
    path = run_file(run, METRICS_FILE)
    if not os.path.lexists(path):
        raise EngineError(f"{run} has no {METRICS_FILE}: it has not finished (resume it with --resume)")
    return Metrics.from_dict(read_object(path))


def read_object(path: str) -> dict:
    """The JSON object in `path`; a one-line error saying the file is unreadable otherwise."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except OSError as e:
        raise EngineError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # not JSON (truncated, empty) or not UTF-8
        raise EngineError(f"{path} is unreadable (damaged: {str(e).splitlines()[0][:80]})") from None
    if not isinstance(obj, dict):
        raise EngineError(f"{path} is unreadable (damaged: it holds {json.dumps(obj)[:40]}, not a JSON object)")
    return obj
