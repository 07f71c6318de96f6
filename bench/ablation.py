"""An ablation sitting: several arms (sets of `engine train` flags), each over the same seeds, run
interleaved on one machine (seed 0 of every arm, then seed 1 of every arm, ...), so that a drift of the
machine during the sitting falls on every arm alike and a sitting cut short still has as many seeds of
each arm.

    python -m bench.ablation run OUT ARMS [--seeds 0 1 2 3 4] [--common "--amp on --xla off"]
    python -m bench.ablation summary OUT [OUT ...] [--baseline NAME]   (OUT: a sitting, or its files in bench/results)

ARMS is a text file of lines `NAME: FLAGS` (`#` starts a comment); the first arm is the baseline the
others are compared with. `run` writes OUT/machine.txt, OUT/arms.txt (each arm's whole command),
OUT/NAME-seed-S/ (the run) and OUT/NAME-seed-S.log, and skips a run whose metrics.json exists, so that a
sitting stopped part way is continued by the same command. ENGINE_DATA must name the data.

`summary` prints one row per arm: the seeds run, the mean and standard deviation of the test accuracy
(plain and with TTA), the difference of the TTA mean to the baseline's with a 95% interval (Welch's t),
the training and evaluation FLOPs from metrics.json and their ratio to the baseline's, and the mean
training time (training steps plus the first call, as in bench.reference.summary) and its ratio.
Given several folders (e.g. a new arm's sitting and an earlier sitting's baseline on the same machine),
it tables their arms together; an arm's seed found in more than one is taken from the first folder.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from bench import machine
from bench.reference.summary import engine_run

ROW = re.compile(r"^([A-Za-z0-9_.+-]+)\s*:\s*(.*)$")


def read_arms(path: str) -> list[tuple[str, str]]:
    arms = []
    for n, line in enumerate(open(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = ROW.match(line)
        if not m:
            raise ValueError(f"{path}:{n}: not 'NAME: FLAGS'")
        if any(name == m.group(1) for name, _ in arms):
            raise ValueError(f"{path}:{n}: arm {m.group(1)!r} named twice")
        arms.append((m.group(1), m.group(2).strip()))
    if not arms:
        raise ValueError(f"{path}: no arms")
    return arms


def run(out: str, arms: list[tuple[str, str]], seeds: list[int], common: str) -> None:
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "machine.txt")):
        with open(os.path.join(out, "machine.txt"), "w") as f:
            f.write(machine.describe())
    with open(os.path.join(out, "arms.txt"), "w") as f:
        for name, flags in arms:
            f.write(f"{name}: engine train {common} {flags} --seed S --out {name}-seed-S\n")
    for seed in seeds:
        for name, flags in arms:
            run_dir = os.path.join(out, f"{name}-seed-{seed}")
            if os.path.exists(os.path.join(run_dir, "metrics.json")):
                continue
            if os.path.exists(run_dir):  # a run cut short: its own directory, kept, and run again beside it
                os.rename(run_dir, f"{run_dir}.cut-{int(time.time())}")
            cmd = [sys.executable, "-m", "engine.train", *shlex.split(common), *shlex.split(flags),
                   "--seed", str(seed), "--out", run_dir]
            print(f"{time.strftime('%H:%M:%S')} {name} seed {seed}", flush=True)
            with open(f"{run_dir}.log", "w") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)


def collect(out: str) -> dict[str, dict[int, dict]]:
    """{arm: {seed: row}} of OUT's NAME-seed-S/metrics.json (a sitting) or NAME-seed-S-metrics.json (its files
    kept in bench/results)."""
    arms: dict[str, dict[int, dict]] = {}
    paths = glob.glob(os.path.join(out, "*-seed-*", "metrics.json")) + glob.glob(os.path.join(out, "*-seed-*-metrics.json"))
    for path in paths:
        name = os.path.basename(os.path.dirname(path)) if path.endswith("/metrics.json") else \
            os.path.basename(path)[:-len("-metrics.json")]
        m = re.fullmatch(r"(.+)-seed-(\d+)", name)
        if not m:
            continue
        row = engine_run(path)
        if not row["training"]:  # a finished run tested again (--resume after its last step): no training timed
            row["training"] = None
        flops = json.load(open(path)).get("flops") or {}
        row["train_flops"], row["eval_flops"] = flops.get("training_flops"), flops.get("evaluation_flops")
        arms.setdefault(m.group(1), {})[int(m.group(2))] = row
    return arms


def _interval(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) and its 95% interval (Welch's t), or None with fewer than 2 of each."""
    from scipy import stats
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    se = (va + vb) ** 0.5
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = stats.t.ppf(0.975, df) * se
    return diff, diff - h, diff + h


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    sd = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.2f}%{sd}"


