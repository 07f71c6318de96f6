"""Advice before a run: what this machine measured about a forced --amp/--xla, and settings that make
a run meaningless.

The speed advice speaks only from this machine: where the speed choice (engine.train.speed) has timed
the forced setting here, for this model and batch, its figures are what the advice says; where it has
not, the advice says so, and that `--amp auto --xla auto` times it. It keeps no machine's timings
(those are in docs/performance.md and bench/results/). One hardware rule is said without timing:
bfloat16 without bfloat16 instructions is emulated (engine.devices.fast_bf16).
"""
from __future__ import annotations

import os

from engine import devices, models
from engine.config import AUTO, Config, default_cache_dir
from engine.files import read_json


def _fmt(speedup: float) -> str:
    return f"{speedup:.2g}x faster" if speedup >= 1 else f"{1 / speedup:.2g}x slower"


def _flags(amp: bool, xla: bool) -> str:
    return " ".join(f for f, on in (("--xla", xla), ("--amp", amp)) if on) or "--no-amp --no-xla"


def speed_warnings(amp: bool, xla: bool, model: str = "", measured: dict | None = None) -> list[str]:
    """What this CPU measured about the forced (amp, xla), said before the run starts. `measured`
    ({setting label: img/s}, engine.train.speed.label) are this machine's timed trials for this model
    and batch: where they include the forced setting, they are the advice; where they do not, a
    setting that turns --amp or --xla on is said to be unmeasured here."""
    out = []
    if devices.gpus():
        return out
    from engine.train import speed
    name = model or "this model"
    if amp and not devices.fast_bf16():
        out.append("--amp on a CPU without bfloat16 instructions (avx512_bf16 or AMX) runs bfloat16 in "
                   "emulation: expect it to be much slower than float32; drop --amp unless you are checking "
                   "precision")
    measured = measured or {}
    mine = measured.get(speed.label(amp, xla))
    if mine and len(measured) > 1:
        best = max(measured, key=measured.get)
        if measured[best] > mine * (1 + speed.MARGIN):
            out.append(f"{_flags(amp, xla)} ({speed.label(amp, xla)}) trained {name} at {mine:.0f} img/s on "
                       f"this CPU, {_fmt(mine / measured[best])} than {best} ({measured[best]:.0f} img/s), as "
                       f"the speed choice's timed trials measured; leave --amp and --xla at auto for the fastest")
    elif xla or (amp and devices.fast_bf16()):
        out.append(f"{_flags(amp, xla)} was not measured against the other settings on this CPU for {name}; "
                   f"`--amp auto --xla auto` (the default) times float32 / bfloat16, XLA off / on here once and "
                   f"trains with the fastest")
    return out


def measured_rates(cfg: Config, cache_dir: str = "") -> dict:
    """This machine's timed-trial figures ({setting label: img/s}) for the run's model and batch, from
    the speed-choice cache; empty where there are none."""
    import tensorflow as tf

    from engine.train import speed
    if models.is_user_model(cfg.model.model):  # its input side is known once it is loaded: not before a run
        return {}
    side = models.preprocess_for(models.get(cfg.model.model), cfg.model, cfg.image_shape).size
    setting = speed.machine_setting(cfg, side, min(cfg.optim.batch_size, speed.TRIAL_BATCH), tf.__version__)
    cache = read_json(os.path.join(cache_dir or cfg.data.cache_dir or default_cache_dir(), speed.CACHE_FILE), {})
    entry = cache.get(speed.cache_key(setting)) if isinstance(cache, dict) else None
    rates = entry.get("img_s") if isinstance(entry, dict) else None
    return {k: float(v) for k, v in rates.items() if isinstance(v, (int, float))} if isinstance(rates, dict) else {}


def config_warnings(cfg: Config) -> list[str]:
    """Settings that run but make the result meaningless."""
    m, r = cfg.model, cfg.run
    out = []
    if (models.get(m.model).backbone and m.weights == "none" and m.freeze == "all" and not r.init_from
            and not r.resume):
        out.append(f"--weights none with a frozen backbone (--freeze all): the head trains on the features of a "
                   f"random, untrained {m.model}, so expect accuracy near chance; pass --weights imagenet (or a "
                   f"weights file), or --freeze none to train the backbone too")
    return out


def run_warnings(cfg: Config) -> list[str]:
    """Everything said before a run starts (speed and settings)."""
    r = cfg.run
    forced = r.amp != AUTO and r.xla != AUTO
    measured = measured_rates(cfg) if forced and not devices.gpus() else {}
    return speed_warnings(r.amp is True, r.xla is True, cfg.model.model, measured=measured) + config_warnings(cfg)
