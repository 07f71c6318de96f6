"""`python -m bench.report BENCH.json [--out DIR]`: a markdown table and a bar chart of the
training-throughput benchmarks, each row with its ratio to Keras `model.fit` on the same model."""
from __future__ import annotations

import argparse
import json
import os
import sys


def rows(bench: dict) -> list[dict]:
    out = []
    for b in bench["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("kind", "train") != "train" or "img_s" not in info or "config" not in info:
            continue
        out.append({**info, "rounds": b["stats"]["rounds"]})
    return out


def baseline(rows_: list[dict], model: str) -> float | None:
    for r in rows_:
        if r["model"] == model and r["config"] == "keras fit":
            return r["img_s"]
    return None


def markdown(rows_: list[dict], machine: dict, date: str) -> str:
    lines = [f"Measured {date} on {machine.get('device', '?')} with TensorFlow "
             f"{machine.get('tensorflow', '?')}; img/s over timed windows after a warm-up round.", "",
             "| model | batch | setting | precision | XLA | steps/call | img/s | × Keras fit |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows_, key=lambda r: (r["model"], r["config"] != "keras fit", -r["img_s"])):
        base = baseline(rows_, r["model"])
        ratio = f"{r['img_s'] / base:.2f}×" if base else "–"
        spc = "–" if r["config"] == "keras fit" else r["steps_per_call"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['config']} | {r['precision']} | "
                     f"{'on' if r['xla'] else 'off'} | {spc} | {r['img_s']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def inference_rows(bench: dict) -> dict:
    """{(model, backend): {p50_ms, p90_ms, p99_ms, img_s}} from the inference benchmarks."""
    out: dict = {}
    for b in bench["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("kind") != "inference":
            continue
        row = out.setdefault((info["model"], info["backend"]), {})
        row.update({k: info[k] for k in ("p50_ms", "p90_ms", "p99_ms", "img_s") if k in info})
    return out


def inference_markdown(rows_: dict) -> str:
    lines = ["| model | backend | batch 1 p50 ms | p90 ms | p99 ms | batch 256 img/s | "
             "× Keras (p50 latency) | × Keras (batch 256) |", "|---|---|---|---|---|---|---|---|"]

    def fmt(v, spec):
        return format(v, spec) if v is not None else "–"
    for (model, backend), r in sorted(rows_.items()):
        base = rows_.get((model, "keras"), {})
        lat = base.get("p50_ms") / r["p50_ms"] if base.get("p50_ms") and r.get("p50_ms") else None
        thr = r["img_s"] / base["img_s"] if base.get("img_s") and r.get("img_s") else None
        lines.append(f"| {model} | {backend} | {fmt(r.get('p50_ms'), '.2f')} | {fmt(r.get('p90_ms'), '.2f')} | "
                     f"{fmt(r.get('p99_ms'), '.2f')} | {fmt(r.get('img_s'), '.0f')} | "
                     f"{fmt(lat, '.2f')}× | {fmt(thr, '.2f')}× |")
    return "\n".join(lines) + "\n"


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
                       color=["#999" if r["config"] == "keras fit" else "#3a7" for r in rs])
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
    rs, inf = rows(bench), inference_rows(bench)
    if not rs and not inf:
        print(f"error: {a.bench_json} holds no throughput benchmarks", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    parts = []
    if rs:
        parts.append(markdown(rs, rs[0], bench.get("datetime", "")[:10]))
        chart(rs, os.path.join(a.out, "train_throughput.png"))
    if inf:
        info = next(b["extra_info"] for b in bench["benchmarks"] if b.get("extra_info", {}).get("kind") == "inference")
        parts.append(f"Inference, measured {bench.get('datetime', '')[:10]} on {info.get('device', '?')}, "
                     f"TensorFlow {info.get('tensorflow', '?')}, onnxruntime {info.get('onnxruntime', '?')}; "
                     f"same exported graph (uint8 in, logits out), fp32 unless the backend says:\n\n" + inference_markdown(inf))
    md = "\n".join(parts)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
