"""What this machine has: GPUs (through TensorFlow, imported when asked), the CPU's model and
feature flags (from /proc/cpuinfo)."""
from __future__ import annotations

import os


def gpus() -> list:
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


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


def cpu_has_amx() -> bool:
    return "amx_bf16" in cpu_flags()


def device_name() -> str:
    """What a run trained on, for metrics.json and bench reports: '1x NVIDIA A100...' or the CPU model."""
    found = gpus()
    if found:
        import tensorflow as tf
        details = tf.config.experimental.get_device_details(found[0])
        return f"{len(found)}x {details.get('device_name', 'GPU')}"
    return f"{_cpuinfo('model name') or 'CPU'}, {os.cpu_count()} cores"
