"""Device detection and the precision policy: float32, mixed_float16 (+ loss scaling) or mixed_bfloat16."""
from __future__ import annotations

import keras
import tensorflow as tf


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def policy_name(amp: bool) -> str:
    """--amp: float16 on GPUs (with loss scaling), bfloat16 elsewhere (CPU/TPU: no loss scaling)."""
    if not amp:
        return "float32"
    return "mixed_float16" if gpus() else "mixed_bfloat16"


def apply(amp: bool) -> str:
    name = policy_name(amp)
    keras.mixed_precision.set_global_policy(name)
    return name


def needs_loss_scaling(policy: str) -> bool:
    return policy == "mixed_float16"


def wrap_optimizer(optimizer, policy: str):
    if needs_loss_scaling(policy):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def speed_warnings(amp: bool, xla: bool) -> list[str]:
    """What we measured to be slow on this kind of device, said before the run starts."""
    out = []
    if amp and not gpus() and not cpu_has_amx():
        out.append("--amp on a CPU without AMX runs in bfloat16, measured 10x slower than float32 "
                   "for resnet9 (AVX-512, 2 cores); drop --amp unless you are checking precision")
    if xla and not gpus():
        out.append("--xla on CPU depends on the model: measured 1.4x faster for resnet9 in this "
                   "engine but 2x slower for VGG16; check yours with bench/")
    return out
