"""Device detection and the precision policy: float32, mixed_float16 (+ loss scaling) or mixed_bfloat16."""
from __future__ import annotations

import keras

from engine.devices import gpus


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
