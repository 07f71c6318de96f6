"""What this machine has: GPUs (through TensorFlow, imported when asked), the CPU's model and
feature flags (from /proc/cpuinfo)."""
from __future__ import annotations

import glob
import os


def _tensorflow():
    """TensorFlow, imported without its C++ start-up logs (engine.cli.import_tensorflow_quietly): a
    command that asks only what the machine has (evaluate's report, gpucheck) must not print them."""
    from engine.cli import import_tensorflow_quietly
    import_tensorflow_quietly()
    import tensorflow as tf
    return tf


def gpus() -> list:
    return _tensorflow().config.list_physical_devices("GPU")


BF16_CAPABILITY = (8, 0)  # GPUs from Ampere on (A100, A10, L4, H100, ...) compute in bfloat16 natively


def compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) CUDA compute capability of each visible GPU."""
    tf = _tensorflow()
    out = []
    for gpu in gpus():
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        out.append(tuple(cc) if cc else (0, 0))
    return out


def nvidia_gpu_models() -> list[str]:
    """The NVIDIA driver's model name of each GPU (from /proc/driver/nvidia), without starting
    TensorFlow's runtime; empty without the driver."""
    out = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(info) as f:
                out += [line.split(":", 1)[1].strip() for line in f if line.startswith("Model:")]
        except OSError:
            pass
    return out


def allow_memory_growth() -> None:
    """TensorFlow takes nearly all of a GPU's memory when it first uses it; a process that also
    builds or runs TensorRT engines (export trt, evaluate) must leave it the rest. Call before
    TensorFlow touches the GPUs (it cannot be changed after); a no-op without GPUs."""
    tf = _tensorflow()
    for gpu in gpus():
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: too late to change, nothing else to do
            pass


def _cpuinfo(key: str) -> str:
    """The first `key: value` line's value in /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing)."""
    return set(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name ("" where /proc/cpuinfo does not say)."""
    return _cpuinfo("model name")


def cpu_has_amx() -> bool:
    return "amx_bf16" in cpu_flags()


def fast_bf16(flags: set) -> bool:
    """bfloat16 arithmetic in hardware: AMX tiles or AVX-512 BF16 (elsewhere it is emulated)."""
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def int8_dot(flags: set) -> bool:
    """int8 dot products without int16 saturation: VNNI (AVX-512 or AVX) or AMX int8 tiles."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def device_name() -> str:
    """What a run trained on, for metrics.json and bench reports: '1x NVIDIA A100...' or the CPU model."""
    found = gpus()
    if found:
        details = _tensorflow().config.experimental.get_device_details(found[0])
        return f"{len(found)}x {details.get('device_name', 'GPU')}"
    return f"{_cpuinfo('model name') or 'CPU'}, {os.cpu_count()} cores"
