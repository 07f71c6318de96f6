"""The start of a run: the run folder's claim, the data, the determinism switches."""
from __future__ import annotations

import os
import sys
import tempfile

import tensorflow as tf

from engine import data, files, layout
from engine.config import Config, default_cache_dir
from engine.errors import EngineError


def warn_on_stderr(message: str) -> None:
    """The default `warn` of a run: `warning: ...` on stderr (a notebook may pass its own)."""
    print(f"warning: {message}", file=sys.stderr)


def prepare_run_dir(run) -> tuple[bool, files.Lock]:
    """Check --out against --resume/--overwrite before any work starts, make it, and lock it for this
    process (a second process on the same --out is refused). Returns (whether --out was created here,
    so that a start that fails removes it again; the lock, held until the run ends)."""
    out = run.out
    created = not os.path.lexists(out)
    if created:  # (an existing folder is locked first: a run in progress there is "in use", whatever it holds)
        layout.check_out(out, run.resume, run.overwrite)
    elif not os.path.isdir(out):
        raise EngineError(f"--out {out} is a file, not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise EngineError(f"cannot write to --out {out}: {e.strerror or e}") from None
    lock = files.Lock(out, "a run writes there")
    try:
        layout.check_out(out, run.resume, run.overwrite)  # again, now that no other process can start a run
        _check_writable(out)
    except BaseException:
        lock.release()
        raise
    return created, lock


def _check_writable(out: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=out) as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise EngineError(f"cannot write to --out {out}: {e.strerror or e}") from None



def load_splits(cfg: Config, log=print):
    """(Splits, (x, y) of train, val, test) for a run's data options."""
    d, batch = cfg.data, cfg.optim.batch_size
    splits = data.load(d.data, d.cache_dir or default_cache_dir(), log=log)
    train, val, test = data.prepare(splits, d.limit, d.limit_test, d.val_split, d.val_images)
    if len(train[0]) < batch:
        raise EngineError(f"--batch-size {batch} is larger than the {len(train[0])} training images")
    return splits, train, val, test


def set_determinism(on: bool) -> None:
    """Op determinism is process-wide in TensorFlow; set it per run so that runs in one process
    (tests, notebooks) do not inherit it from each other."""
    from tensorflow.python.framework import config as tf_config
    if on:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
