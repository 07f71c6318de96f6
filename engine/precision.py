"""Device detection and the precision policy: float32, mixed_float16 (+ loss scaling) or mixed_bfloat16."""
from __future__ import annotations

import keras
import tensorflow as tf


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_amx() -> bool:
    return "amx_bf16" in cpu_flags()


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


def _fmt(speedup: float) -> str:
    return f"{speedup:.2g}x faster" if speedup >= 1 else f"{1 / speedup:.2g}x slower"


def speed_warnings(amp: bool, xla: bool, model: str = "", xla_speedups: tuple = ()) -> list[str]:
    """What we measured to be slow on this kind of device, said before the run starts.
    `xla_speedups` are the model's --xla training speed-ups measured on 2-core AVX-512 CPU hosts
    (one per host; empty: not measured). Hosts of the same kind disagreed, so the advice is only
    firm when every measurement agrees."""
    out = []
    if gpus():
        return out
    if amp and not cpu_has_amx():
        if "avx512_bf16" in cpu_flags():
            out.append("--amp on a CPU without AMX runs in bfloat16, which measured 1.6-2.1x faster than float32 for "
                       "resnet9 on two 2-core AVX-512-BF16 hosts and 10x slower on a third; check with "
                       "`pytest bench/ -k resnet9` before a long run")
        else:
            out.append("--amp on a CPU without bfloat16 instructions (avx512_bf16 or AMX) runs bfloat16 in "
                       "emulation: expect it to be much slower than float32; drop --amp unless you are checking "
                       "precision")
    name = model or "this model"
    if not xla_speedups:
        if xla:
            out.append(f"--xla on CPU is not measured for {name}: it ranged from 2x slower (VGG16 trained whole) "
                       f"to 1.7x faster (resnet9 on one host); check with bench/")
    elif max(xla_speedups) < 1:
        if xla:
            out.append(f"--xla on CPU made {name} {_fmt(max(xla_speedups))} or worse on 2-core AVX-512 CPUs "
                       f"(oneDNN without XLA is faster for its convolutions); drop --xla unless bench/ says otherwise here")
    elif min(xla_speedups) > 1:
        if not xla:
            out.append(f"{name} trained {_fmt(min(xla_speedups))} or more with --xla on 2-core AVX-512 CPUs; add --xla")
    elif xla:
        out.append(f"--xla on CPU depends on the host for {name}: measured from "
                   f"{_fmt(min(xla_speedups))} to {_fmt(max(xla_speedups))} on 2-core AVX-512 CPUs of the same "
                   f"kind; check with `pytest bench/ -k {model or 'MODEL'}`")
    return out
