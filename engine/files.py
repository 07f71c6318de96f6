"""Writing without ever losing what was there: the one home of every file and folder the engine writes.

- Whole or not at all: each file or folder is written under a temporary name beside its target and
  moved into place when complete, so a crash, a kill or a full disk never leaves a half-written file
  where a reader (or a resume) would trust it.
- Never over something else: an existing target is replaced only with `--overwrite`, and even then
  only by its own kind (a file by a file, an export folder by an export folder); a folder is never
  deleted to make room for a file, and what a caller marks as protected (a run, a run's own files) is
  never replaced at all. The old folder is moved aside first and removed only once the new one is in.
- Modes from the umask: files come out 0666 and folders 0777 minus the user's umask (0644/0755 under
  the usual 022), as `open` and `mkdir` would make them, not the 0600/0700 of temporary files.
- One owner per run folder: `Lock(path)` holds an exclusive lock on a folder while a process writes
  it; a second process gets a one-line error instead of writing over the first. Readers that must not
  read it while it is written (an export) hold a shared lock: several at once, but not beside a writer.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from typing import Callable

from engine.errors import EngineError, is_disk_full

MAX_JSON_BYTES = 64 << 20  # a run file or report larger than this is not one of ours


def umask() -> int:
    """The process's umask, read without changing it where Linux tells (/proc), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str) -> None:
    """Give a file or folder made by tempfile (0600/0700) the mode `open`/`mkdir` would have given it,
    the folder's contents too."""
    mask = umask()
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, names in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in names:
                p = os.path.join(root, name)
                if not os.path.islink(p):
                    mode = os.stat(p).st_mode & 0o777
                    os.chmod(p, (mode | 0o666 if mode & 0o077 == 0 else mode) & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def replace(tmp: str, path: str) -> None:
    """Move a finished file or folder `tmp` to `path`. A file replaces only a file and a folder only a
    folder; an old folder is moved aside, and removed only once the new one is in place."""
    new_is_dir = os.path.isdir(tmp)
    if os.path.lexists(path):
        old_is_dir = os.path.isdir(path) and not os.path.islink(path)
        if old_is_dir != new_is_dir:
            raise EngineError(f"{path} is a {'folder' if old_is_dir else 'file'}; it is not replaced by a "
                              f"{'folder' if new_is_dir else 'file'}")
        if old_is_dir:
            aside = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".old-")
            os.replace(path, os.path.join(aside, "old"))
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
            return
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
    """`with atomic_open(path) as f: ...` writes `path` only if the block finishes."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp)
        replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if is_disk_full(e):
            raise disk_full(path) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str):
    """`with atomic_dir(path) as tmp: ...` fills a temporary folder that becomes `path` only if
    the block finishes."""
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        yield tmp
        apply_umask(tmp)
        replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise disk_full(path) from None
        raise


def disk_full(path: str) -> EngineError:
    """The one line for a full disk (or quota) while writing `path`."""
    return EngineError(f"no space left on device writing {path}; nothing was written there: free some space "
                       f"and run the command again")


def write_json(path: str, obj) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_bytes(path: str, payload: bytes) -> None:
    with atomic_open(path) as f:
        f.write(payload)


def read_json(path: str, default):
    """The JSON in `path`, or `default` if it is missing, unreadable, not a regular file or too large."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > MAX_JSON_BYTES:
            return default
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return default


def claim_output(out: str, overwrite: bool, *, folder: bool = False,
                 protected: Callable[[str], str | None] | None = None, replaceable: Callable[[str], bool] | None = None,
                 flag: str = "--out") -> None:
    """Fail before any work unless `out` can be written: its parent folder exists, and it does not
    exist yet, or it exists, --overwrite was given and it is the kind of thing this output replaces.
    `folder`: the output is a folder (an export folder), else a file. `protected(path)`: a reason why
    `path` must never be replaced (a run, a run's own file), or None. `replaceable(path)`: whether an
    existing folder is one this output may replace (e.g. a SavedModel)."""
    reason = protected(out) if protected else None
    if reason:
        raise EngineError(f"{flag} {out} is {reason}; it is never written there: choose another {flag}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise EngineError(f"the folder of {flag} does not exist: {os.path.dirname(out) or '.'}")
    if not os.path.lexists(out):
        return
    is_dir = os.path.isdir(out) and not os.path.islink(out)
    if is_dir and not folder:
        raise EngineError(f"{flag} {out} is a folder; give a file path (a folder is never replaced by a file)")
    if folder and not is_dir:
        raise EngineError(f"{flag} {out} is a file; give a folder path (a file is never replaced by a folder)")
    if is_dir and replaceable and not replaceable(out):
        raise EngineError(f"{flag} {out} is a folder that is not an export of this kind; it is never replaced: "
                          f"choose another {flag}")
    if not overwrite:
        raise EngineError(f"{out} already exists; pass --overwrite to replace it")


def free_name(path: str) -> str:
    """`path` if nothing is there, else `stem-2.ext`, `stem-3.ext`, ...: the first free name."""
    if not os.path.lexists(path):
        return path
    stem, ext = os.path.splitext(path)
    n = 2
    while os.path.lexists(f"{stem}-{n}{ext}"):
        n += 1
    return f"{stem}-{n}{ext}"


class Busy(EngineError):
    """The folder is locked by another process."""


class Lock:
    """An exclusive lock on a folder (flock on the folder itself: no lock file to leave behind), held
    until `release()` or the process ends, even by SIGKILL: the kernel drops it with the process.
    `shared`: a reader's lock, which other readers may hold too, but not a writer (nor beside one)."""

    def __init__(self, path: str, what: str, shared: bool = False):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as e:
            raise EngineError(f"cannot open {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise Busy(f"{path} is in use by another engine process ({what}); wait for it to end or "
                           f"choose another --out") from None
            raise EngineError(f"cannot lock {path}: {e.strerror or e}") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_holders(path: str) -> list[int]:
    """The process ids holding a flock on `path`, as Linux's /proc/locks lists them: [] where it does
    not (another system, a process of another pid namespace, a file system that names it otherwise)."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF" (a waiter's: "1: -> FLOCK ...")
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == where and fields[4].isdigit():
            pids.add(int(fields[4]))
    return sorted(pids - {0})
