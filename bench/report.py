"""`python -m bench.report BENCH.json [--out DIR]`: report.md and PNG charts from pytest-benchmark
JSON: the goals and whether they are met, training throughput with each row's ratio to Keras
`model.fit` on the same model, the input pipeline against the step's consumption, and inference
latency/throughput per backend. Ratios lead: they are what compares across machines."""
from __future__ import annotations

import argparse
import json
import os
import sys

from engine import devices


def rows(bench: dict) -> list[dict]:
    out = []
    for b in bench["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("kind", "train") != "train" or "img_s" not in info or "config" not in info:
            continue
        out.append({**info, "rounds": b["stats"]["rounds"]})
    return out


def is_fit(r: dict) -> bool:
    return r["config"].startswith("keras fit")


def is_stock(r: dict) -> bool:
    """A `fit` row on the model as plain Keras trains it (no engine.models.cpu_step rewrites): without the
    engine's CPU training-step changes, which the other `fit` rows' model has."""
    return is_fit(r) and r["config"].endswith(" stock")


def baseline(rows_: list[dict], model: str, precision: str = "float32", stock: bool = False) -> float | None:
    """img/s of Keras `fit` on this model in this precision (float32: the seed experiments' way), on the
    engine's model, or with `stock` on the plain Keras one."""
    for r in rows_:
        if r["model"] == model and is_fit(r) and is_stock(r) == stock and r["precision"] == precision:
            return r["img_s"]
    return None


def peaks(bench: dict) -> dict:
    """{(op, dtype): GFLOP/s} of the peak benchmarks (bench/test_peak.py)."""
    return {(b["extra_info"]["op"], b["extra_info"]["dtype"]): b["extra_info"]["gflop_s"]
            for b in bench.get("benchmarks", []) if b.get("extra_info", {}).get("kind") == "peak"
            and "gflop_s" in b["extra_info"]}


def peak_markdown(peak: dict) -> str:
    lines = ["| op | float32 GFLOP/s | bfloat16 GFLOP/s |", "|---|---|---|"]
    for op in sorted({o for o, _ in peak}):
        cells = [f"{peak[(op, d)]:.0f}" if (op, d) in peak else "–" for d in ("float32", "bfloat16")]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def peak_dtype(precision: str) -> str | None:
    """The dtype of the peak benchmark a training row's precision is set against."""
    return "bfloat16" if "bfloat16" in precision else "float32" if precision == "float32" else None


def achieved(r: dict, peak: dict) -> str:
    """A training row's GFLOP/s and its fraction of the conv rate of its precision."""
    if not r.get("train_gflop_per_image"):
        return "–"
    gflop_s = r["img_s"] * r["train_gflop_per_image"]
    ref = peak.get(("conv3x3", peak_dtype(r["precision"])))
    return f"{gflop_s:.0f} ({gflop_s / ref:.0%})" if ref else f"{gflop_s:.0f}"


def markdown(rows_: list[dict], machine: dict, date: str, peak: dict | None = None) -> str:
    peak = peak or {}
    lines = [f"Measured {date} on {machine.get('device', '?')} with TensorFlow "
             f"{machine.get('tensorflow', '?')}; img/s over timed windows after a warm-up round. GFLOP/s: img/s "
             f"× the model's training FLOPs per image (bench/flops.py), and its fraction of this machine's "
             f"measured 3x3-convolution rate in the row's precision.", "",
             "| model | batch | setting | precision | XLA | steps/call | img/s | × Keras fit | × fit, same precision "
             "| × stock fit, same precision | GFLOP/s (of peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows_, key=lambda r: (r["model"], not is_fit(r), -r["img_s"])):
        base, same = baseline(rows_, r["model"]), baseline(rows_, r["model"], r["precision"])
        stock = baseline(rows_, r["model"], r["precision"], stock=True)
        ratio = f"{r['img_s'] / base:.2f}×" if base else "–"
        same_ratio = f"{r['img_s'] / same:.2f}×" if same else "–"
        stock_ratio = f"{r['img_s'] / stock:.2f}×" if stock else "–"
        spc = "–" if is_fit(r) else r["steps_per_call"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['config']} | {r['precision']} | "
                     f"{'on' if r['xla'] else 'off'} | {spc} | {r['img_s']:.1f} | {ratio} | {same_ratio} | "
                     f"{stock_ratio} | {achieved(r, peak)} |")
    return "\n".join(lines) + "\n"


def ablation_markdown(rows_: list[dict]) -> str:
    """For each group of rows labelled "... speedups": every row's img/s, how much slower it is than the
    group's fastest row, and the minutes the recipe's run (its images per run) would take at that rate."""
    out = []
    for label in sorted({r["model"] for r in rows_ if r["model"].endswith(" speedups")}):
        group = sorted((r for r in rows_ if r["model"] == label), key=lambda r: -r["img_s"])
        fastest = group[0]
        images = fastest.get("run_images")
        lines = [f"{label}: each speed-up switched off alone (batch {fastest['batch']})"
                 + (f"; minutes: the recipe's {images:,} training images at the row's rate" if images else ""),
                 "", "| setting | precision | XLA | img/s | fastest ÷ this row | minutes |", "|---|---|---|---|---|---|"]
        for r in group:
            minutes = f"{images / r['img_s'] / 60:.1f}" if images else "–"
            lines.append(f"| {r['config']} | {r['precision']} | {'on' if r['xla'] else 'off'} | {r['img_s']:.1f} | "
                         f"{fastest['img_s'] / r['img_s']:.2f}× | {minutes} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def input_rows(bench: dict) -> dict:
    """{model: img/s} of the input-pipeline benchmarks."""
    return {b["extra_info"]["model"]: b["extra_info"]["img_s"] for b in bench["benchmarks"]
            if b.get("extra_info", {}).get("kind") == "input" and "img_s" in b["extra_info"]}


def best_loop(rows_: list[dict], model: str, precision: str | None = None) -> dict | None:
    loops = [r for r in rows_ if r["model"] == model and not is_fit(r)
             and precision in (None, r["precision"])]
    return max(loops, key=lambda r: r["img_s"]) if loops else None


def input_markdown(inputs: dict, rows_: list[dict]) -> str:
    lines = ["| model | input pipeline img/s | fastest training step img/s | ratio |", "|---|---|---|---|"]
    for model, img_s in sorted(inputs.items()):
        step = best_loop(rows_, model)
        ratio = f"{img_s / step['img_s']:.1f}×" if step else "–"
        lines.append(f"| {model} | {img_s:.0f} | {step['img_s']:.1f} ({step['config']}) | {ratio} |" if step
                     else f"| {model} | {img_s:.0f} | – | – |")
    return "\n".join(lines) + "\n"


def goals(rows_: list[dict], inputs: dict, inf: dict, bench: dict | None = None) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for each goal of the benchmark issues that the data can answer."""
    out = []
    for b in (bench or {}).get("benchmarks", []):
        r = b.get("extra_info", {})
        if r.get("kind") == "feature_cache":
            out.append((f"{r['model']}: feature cache ≥ 20× seed fit over a {r['epochs']}-epoch run",
                        f"{r['speedup']:.1f}×", r["speedup"] >= 20))
    peak = peaks(bench or {})
    for model, prec in sorted({(r["model"], r["precision"]) for r in rows_ if is_fit(r) and not is_stock(r)}):
        base, best = baseline(rows_, model, prec), best_loop(rows_, model, prec)
        if base and best:  # like for like: the fastest loop row against fit in the same precision
            ratio = best["img_s"] / base
            out.append((f"{model}: our loop ≥ 1.3× Keras fit in {prec}",
                        f"{ratio:.2f}× ({best['config']}{_goal_against_peak(rows_, model, prec, 1.3, peak)})",
                        ratio >= 1.3))
    for model in sorted({m for m, _ in inf}):
        k, o = inf.get((model, "keras"), {}), inf.get((model, "onnxruntime"), {})
        if k.get("img_s") and o.get("img_s"):
            ratio = o["img_s"] / k["img_s"]
            out.append((f"{model}: ONNX Runtime ≥ 1.5× Keras at batch 256", f"{ratio:.2f}×", ratio >= 1.5))
        if k.get("p50_ms") and o.get("p50_ms"):
            ratio = k["p50_ms"] / o["p50_ms"]
            out.append((f"{model}: ONNX Runtime ≥ 1.5× Keras batch-1 latency (p50)", f"{ratio:.2f}×", ratio >= 1.5))
        out += _cpu_deploy_goals(inf, model, inference_rates(bench or {}))
    for model, img_s in sorted(inputs.items()):
        step = best_loop(rows_, model)
        if step:
            ratio = img_s / step["img_s"]
            out.append((f"{model}: input pipeline ≥ 5× the step's consumption", f"{ratio:.1f}×", ratio >= 5))
    return out


def _goal_against_peak(rows_: list[dict], model: str, prec: str, factor: float, peak: dict) -> str:
    """What `factor` × fit's rate would be as a fraction of this machine's conv rate in that precision:
    above 100%, no training loop can reach the goal on this machine."""
    fit = next((r for r in rows_ if r["model"] == model and r["precision"] == prec and is_fit(r)
                and not is_stock(r) and r.get("train_gflop_per_image")), None)
    ref = peak.get(("conv3x3", peak_dtype(prec)))
    if not fit or not ref:
        return ""
    need = factor * fit["img_s"] * fit["train_gflop_per_image"] / ref
    return f"; {factor:g}× fit would be {need:.0%} of the conv peak"


# CPU deployment goals, set for a CPU with AMX: the fastest runtime of each kind against Keras
CPU_DEPLOY_GOALS = [("bf16", "img_s", 5.0, "best bf16 runtime ≥ 5× Keras at batch 256"),
                    ("int8", "img_s", 8.0, "best int8 runtime ≥ 8× Keras at batch 256"),
                    ("", "p50_ms", 5.0, "best runtime ≥ 5× Keras in batch-1 p50 latency")]


def _cpu_deploy_goals(inf: dict, model: str, rates: dict | None = None) -> list[tuple[str, str, bool]]:
    keras_row, out = inf.get((model, "keras"), {}), []
    rates = rates or {}
    # whether the CPU the rows ran on has AMX; None where the rows do not record its features
    amx = devices.cpu_has_amx(keras_row["cpu_features"].split()) if "cpu_features" in keras_row else None
    for kind, key, bar, text in CPU_DEPLOY_GOALS:
        ratios = {b: (r[key] / keras_row[key] if key == "img_s" else keras_row[key] / r[key])
                  for (m, b), r in inf.items() if m == model and b != "keras" and (not kind or kind in b.split())
                  and r.get(key) and keras_row.get(key)}
        if ratios:
            best = max(ratios, key=ratios.get)
            where = "; this CPU has no AMX" if amx is False else ""
            out.append((f"{model}: {text} (on a CPU with AMX)",
                        f"{ratios[best]:.2f}× ({best}{where}{_deploy_goal_against_rate(keras_row, kind, bar, rates)})",
                        ratios[best] >= bar))
    return out


def _deploy_goal_against_rate(keras_row: dict, kind: str, bar: float, rates: dict) -> str:
    """What `bar` × Keras's batch-256 rate would be as a fraction of this CPU's measured inference rate
    in that precision: above 100%, no runtime can reach the goal on this CPU."""
    rate = rates.get(kind)
    if not kind or not rate or not keras_row.get("img_s") or not keras_row.get("gflop_per_image"):
        return ""
    need = bar * keras_row["img_s"] * keras_row["gflop_per_image"] / rate[0]
    return f"; {bar:g}× Keras would be {need:.0%} of this CPU's {kind} conv rate"


def inference_rates(bench: dict) -> dict:
    """{precision: (GFLOP/s, shape)}: the fastest OpenVINO convolution stack (bench/test_peak.py) of each
    precision the convolutions ran in (a bf16 hint that ran in f32 counts as f32)."""
    out: dict = {}
    for b in bench.get("benchmarks", []):
        info = b.get("extra_info", {})
        if info.get("kind") == "inference_peak" and "gflop_s" in info:
            ran = info["ran"]
            if ran not in out or info["gflop_s"] > out[ran][0]:
                out[ran] = (info["gflop_s"], info["shape"])
    return out


def inference_rates_markdown(rates: dict) -> str:
    lines = ["| precision | GFLOP/s | at (batch × height × width × channels) |", "|---|---|---|"]
    for prec in sorted(rates, key=lambda p: ["f32", "bf16", "int8"].index(p) if p in ("f32", "bf16", "int8") else 9):
        lines.append(f"| {prec} | {rates[prec][0]:.0f} | {rates[prec][1]} |")
    return "\n".join(lines) + "\n"


def goals_markdown(gs) -> str:
    lines = ["| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {'yes' if ok else '**no**'} |" for g, m, ok in gs]
    return "\n".join(lines) + "\n"


def cache_markdown(bench: dict) -> str:
    rows_ = [b["extra_info"] for b in bench["benchmarks"] if b.get("extra_info", {}).get("kind") == "feature_cache"]
    if not rows_:
        return ""
    lines = ["| model | batch | fit epoch s | cache: features once s | cache: head epoch s | "
             "from epoch 2 | whole run (epochs) |", "|---|---|---|---|---|---|---|"]
    for r in rows_:
        lines.append(f"| {r['model']} | {r['batch']} | {r['fit_epoch_s']:.0f} | "
                     f"{r['cache_run_s'] - r['epochs'] * r['head_epoch_s']:.0f} | {r['head_epoch_s']:.1f} | "
                     f"{r['epoch2_speedup']:.0f}× | {r['speedup']:.1f}× ({r['epochs']}) |")
    return ("Feature cache against seed-style `model.fit` (projected to "
            f"{rows_[0]['train_images']} training images):\n\n" + "\n".join(lines) + "\n")


def inference_rows(bench: dict) -> dict:
    """{(model, backend): {p50_ms, p90_ms, p99_ms, img_s}} from the inference benchmarks."""
    out: dict = {}
    for b in bench["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("kind") != "inference":
            continue
        row = out.setdefault((info["model"], info["backend"]), {})
        row.update({k: info[k] for k in ("p50_ms", "p90_ms", "p99_ms", "img_s", "cpu_features", "compute",
                                         "gflop_per_image") if k in info})
    return out


def inference_achieved(r: dict, rates: dict) -> str:
    """A batch-256 row's GFLOP/s and its fraction of this CPU's rate in the precision it computes in."""
    if not r.get("img_s") or not r.get("gflop_per_image"):
        return "–"
    gflop_s = r["img_s"] * r["gflop_per_image"]
    rate = rates.get(r.get("compute"))
    return f"{gflop_s:.0f} ({gflop_s / rate[0]:.0%} of {r['compute']})" if rate else f"{gflop_s:.0f}"


def inference_markdown(rows_: dict, rates: dict | None = None) -> str:
    rates = rates or {}
    lines = ["| model | backend | batch 1 p50 ms | p90 ms | p99 ms | batch 256 img/s | "
             "× Keras (p50 latency) | × Keras (batch 256) | batch 256 GFLOP/s (of rate) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, spec, unit=""):
        return format(v, spec) + unit if v is not None else "–"
    for (model, backend), r in sorted(rows_.items()):
        base = rows_.get((model, "keras"), {})
        lat = base.get("p50_ms") / r["p50_ms"] if base.get("p50_ms") and r.get("p50_ms") else None
        thr = r["img_s"] / base["img_s"] if base.get("img_s") and r.get("img_s") else None
        lines.append(f"| {model} | {backend} | {fmt(r.get('p50_ms'), '.2f')} | {fmt(r.get('p90_ms'), '.2f')} | "
                     f"{fmt(r.get('p99_ms'), '.2f')} | {fmt(r.get('img_s'), '.0f')} | "
                     f"{fmt(lat, '.2f', '×')} | {fmt(thr, '.2f', '×')} | {inference_achieved(r, rates)} |")
    return "\n".join(lines) + "\n"


def inference_chart(rows_: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({m for m, _ in rows_})
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 6), squeeze=False)
    for col, model in enumerate(models):
        backends = sorted(b for m, b in rows_ if m == model)
        for row, (key, label) in enumerate([("p50_ms", "batch-1 latency p50 (ms, lower is better)"),
                                            ("img_s", "batch-256 img/s (higher is better)")]):
            ax = axes[row][col]
            vals = [(b, rows_[(model, b)].get(key)) for b in backends]
            vals = [(b, v) for b, v in vals if v is not None]
            if not vals:
                ax.set_axis_off()
                continue
            bars = ax.barh([b for b, _ in vals], [v for _, v in vals],
                           color=["#999" if b == "keras" else "#37a" for b, _ in vals])
            for bar, (_, v) in zip(bars, vals):
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.3g}", va="center")
            ax.set_title(f"{model}: {label}", fontsize=9)
            ax.set_xlim(0, max(v for _, v in vals) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def chart(rows_: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in rows_})
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = sorted((r for r in rows_ if r["model"] == model), key=lambda r: r["img_s"])
        base = baseline(rows_, model)
        bars = ax.barh([r["config"] for r in rs], [r["img_s"] for r in rs],
                       color=["#999" if is_fit(r) else "#3a7" for r in rs])
        for bar, r in zip(bars, rs):
            label = f"{r['img_s']:.0f}" + (f"  ({r['img_s'] / base:.2f}×)" if base else "")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label, va="center")
        ax.set_xlabel("training images / second")
        ax.set_title(f"{model}, batch {rs[0]['batch']}")
        ax.set_xlim(0, max(r["img_s"] for r in rs) * 1.35)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    p.add_argument("bench_json")
    p.add_argument("--out", default=".", help="directory for report.md and train_throughput.png")
    a = p.parse_args(argv)
    try:
        with open(a.bench_json) as f:
            bench = json.load(f)
    except (OSError, ValueError) as e:
        print(f"error: cannot read {a.bench_json}: {e}", file=sys.stderr)
        return 2
    rs, inf, inputs = rows(bench), inference_rows(bench), input_rows(bench)
    rates = inference_rates(bench)
    if not rs and not inf and not inputs and not cache_markdown(bench) and not peaks(bench) and not rates:
        print(f"error: {a.bench_json} holds no throughput benchmarks", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    parts = []
    gs = goals(rs, inputs, inf, bench)
    if gs:
        parts.append("Goals (measured, not asserted):\n\n" + goals_markdown(gs))
    cache = cache_markdown(bench)
    peak = peaks(bench)
    if peak:
        parts.append("This machine's achievable rates through TensorFlow (bench/test_peak.py):\n\n" + peak_markdown(peak))
    if rates:
        parts.append("This machine's inference rates through OpenVINO (bench/test_peak.py: the fastest stack of 3x3 "
                     "convolutions of each precision):\n\n" + inference_rates_markdown(rates))
    if rs:
        parts.append(markdown(rs, rs[0], bench.get("datetime", "")[:10], peak))
        chart(rs, os.path.join(a.out, "train_throughput.png"))
    ablation = ablation_markdown(rs)
    if ablation:
        parts.append(ablation)
    if cache:
        parts.append(cache)
    if inputs:
        parts.append("Input pipeline (tf.data + the step's device preprocessing, no model) against the "
                     "fastest training step of the same model and batch:\n\n" + input_markdown(inputs, rs))
    if inf:
        info = next(b["extra_info"] for b in bench["benchmarks"] if b.get("extra_info", {}).get("kind") == "inference")
        parts.append(f"Inference, measured {bench.get('datetime', '')[:10]} on {info.get('device', '?')} "
                     f"(CPU features: {info.get('cpu_features', '?')}), TensorFlow {info.get('tensorflow', '?')}, "
                     f"onnxruntime {info.get('onnxruntime', '?')}, OpenVINO {info.get('openvino', '?')}; "
                     f"same exported graph (uint8 in, logits out), fp32 unless the backend says. GFLOP/s: batch-256 img/s "
                     f"× the model's forward FLOPs per image, and its fraction of this machine's inference rate in "
                     f"the precision the row computes in:\n\n" + inference_markdown(inf, rates))
        inference_chart(inf, os.path.join(a.out, "inference.png"))
    md = "\n".join(parts)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
