"""A run folder, as files on disk, and the rules for `--out`: no TensorFlow, so that every refusal
comes before TensorFlow is imported.

    config.json  classes.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/

and, beside them, what `engine export` and `engine evaluate` write there by default (model.onnx,
model-int8.xml, model.savedmodel/, evaluate-*.json, ...).
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile

from engine.errors import EngineError

CONFIG_FILE = "config.json"
RUN_FILES = (CONFIG_FILE, "classes.json", "history.json", "metrics.json", "curves.png", "checkpoints", "tb")
# What engine export / engine evaluate write into a run folder by default: made from the run's old
# model, so a run replaced with --overwrite does not keep them.
EXPORTS = ("model*.onnx", "model*.savedmodel", "model*.xml", "model*.bin", "model*.engine", "timing.cache",
           "evaluate-*.json")


def is_run_dir(path: str) -> bool:
    """A directory engine.train made a run of (it writes config.json once the run has started)."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def has_checkpoint(out: str) -> bool:
    """Whether a run folder holds any training checkpoint (not counting checkpoints/best)."""
    folder = os.path.join(out, "checkpoints")
    try:
        return any(name.startswith("ckpt-") and name.endswith(".index") for name in os.listdir(folder))
    except OSError:
        return False


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
