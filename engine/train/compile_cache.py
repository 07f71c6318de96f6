"""XLA's compiled train steps kept on disk (`--compile-cache`, on by default), so a later run of the
same model, batch and precision on the same machine loads them instead of compiling again (what
that saves is the model's compilation time; bench/results/2026-12-04-amd/compile-cache/ has a cold
and a warm run).

TensorFlow's own persistent cache does the work (the `--tf_xla_persistent_cache_directory` flag of
TF_XLA_FLAGS): it keys each entry by the function's signature and the hash of its HLO, checks the
stored HLO against the new one before using an entry, and writes entries atomically. Its key does
not hold the TensorFlow version or the processor the code was compiled for, so the directory does:
`<cache dir>/xla/<TensorFlow version>-<hash of the CPU model and flags and the GPUs>`. A loaded
entry is the executable the first run compiled from the same HLO, so the two runs compute the same
numbers (tests/test_compile_cache.py checks this bit for bit).

TensorFlow reads TF_XLA_FLAGS once per process, when its runtime starts (listing devices starts it):
`enable` must run before that, and a process keeps the directory it started with. A TF_XLA_FLAGS that already names a
cache directory is left as it is.
"""
from __future__ import annotations

import hashlib
import os

from engine import devices

FLAG = "--tf_xla_persistent_cache_directory"
_enabled = None  # the directory this process set (TensorFlow keeps the first it reads)


def machine_key() -> str:
    """What compiled code depends on besides the HLO: the TensorFlow build, the CPU, the GPUs."""
    import tensorflow as tf
    build = tf.sysconfig.get_build_info()
    # No TensorFlow device calls here: listing devices starts the runtime, which reads TF_XLA_FLAGS.
    parts = [tf.__version__, str(build.get("cuda_version", "")), devices.cpu_model(),
             " ".join(sorted(devices.cpu_flags())), *devices.nvidia_gpu_models()]
    return f"{tf.__version__}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:12]}"


def directory(cache_dir: str) -> str:
    return os.path.join(cache_dir, "xla", machine_key())


def enable(cache_dir: str) -> tuple[str | None, str]:
    """Point TensorFlow's XLA cache at this machine's directory under `cache_dir`.

    Returns (the directory in use or None, a line saying so)."""
    global _enabled
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if FLAG in flags:
        given = flags.split(FLAG, 1)[1].lstrip("= ").split(" ", 1)[0]
        whence = "" if given == _enabled else " (from TF_XLA_FLAGS)"
        return given or None, f"XLA compile cache: {given}{whence}"
    path = directory(cache_dir)
    try:  # TensorFlow fails a compilation whose entry it cannot write: only a writable directory is used
        os.makedirs(path, exist_ok=True)
        writable = os.access(path, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        return None, f"XLA compile cache off: cannot write {path}"
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={path}".strip()
    _enabled = path
    return path, f"XLA compile cache: {path}"


def entries(path: str | None) -> int:
    """How many compiled functions the directory holds."""
    if not path or not os.path.isdir(path):
        return 0
    return sum(1 for f in os.listdir(path) if f.endswith(".pb"))
