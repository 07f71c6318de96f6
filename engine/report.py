"""`engine report RUN [RUN ...]`: one table of runs' final metrics, the mean ± std over runs that
differ only by seed, and the config fields that differ between runs.

    engine report runs/airbench-s0 runs/airbench-s1 runs/airbench-s2
"""
from __future__ import annotations

import json
import math
import statistics

from engine import layout
from engine.cli import Parser
from engine.errors import cli

COLUMNS = [("test top-1", "test_accuracy", "{:.4f}"), ("TTA", "test_accuracy_tta", "{:.4f}"),
           ("best epoch", "best_epoch", "{}"), ("img/s", "train_img_s", "{:,.0f}"),
           ("train min", "train_seconds", "{:.1f}"), ("train PFLOPs", "flops.training_flops", "{:.4f}"),
           ("eval PFLOPs", "flops.evaluation_flops", "{:.4f}"), ("precision", "policy", "{}"), ("xla", "xla", "{}"),
           ("device", "device", "{}")]
SCALE = {"train_seconds": 1 / 60, "flops.training_flops": 1e-15, "flops.evaluation_flops": 1e-15}
PER_LAUNCH = {"run.out", "run.seed", "run.resume", "run.overwrite", "run.quiet"}  # not the experiment


def load(run: str) -> dict:
    metrics = layout.read_metrics(run)
    config = layout.read_object(layout.run_file(run, layout.CONFIG_FILE))
    flat = {f"{s}.{k}": v for s, fields in config.items() if isinstance(fields, dict) for k, v in fields.items()}
    return {"run": run, "metrics": metrics, "config": flat}


def _cell(metrics: layout.Metrics, key: str, fmt: str) -> str:
    """A metric as its column shows it; "-" where it is missing, "unreadable" where it is of the wrong type."""
    value = _value(metrics, key)
    if value is None:
        return "-"
    if fmt != "{}" and not _finite(value):
        return "unreadable" if not isinstance(value, float) else str(value)
    return fmt.format(value * SCALE[key] if key in SCALE else value)


def _value(metrics: layout.Metrics, key: str):
    """metrics' field `key`, or "a.b": field a's item b (None where a is missing; "unreadable" where it is no object)."""
    name, _, item = key.partition(".")
    value = getattr(metrics, name)
    if not item or value is None:
        return value
    return value.get(item) if isinstance(value, dict) else "unreadable"


def _scaled(metrics: layout.Metrics, key: str):
    value = _value(metrics, key)
    return value * SCALE[key] if _finite(value) else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def differing(runs: list) -> dict:
    """{field: [value per run]} for the config fields whose values differ between runs."""
    keys = sorted({k for r in runs for k in r["config"]})
    return {k: [r["config"].get(k) for r in runs] for k in keys if len({json.dumps(r["config"].get(k)) for r in runs}) > 1}


def seed_groups(runs: list) -> list:
    """Runs whose configs are equal but for the per-launch fields (the seed among them), grouped."""
    groups = {}
    for r in runs:
        key = json.dumps({k: v for k, v in r["config"].items() if k not in PER_LAUNCH}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def _mean_std(values: list) -> str:
    values = [v for v in values if _finite(v)]  # a missing, damaged or non-finite value is left out
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def table(runs: list) -> str:
    header = ["run", *[c[0] for c in COLUMNS]]
    rows = [[r["run"], *[_cell(r["metrics"], key, fmt) for _, key, fmt in COLUMNS]] for r in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    for group in seed_groups(runs):
        if len(group) > 1:
            seeds = ", ".join(str(r["config"].get("run.seed")) for r in group)
            lines.append(f"\nseeds {seeds} ({len(group)} runs): test top-1 "
                         f"{_mean_std([r['metrics'].test_accuracy for r in group])}, TTA "
                         f"{_mean_std([r['metrics'].test_accuracy_tta for r in group])}, training PFLOPs "
                         f"{_mean_std([_scaled(r['metrics'], 'flops.training_flops') for r in group])}")
    diff = {k: v for k, v in differing(runs).items() if k not in ("run.out", "run.quiet")}
    if diff:
        lines.append("\nconfig fields that differ: " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in diff.items()))
    return "\n".join(lines)


@cli
def main(argv=None):
    p = Parser(prog="engine report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--json", action="store_true", help="print the runs' metrics and differing fields as JSON")
    a = p.parse_args(argv)
    runs = [load(r) for r in a.runs]
    if a.json:
        print(json.dumps({"runs": [{"run": r["run"], **r["metrics"].to_dict()} for r in runs], "differ": differing(runs)},
                         indent=2))
    else:
        print(table(runs))


if __name__ == "__main__":
    main()
