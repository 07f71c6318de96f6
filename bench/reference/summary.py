"""The side-by-side table of a sitting: the reference airbench94's runs against the engine's runs.

    python -m bench.reference.summary DIR

DIR holds what `sitting.sh` writes: `reference-seed-N.log` (the adapted script's output, with
`/usr/bin/time -v` at its end) and `seed-N/metrics.json` (engine runs; `seed-N-metrics.json` is read
too). Training time counts every training step on both sides: the reference's "whitening + training"
timer, and the engine's training steps plus its first call (tracing, compilation and its first
`--steps-per-call` steps), which its `train_seconds` leaves out.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys

from engine.layout import Metrics
from engine.train import clock

TIMER = re.compile(r"timer: whitening \+ training ([\d.]+) s, per-epoch evaluation ([\d.]+) s, TTA ([\d.]+) s")
EVAL_ROW = re.compile(r"^\|\s*\|\s*eval\s*\|" + r"\s*([\d.]+)\s*\|" * 5)
ELAPSED = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")


def reference_run(path: str) -> dict:
    """top1, tta, training, eval, tta_seconds, wall (None where the log lacks it) of one reference log."""
    text = open(path, errors="replace").read()
    timer = TIMER.search(text)
    if not timer:
        raise ValueError(f"{path}: no 'timer:' line (did the run finish?)")
    row = next((m for m in map(EVAL_ROW.match, text.splitlines()) if m), None)
    elapsed = ELAPSED.search(text)
    wall = None
    if elapsed:
        h, m, s = elapsed.groups()
        wall = int(h or 0) * 3600 + int(m) * 60 + float(s)
    return dict(top1=float(row.group(3)) if row else None, tta=float(row.group(4)) if row else None,
                training=float(timer.group(1)), eval=float(timer.group(2)), tta_seconds=float(timer.group(3)),
                wall=wall)


def engine_run(path: str) -> dict:
    with open(path) as f:
        m = Metrics.from_dict(json.load(f))
    try:
        return _engine_row(m)
    except KeyError as e:
        raise ValueError(f"{path}: no {e} (not the metrics.json of an engine run)") from None


def _engine_row(m: Metrics) -> dict:
    for key in ("test_accuracy", "wall_seconds", "wall_breakdown"):
        if getattr(m, key) is None:
            raise KeyError(key)
    wall = m.wall_breakdown
    return dict(top1=m.test_accuracy, tta=m.test_accuracy_tta,
                training=wall[clock.TRAINING] + wall.get(clock.FIRST_CALL, 0.0),
                eval=wall.get(clock.EVALUATION, 0.0), tta_seconds=wall.get(clock.TTA, 0.0),
                wall=m.wall_seconds, policy=m.policy, xla=m.xla)


def _seed(path: str) -> int:
    return int(re.search(r"seed-(\d+)", path).group(1))


def collect(directory: str) -> tuple[dict, dict]:
    def seed(path):  # from the name inside `directory`, whatever the directory is called
        return _seed(os.path.relpath(path, directory))
    refs = {seed(p): reference_run(p) for p in glob.glob(os.path.join(directory, "reference-seed-*.log"))}
    paths = glob.glob(os.path.join(directory, "seed-*", "metrics.json")) + \
        glob.glob(os.path.join(directory, "seed-*-metrics.json"))
    runs = {seed(p): engine_run(p) for p in paths}
    return refs, runs


def _pct(x):
    return "–" if x is None else f"{100 * x:.2f}%"


def _s(x):
    return "–" if x is None else f"{x:,.1f} s"


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def table(refs: dict, runs: dict) -> str:
    lines = ["| run | test top-1, last epoch | with TTA | training | per-epoch evaluation | TTA | whole process |",
             "|---|---|---|---|---|---|---|"]
    for name, group in (("reference airbench94", refs), ("engine", runs)):
        for seed, r in sorted(group.items()):
            setting = f" ({r['policy']}{', XLA' if r.get('xla') else ''})" if r.get("policy") else ""
            lines.append(f"| {name}{setting}, seed {seed} | {_pct(r['top1'])} | {_pct(r['tta'])} | "
                         f"{_s(r['training'])} | {_s(r['eval'])} | {_s(r['tta_seconds'])} | {_s(r['wall'])} |")
        if len(group) > 1:
            lines.append(f"| **{name}, mean of {len(group)}** | {_pct(_mean(r['top1'] for r in group.values()))} | "
                         f"**{_pct(_mean(r['tta'] for r in group.values()))}** | "
                         f"**{_s(_mean(r['training'] for r in group.values()))}** | | | |")
    if refs and runs:
        ratio = _mean(r["training"] for r in runs.values()) / _mean(r["training"] for r in refs.values())
        lines.append("")
        lines.append(f"The engine's mean training time is {ratio:.2f}x the reference's "
                     f"({len(runs)} engine run(s), {len(refs)} reference run(s)).")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reference.summary", description=__doc__.splitlines()[0])
    p.add_argument("dir")
    a = p.parse_args(argv)
    try:
        refs, runs = collect(a.dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not refs and not runs:
        print(f"error: {a.dir}: no reference-seed-N.log or seed-N/metrics.json", file=sys.stderr)
        return 2
    print(table(refs, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