def table(arms: dict[str, dict[int, dict]], order: list[str], baseline: str) -> str:
    base = arms.get(baseline, {})

    def mean(rows, key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.mean(values) if values else None

    def ratio(x, y):
        return f" ({x / y:.2f}x)" if x is not None and y else ""

    b_train, b_eval = mean(base.values(), "train_flops"), mean(base.values(), "eval_flops")
    b_time = mean(base.values(), "training")
    lines = ["| arm | seeds | test top-1 | with TTA | TTA − baseline (95% interval) | training PFLOPs | "
             "evaluation PFLOPs | training time |", "|---|---|---|---|---|---|---|---|"]
    for name in order:
        rows = [arms[name][s] for s in sorted(arms.get(name, {}))]
        if not rows:
            continue
        tta = [r["tta"] for r in rows if r["tta"] is not None]
        diff = _interval(tta, [r["tta"] for r in base.values() if r["tta"] is not None])
        d = "–" if name == baseline or diff is None else \
            f"{100 * diff[0]:+.2f} ({100 * diff[1]:+.2f} to {100 * diff[2]:+.2f})"
        tr, ev, t = mean(rows, "train_flops"), mean(rows, "eval_flops"), mean(rows, "training")
        pf = (lambda x: "–" if x is None else f"{x / 1e15:.4f}")
        lines.append(f"| {name} | {','.join(map(str, sorted(arms[name])))} | {_ms([r['top1'] for r in rows])} | "
                     f"{_ms(tta)} | {d} | {pf(tr)}{ratio(tr, b_train)} | {pf(ev)}{ratio(ev, b_eval)} | "
                     f"{'–' if t is None else f'{t:,.1f} s'}{ratio(t, b_time)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("arms")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r.add_argument("--common", default="--amp on --xla off", help="flags given to every arm")
    s = sub.add_parser("summary")
    s.add_argument("out", nargs="+", help="a sitting's folder; several: their arms together (an arm's seed found in "
                   "more than one is taken from the first)")
    s.add_argument("--baseline", help="the arm the others are compared with (default: arms.txt's first)")
    a = p.parse_args(argv)
    try:
        if a.command == "run":
            if not os.environ.get("ENGINE_DATA"):
                raise ValueError("set ENGINE_DATA to the data (as for engine train --data)")
            run(a.out, read_arms(a.arms), a.seeds, a.common)
            a.baseline = None
        folders = [a.out] if a.command == "run" else a.out
        arms, order = {}, []
        for folder in folders:  # an arm's seed found in an earlier folder is taken from there
            for name, runs in collect(folder).items():
                for seed, row in runs.items():
                    arms.setdefault(name, {}).setdefault(seed, row)
            if os.path.exists(os.path.join(folder, "arms.txt")):
                order += [name for name, _ in read_arms(os.path.join(folder, "arms.txt")) if name not in order]
        order += [n for n in sorted(arms) if n not in order]
        order = [n for n in order if n in arms]
        if not arms:
            raise ValueError(f"{', '.join(folders)}: no NAME-seed-S/metrics.json")
        print(table(arms, order, a.baseline or order[0]))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
