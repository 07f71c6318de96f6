"""Files written whole or not at all: run-dir JSON, the decoded-data cache, exports.

Each is written to a temporary file beside its target and moved into place when complete, so a
crash or a full disk never leaves a half-written file where a reader (or a resume) would trust it,
and an existing file is replaced only by a finished one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from engine.errors import EngineError


def replace(tmp: str, path: str) -> None:
    """Move a finished file or folder `tmp` to `path`, replacing what is there (a folder too)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
    """`with atomic_open(path) as f: ...` writes `path` only if the block finishes."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str):
    """`with atomic_dir(path) as tmp: ...` fills a temporary folder that becomes `path` only if
    the block finishes."""
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        yield tmp
        replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str, obj) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_bytes(path: str, payload: bytes) -> None:
    with atomic_open(path) as f:
        f.write(payload)


def read_json(path: str, default):
    """The JSON in `path`, or `default` if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def claim_output(out: str, overwrite: bool) -> None:
    """Fail before any work if `out` exists (without --overwrite) or its folder does not."""
    if os.path.exists(out) and not overwrite:
        raise EngineError(f"{out} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise EngineError(f"the folder of --out does not exist: {parent}")
