"""The GPU's precision rules, in one place: the precision policy (float32, mixed_bfloat16, or
mixed_float16 + loss scaling) by compute capability, what a run says it computed in (TensorFlow runs
float32 matrix products and convolutions in TF32 on GPUs of compute capability >= 8.0 unless told
otherwise), where XLA may compile a run (xla_options: not under --deterministic, not float16 over
several replicas), and the rule `--amp auto --xla auto` follows on GPUs (gpu_rule).

Keras is imported only by the functions that set a policy or wrap an optimizer: the rules and labels
here are plain functions of the compute capabilities."""
from __future__ import annotations

import os

from engine import devices
from engine.config import AUTO
from engine.errors import EngineError

BF16_CAPABILITY = devices.BF16_CAPABILITY
FLOAT16_ENV = "ENGINE_AMP_FLOAT16"  # 1: --amp in float16 + loss scaling on any machine, as on a T4 or V100
TF32_CAPABILITY = (8, 0)  # Ampere on: TensorFlow computes float32 matmuls and convolutions in TF32 by default


def policy_for(amp: bool, capabilities: list) -> str:
    """The policy of --amp/--no-amp on GPUs of these compute capabilities (none: a CPU). bfloat16 on
    CPUs and on GPUs of compute capability >= 8.0 (no loss scaling, so none of its failure modes);
    float16 + loss scaling where any GPU is older (7.x: V100, T4), which have no bfloat16 units."""
    if not amp:
        return "float32"
    if float16_forced() or capabilities and min(capabilities) < BF16_CAPABILITY:
        return "mixed_float16"
    return "mixed_bfloat16"


def float16_forced() -> bool:
    """ENGINE_AMP_FLOAT16=1: --amp trains in float16 with loss scaling even where bfloat16 is native
    (GPUs of compute capability >= 8.0, CPUs): the path of compute capability 7.x, run elsewhere
    (engine.gpucheck runs it so on newer GPUs)."""
    value = os.environ.get(FLOAT16_ENV, "")
    if value not in ("", "0", "1"):
        raise EngineError(f"{FLOAT16_ENV}={value}: give 1 (--amp in float16 + loss scaling) or 0")
    return value == "1"


def policy_name(amp: bool) -> str:
    """The policy of --amp/--no-amp on this machine's GPUs (or its CPU)."""
    return policy_for(amp, _capabilities())


def _capabilities() -> list:
    return devices.compute_capabilities() if devices.gpus() else []


def tf32_enabled() -> bool:
    """TensorFlow's TF32 switch (on by default; tf.config.experimental.enable_tensor_float_32_execution)."""
    import tensorflow as tf
    return bool(tf.config.experimental.tensor_float_32_execution_enabled())


def tf32_matmuls(capabilities: list, enabled: bool | None = None) -> bool:
    """Whether float32 matrix products and convolutions run in TF32 (10-bit mantissa) here: on a GPU of
    compute capability >= 8.0 with TensorFlow's TF32 switch on (`enabled`; None: ask TensorFlow). Never
    on a CPU. Under --no-amp that is the whole model; under --amp the parts kept in float32 (Muon's
    Newton-Schulz, airbench's whitening stem, the float32 layers of your own model)."""
    if not any(tuple(c) >= TF32_CAPABILITY for c in capabilities):
        return False
    return tf32_enabled() if enabled is None else bool(enabled)


PRECISION_WORDS = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def label(amp: bool, capabilities: list | None = None, tf32: bool | None = None) -> str:
    """What --amp/--no-amp computes in, for the run's log line and metrics.json: float32,
    "float32 (TF32 matmuls)", bfloat16 or float16. `capabilities`: None for this machine's GPUs;
    `tf32`: TensorFlow's TF32 switch, None to ask it."""
    if capabilities is None:  # (through policy_name: what apply() sets)
        caps, name = _capabilities(), policy_name(amp)
    else:
        caps, name = capabilities, policy_for(amp, capabilities)
    if name == "float32" and tf32_matmuls(caps, tf32):
        return "float32 (TF32 matmuls)"
    return PRECISION_WORDS[name]


def xla_options(xla, deterministic: bool, policy: str = "float32", replicas: int = 1) -> list[bool]:
    """The XLA settings a run may take: `xla` as given (True, False), or under auto both where XLA may
    compile the run and off where it may not. It may not under --deterministic (XLA has no
    deterministic max-pool gradient), nor in float16 with loss scaling over several replicas (under
    XLA, Keras's loss scaling can decide differently per replica). A given --xla there is a one-line
    error."""
    if deterministic:
        why = ("--deterministic cannot be combined with --xla: XLA has no deterministic max-pool gradient; "
               "drop one of them")
    elif needs_loss_scaling(policy) and replicas > 1:
        why = ("--xla --amp in float16 (GPUs of compute capability 7.x) over several replicas has not been run "
               "on GPUs: under XLA, Keras's loss scaling can decide differently per replica; drop --xla, or "
               "train on one GPU")
    else:
        why = None
    if xla == AUTO:
        return [False] if why else [False, True]
    if xla and why:
        raise EngineError(why)
    return [bool(xla)]


def gpu_rule(amp, xla, capabilities: list, replicas: int, deterministic: bool) -> tuple[bool, bool]:
    """(amp, xla) on GPUs of these compute capabilities, auto decided by rule, not measured: mixed
    precision on (bfloat16 or float16: policy_for) and XLA on wherever xla_options allows it."""
    a = True if amp == AUTO else bool(amp)
    x = max(xla_options(xla, deterministic, policy_for(a, capabilities), replicas)) if xla == AUTO else bool(xla)
    return a, x


def apply(amp: bool) -> str:
    import keras
    name = policy_name(amp)
    keras.mixed_precision.set_global_policy(name)
    return name


def needs_loss_scaling(policy: str) -> bool:
    return policy == "mixed_float16"


def wrap_optimizer(optimizer, policy: str):
    if needs_loss_scaling(policy):
        import keras
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
