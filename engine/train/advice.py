"""Advice before a run, from what was measured: which settings were slow on which kind of machine.

The figures are bench results (bench/test_train_throughput.py, dated runs in bench/results/), kept
here as a table so that the model code holds none of them.
"""
from __future__ import annotations

from engine import devices

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


def speed_warnings(amp: bool, xla: bool, model: str = "", xla_speedups: tuple | None = None) -> list[str]:
    """What was measured to be slow on this kind of device, said before the run starts. Machines of
    the same kind disagreed, so the advice is only firm when every measurement agrees.
    `xla_speedups` (default: the table's figures for `model`) are --xla's measured speed-ups."""
    out = []
    if devices.gpus():
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
            out.append(f"--xla on this CPU is not measured for {name}: on 2-core CPUs it ranged from 2x slower "
                       f"(VGG16 trained whole) to 1.9x faster (airbench on an AVX2 CPU); check with bench/")
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
