"""Shared fixtures for the throughput benchmarks.

ENGINE_DATA points at the data (CI: ../shared/data/cifar10-jpeg.tar.gz). ENGINE_BENCH_QUICK=1 runs
every benchmark with the tiny model, few steps and one round: it proves the suite runs, nothing more.
The tools beside the suite (bench/ab.py, bench/micro/, ...) share `machine_info` and `provenance`.
"""
import importlib.metadata
import os
import platform
import queue
import shlex
import subprocess
import sys
import threading

import pytest

from engine import devices
from engine import data
from engine.config import default_cache_dir

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"


@pytest.fixture(scope="session")
def splits():
    source = os.environ.get("ENGINE_DATA")
    if not source:
        pytest.skip("set ENGINE_DATA to the CIFAR-10 data (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    return data.load(source, default_cache_dir(), log=lambda *a, **k: None)


def compile_seed_style(model, o) -> None:
    """`model.compile` as the seed experiments do it (no XLA, accuracy metric), with the engine's
    optimizer and label-smoothed loss for the optim config `o`, so fit rows differ only in the loop."""
    import tensorflow as tf

    from engine.train.loop import smoothed_cross_entropy
    from engine.train.optim import make_optimizer
    num_classes = model.output_shape[-1]
    model.compile(optimizer=make_optimizer(o, o.lr), jit_compile=False,
                  loss=lambda yt, yp: smoothed_cross_entropy(tf.cast(tf.reshape(yt, [-1]), tf.int32), yp,
                                                             num_classes, o.label_smoothing),
                  metrics=["sparse_categorical_accuracy"])


class FitWindows:
    """One `model.fit(ds, epochs=1, steps_per_epoch=total_steps)` running in a thread, held before
    each batch: `window(n)` lets `n` batches through and returns when they are done, so a benchmark
    times windows of steps inside a single running `fit`, as a user's training runs.

    Timing whole `fit` calls instead also times the end of each call. Here that end often waited for
    the next wake-up of tf.data's autotuner (its period starts at 10 ms and doubles): fit rounds of
    different models measured 10.24, 20.5 or 40.99 s, the sums of that series, halving fit's img/s."""

    def __init__(self, model, ds, total_steps: int):
        import keras
        self.model, self.left = model, total_steps
        self._go, self._done, self.error = threading.Semaphore(0), queue.Queue(), None
        gate = self

        class Gate(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                gate._go.acquire()

            def on_train_batch_end(self, batch, logs=None):
                gate._done.put(True)

        def run():
            try:
                model.fit(ds, epochs=1, steps_per_epoch=total_steps, verbose=0, callbacks=[Gate()])
            except BaseException as e:  # handed to the benchmark's thread by window()
                gate.error = e
            gate._done.put(False)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def window(self, n: int) -> None:
        if n > self.left:
            raise ValueError(f"{n} steps asked, {self.left} left of this fit")
        self.left -= n
        for _ in range(n):
            self._go.release()
        for _ in range(n):
            if not self._done.get():
                raise RuntimeError("model.fit stopped before the window ended") from self.error

    def close(self) -> None:
        """Waits for fit to return; lets it finish the steps no window took."""
        for _ in range(self.left):
            self._go.release()
        self.left = 0
        self._thread.join()
        if self.error is not None:
            raise self.error


def machine_info() -> dict:
    import tensorflow as tf

    from engine.devices import device_name

    def version(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"device": device_name(), "cores": os.cpu_count(), "gpus": len(devices.gpus()),
            "tensorflow": tf.__version__, "keras": version("keras"), "onnxruntime": version("onnxruntime"),
            "tensorrt": version("tensorrt"), "openvino": version("openvino"), "python": platform.python_version(),
            "cpu_features": cpu_features(), "engine_commit": engine_commit()}


def engine_commit() -> str:
    """The engine's git commit measured (`git rev-parse HEAD`), marked when tracked files differ from
    it; where the engine is not a git checkout, its version."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        from engine import __version__
        return f"unknown: not a git checkout (engine {__version__})"
    return commit + (" with uncommitted changes" if changed else "")


def provenance(module: str, argv: list) -> dict:
    """What a bench tool writes at the top of its output: the command that reproduces it, the engine
    commit and the machine (machine_info)."""
    return {"command": shlex.join([os.path.basename(sys.executable), "-m", module, *argv]), "machine": machine_info()}


def print_provenance(module: str, argv: list) -> None:
    """provenance() as the header of a tool's text output."""
    import json
    info = provenance(module, argv)
    print(f"# command: {info['command']}\n# engine commit: {info['machine']['engine_commit']}\n"
          f"# machine: {json.dumps(info['machine'])}", flush=True)


def cpu_features() -> str:
    """The CPU features that decide CPU inference and bfloat16 speed (engine.devices.SPEED_FLAGS)."""
    return " ".join(devices.cpu_features()) or "none of AVX2, AVX-512, VNNI, AMX"
