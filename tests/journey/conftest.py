"""The user-journey tier: the installed `engine` console script, run as a user runs it.

Every command here is a subprocess of the `engine` script, started from a fresh temporary working
directory with relative paths, in the user's default environment: no ENGINE_AMP / ENGINE_XLA (so
the automatic precision choice runs, as for a user), no ENGINE_CACHE (so the default
~/.cache/engine is used, under a fake HOME made for the session), umask 022 unless a test says
otherwise. The real CIFAR-10 archive comes from ENGINE_DATA, in small subsets.

One trained run (`base_run`) is shared by the whole session, across pytest-xdist workers too: it
is made once under a file lock and never changed; a test that changes a run copies it first.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# The same small subset everywhere: 2048 training and 512 test images of the real CIFAR-10.
SUBSET = ["--limit", "2048", "--limit-test", "512"]
# The tiny model at batch 64: 32 steps an epoch, several step boundaries a second for the signals to
# land on. One model and batch for every tiny run, so that the speed choice times once per session.
TINY = ["--model", "tiny", *SUBSET, "--batch-size", "64"]

SIGNAL_TIMEOUT = 300  # seconds to wait for a line of output before a signal (a loaded 2-core machine)
RUN_TIMEOUT = 900


def engine_script() -> str:
    """The `engine` console script of this environment (the venv's bin/, also when it is not on PATH)."""
    path = shutil.which("engine") or shutil.which("engine", path=os.path.dirname(sys.executable))
    if not path:
        pytest.fail("no `engine` script on PATH or beside this Python: install the package (pip install -e .)")
    return path


@pytest.fixture(scope="session")
def journey_root(tmp_path_factory) -> Path:
    """A folder shared by every worker of this pytest session (one per session, not across sessions)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "journey-shared"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def user_env(journey_root, shared_data) -> dict:
    """A user's shell: the caller's environment without the suite's ENGINE_AMP / ENGINE_XLA /
    ENGINE_CACHE, a fake HOME (so ~/.cache/engine is the session's), ENGINE_DATA absolute."""
    home = journey_root / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    for name in ("ENGINE_AMP", "ENGINE_XLA", "ENGINE_CACHE", "XDG_CACHE_HOME", "PYTHONPROFILEIMPORTTIME"):
        env.pop(name, None)
    env["HOME"] = str(home)
    env["ENGINE_DATA"] = os.path.abspath(shared_data)
    # Output line by line, as in a terminal: the signal tests time their signals by it.
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Running:
    """A started `engine` process whose stdout and stderr are collected line by line."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._open = 2
        self._threads = [threading.Thread(target=self._pump, args=(s, lines), daemon=True)
                         for s, lines in ((popen.stdout, self.out), (popen.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _pump(self, stream, lines):
        for line in stream:
            with self._cond:
                lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = SIGNAL_TIMEOUT, stream: str = "out") -> str:
        """Block until a line of stdout (or stderr) matches `pattern`; that line."""
        rx, lines = re.compile(pattern), self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if self._open == 0 or left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
        self.popen.kill()
        rc = self.popen.wait()
        why = "the process ended" if self._open == 0 else f"{timeout:.0f} s passed"
        pytest.fail(f"no line matching {pattern!r} before {why} (exit {rc})\nstdout:\n{''.join(self.out)}\n"
                    f"stderr:\n{''.join(self.err)}")

    def send_signal(self, sig) -> None:
        assert self.popen.poll() is None, f"the process ended before {sig!r}:\n{''.join(self.err)}"
        self.popen.send_signal(sig)

    def finish(self, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"still running after {timeout} s\nstdout:\n{''.join(self.out)}\nstderr:\n{''.join(self.err)}")
        for t in self._threads:
            t.join(30)
        return subprocess.CompletedProcess(self.popen.args, rc, "".join(self.out), "".join(self.err))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.popen.poll() is None:  # a failed test leaves nothing running
            self.popen.kill()
            self.popen.wait()


class Engine:
    """`engine ARGS` as a user types it, in `cwd`, with the user's environment and a umask."""

    def __init__(self, script: str, env: dict):
        self.script, self.env = script, env

    def _env(self, extra: dict | None) -> dict:
        env = dict(self.env)
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(self, *args, cwd, umask: int = 0o022, env: dict | None = None,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.script, *map(str, args)], cwd=cwd, env=self._env(env), umask=umask,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"engine {' '.join(map(str, args))}: still running after {timeout} s\n"
                        f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}")

    def start(self, *args, cwd, umask: int = 0o022, env: dict | None = None) -> Running:
        return Running(subprocess.Popen([self.script, *map(str, args)], cwd=cwd, env=self._env(env), umask=umask,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=_shell_signals))


def _shell_signals() -> None:
    """Ctrl-C and SIGTERM as a shell leaves them to a command it starts: default. A pytest-xdist
    worker ignores SIGINT, and an ignored signal stays ignored in its children."""
    import signal
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture(scope="session")
def engine(user_env) -> Engine:
    return Engine(engine_script(), user_env)


@contextlib.contextmanager
def locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def base_run(journey_root, engine) -> Path:
    """A finished tiny run of 2 epochs with its ONNX export, trained as `engine train ... --out runs/base`
    in its own working directory: made once per session (the first run also decodes the archive
    into the fake HOME's cache and runs the speed choice's timed trials). Read it, never change it: copy_run it."""
    where = journey_root / "base"
    state_file = journey_root / "base.json"
    with locked(journey_root / "base.lock"):
        if not state_file.exists():
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir()
            log, ok = [], True
            for args in (["train", *TINY, "--epochs", "2", "--out", "runs/base"], ["export", "onnx", "runs/base"]):
                p = engine.run(*args, cwd=where)
                log.append(f"$ engine {' '.join(args)}\nexit {p.returncode}\n{p.stdout}{p.stderr}")
                if p.returncode != 0:
                    ok = False
                    break
            state_file.write_text(json.dumps({"ok": ok, "log": "\n".join(log)}))
        state = json.loads(state_file.read_text())
    if not state["ok"]:
        pytest.fail("the session's base run could not be made:\n" + state["log"])
    return where / "runs" / "base"


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run (files, modes and times) at `dst`, whose parents are made."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    return dst


def snapshot(root: Path) -> dict:
    """Every file and folder under `root` (and root itself): {relative path: (kind, mode, sha256)}."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_dir() and not path.is_symlink():
            out[rel] = ("dir", oct(st.st_mode & 0o7777), None)
        else:
            out[rel] = ("file", oct(st.st_mode & 0o7777), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def stderr_lines(p) -> list[str]:
    """stderr's lines, without `warning:` lines and the interpreter's import-time profile."""
    return [x for x in p.stderr.strip().splitlines()
            if x.strip() and not x.startswith(("warning:", "import time:"))]


def assert_no_traceback(p) -> None:
    assert "Traceback" not in p.stderr, p.stderr


def latest_checkpoint_step(run: Path) -> int:
    """The step of the newest checkpoint a run's checkpoints/checkpoint file names."""
    text = (run / "checkpoints" / "checkpoint").read_text()
    m = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', text, re.M)
    assert m, text
    return int(m.group(1))


def checkpoint_exists(run: Path, step: int) -> bool:
    return (run / "checkpoints" / f"ckpt-{step}.index").is_file()


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)

