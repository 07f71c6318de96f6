"""The precision policy: float32, mixed_bfloat16, or mixed_float16 (+ loss scaling)."""
from __future__ import annotations

import keras

from engine import devices

BF16_CAPABILITY = devices.BF16_CAPABILITY


def policy_name(amp: bool) -> str:
    """--amp: bfloat16 on CPUs and on GPUs of compute capability >= 8.0 (no loss scaling, so none
    of its failure modes); float16 + loss scaling on older GPUs (7.x: V100, T4), which have no
    bfloat16 units."""
    if not amp:
        return "float32"
    capabilities = devices.compute_capabilities() if devices.gpus() else []
    if capabilities and min(capabilities) < BF16_CAPABILITY:
        return "mixed_float16"
    return "mixed_bfloat16"


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
