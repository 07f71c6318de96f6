"""Advice before a run, from what was measured: which settings were slow on which kind of machine,
and settings that make a run meaningless.

Where the engine's speed probe (engine.train.autotune) has measured the forced setting on this
machine, for this model and batch, its figures are what the advice says. Otherwise the figures are
bench results (bench/test_train_throughput.py, dated runs in bench/results/), kept here as a table so
that the model code holds none of them.
"""
from __future__ import annotations

import os

from engine import devices, models
from engine.config import AUTO, Config, default_cache_dir
from engine.files import read_json

# --xla's training speed-up ('loop xla' / 'loop fp32') on 2-core AVX-512 CPU machines, one figure per
# machine measured; a model not listed is not measured. On AVX2-only CPUs the figures differ (airbench
# 1.93x faster under --xla on one), so the table is not applied there. For transfer models it depends on what
# trains: VGG16 trained whole was 2x slower under --xla (oneDNN's convolutions beat XLA's), its
# frozen 64x64 recipe 1.13x faster on one machine and 1.25x slower on another.
CPU_XLA_SPEEDUPS = {
    "airbench": (1.48, 0.79, 0.84, 0.76),
    "resnet9": (1.66, 0.84, 0.84, 0.81),
    "airbench-muon": (0.79,),
}


def _fmt(speedup: float) -> str:
    return f"{speedup:.2g}x faster" if speedup >= 1 else f"{1 / speedup:.2g}x slower"


def _flags(amp: bool, xla: bool) -> str:
    return " ".join(f for f, on in (("--xla", xla), ("--amp", amp)) if on) or "--no-amp --no-xla"


def speed_warnings(amp: bool, xla: bool, model: str = "", xla_speedups: tuple | None = None,
                   measured: dict | None = None) -> list[str]:
    """What was measured to be slow on this kind of device, said before the run starts. Machines of
    the same kind disagreed, so the advice is only firm when every measurement agrees.
    `xla_speedups` (default: the table's figures for `model`) are --xla's measured speed-ups.
    `measured` ({setting label: img/s}, engine.train.autotune.label) are this machine's probe figures
    for this model and batch: where they include the forced (amp, xla), they are the advice."""
    out = []
    if devices.gpus():
        return out
    from engine.train import autotune
    mine = (measured or {}).get(autotune.label(amp, xla))
    if mine and len(measured) > 1:
        best = max(measured, key=measured.get)
        if measured[best] > mine * (1 + autotune.MARGIN):
            out.append(f"{_flags(amp, xla)} ({autotune.label(amp, xla)}) trained {model or 'this model'} at "
                       f"{mine:.0f} img/s on this CPU, {_fmt(mine / measured[best])} than {best} "
                       f"({measured[best]:.0f} img/s), as measured by the engine's speed probe; leave --amp and "
                       f"--xla at auto for the fastest")
        return out
    if xla_speedups is None:  # the table's figures hold for CPUs like the ones they came from
        xla_speedups = CPU_XLA_SPEEDUPS.get(model, ()) if "avx512f" in devices.cpu_flags() else ()
    # With AVX-512 BF16 (no AMX) bfloat16 trained 1.3-1.5x faster than float32 on every CPU measured
    # (airbench, ResNet-9; bench/results/2026-11-24-amd, 2026-12-05-amd-avx512): nothing to warn about.
    if amp and not devices.cpu_has_amx() and "avx512_bf16" not in devices.cpu_flags():
        out.append("--amp on a CPU without bfloat16 instructions (avx512_bf16 or AMX) runs bfloat16 in "
                   "emulation: expect it to be much slower than float32; drop --amp unless you are checking "
                   "precision")
    name = model or "this model"
    if not xla_speedups:
        if xla:
            amp_too = " (and --amp)" if amp else ""
            out.append(f"--xla{amp_too} on this CPU is not measured for {name}: on 2-core CPUs --xla ranged from "
                       f"2x slower (VGG16 trained whole) to 1.9x faster (airbench on an AVX2 CPU); without "
                       f"--xla{amp_too} (auto) a run times the choices on this machine once and takes the fastest")
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


def measured_rates(cfg: Config, cache_dir: str = "") -> dict:
    """This machine's speed-probe figures ({setting label: img/s}) for the run's model and batch, from
    the speed-choice cache; empty where there are none."""
    import tensorflow as tf

    from engine.train import autotune
    if models.is_user_model(cfg.model.model):  # its input side is known once it is loaded: not before a run
        return {}
    side = models.preprocess_for(models.get(cfg.model.model), cfg.model).size
    setting = autotune.machine_setting(cfg, side, min(cfg.optim.batch_size, autotune.PROBE_BATCH), tf.__version__)
    cache = read_json(os.path.join(cache_dir or cfg.data.cache_dir or default_cache_dir(), autotune.CACHE_FILE), {})
    entry = cache.get(autotune.cache_key(setting)) if isinstance(cache, dict) else None
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
