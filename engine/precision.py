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


def speed_warnings(amp: bool, xla: bool, model: str = "", xla_speedup: float = 0.0) -> list[str]:
    """What we measured to be slow on this kind of device, said before the run starts.
    `xla_speedup` is the model's measured --xla speed-up on our 2-core CPU (0: not measured)."""
    out = []
    if amp and not gpus() and not cpu_has_amx():
        out.append("--amp on a CPU without AMX runs in bfloat16, measured 10x slower than float32 "
                   "for resnet9 (AVX-512, 2 cores); drop --amp unless you are checking precision")
    if gpus():
        return out
    if xla and 0 < xla_speedup < 1:
        out.append(f"--xla on CPU made {model} {1 / xla_speedup:.1f}x slower on a 2-core AVX-512 CPU "
                   f"(oneDNN without XLA is faster for its convolutions); drop --xla unless bench/ says otherwise here")
    elif xla and not xla_speedup:
        out.append(f"--xla on CPU is not measured for {model or 'this model'}: it ranged from 2x slower (VGG16 "
                   f"trained whole) to 1.7x faster (resnet9); check with bench/")
    elif not xla and xla_speedup > 1:
        out.append(f"{model} trained {xla_speedup:.2g}x faster with --xla on a 2-core AVX-512 CPU; "
                   f"add --xla")
    return out
