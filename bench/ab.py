"""A/B of a training step: the engine's step (A) against the same step with training-step rewrites
undone (B, engine.models.cpu_step's `Changes.undo`) or with the matmul weight gradient limited to
smaller maps, alternating A, B, A, B in one process so that both see the same machine state.

    python -m bench.ab MODEL --undo fused-bn [--batch 1024 --steps 10 --rounds 3 --precisions fp32,bf16]
    python -m bench.ab resnet9 --matmul-dw-max-map 49 --batch 512 --precisions bf16

KINDS: fused-bn, compiled-gelu, matmul-dw (comma-separated: several at once). Each row is `--rounds`
timed calls of `--steps` steps after a warm-up call (tracing), img/s = images / time; it also says how
many layers B undid (0 where this machine never had that rewrite: matmul-dw needs AVX-512 BF16 without
AMX). The data: --data, default $ENGINE_DATA (as `engine train --data`). The JSON (--out, default
ab-MODEL.json) holds the command, the engine commit, the machine and the rows. ENGINE_BENCH_QUICK=1
(or --quick): the tiny model on digits, one short row per arm, to prove the tool runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"


def parse(argv):
    from engine.models.cpu_step import CPU_KINDS
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="tiny")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--undo", type=lambda s: s.split(","), metavar="KIND[,KIND]",
                   help=f"B undoes these rewrites ({', '.join(CPU_KINDS)})")
    b.add_argument("--matmul-dw-max-map", type=int, metavar="PIXELS",
                   help="B: the matmul weight gradient only on maps of at most PIXELS (H*W)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10, help="steps per timed call")
    p.add_argument("--rounds", type=int, default=3, help="timed calls per row, after a warm-up call")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both")
    p.add_argument("--data", default=os.environ.get("ENGINE_DATA", "cifar10"))
    p.add_argument("--out", help="the JSON (default: ab-MODEL.json)")
    p.add_argument("--quick", action="store_true", default=QUICK, help="a few seconds: proves the tool runs")
    a = p.parse_args(argv)
    if not (a.undo or a.matmul_dw_max_map):
        p.error("give B: --undo KIND or --matmul-dw-max-map PIXELS")
    if a.undo and set(a.undo) - set(CPU_KINDS):
        p.error(f"--undo: unknown {','.join(sorted(set(a.undo) - set(CPU_KINDS)))}; choose from {', '.join(CPU_KINDS)}")
    if set(a.precisions.split(",")) - {"fp32", "bf16"}:
        p.error("--precisions: fp32, bf16 or fp32,bf16")
    return a


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse(argv)
    if a.quick:
        a.model, a.batch, a.steps, a.rounds, a.data, a.precisions = "tiny", 16, 2, 1, "digits", "fp32"
    import keras
    import tensorflow as tf

    from bench.conftest import provenance
    from engine import data
    from engine.config import default_cache_dir
    from engine.data.pipeline import Pipeline
    from engine.models import cpu_step
    from engine.train import precision
    from engine.train.build import build_training
    from engine.train.resolve import defaults

    splits = data.load(a.data, default_cache_dir(), log=lambda *_, **__: None)
    x, y, _, _ = data.balanced_subset(splits.x_train, splits.y_train, a.batch * (a.steps + 4), seed=0)
    b_arm = f"undo {','.join(a.undo)}" if a.undo else f"matmul-dw max map {a.matmul_dw_max_map}"
    arms = ("A", "B") if a.quick else ("A", "B", "A", "B")
    rows = []
    engine_max_map = cpu_step.MATMUL_DW_MAX_MAP
    try:
        for amp in [p == "bf16" for p in a.precisions.split(",")]:
            for arm in arms:
                keras.utils.set_random_seed(0)
                policy = precision.apply(amp)
                cfg = defaults(a.model).replace("model", weights="none", feature_cache=False)
                cfg = cfg.replace("optim", batch_size=a.batch, lr=0.05, schedule="constant").replace(
                    "run", xla=False, amp=amp, steps_per_call=10)
                # read when the step is traced, which is below
                cpu_step.MATMUL_DW_MAX_MAP = a.matmul_dw_max_map if arm == "B" and a.matmul_dw_max_map \
                    else engine_max_map
                training = build_training(cfg, splits.num_classes, len(x), policy)
                kinds = training.step_changes.kinds
                undone = training.step_changes.undo(a.undo) if arm == "B" and a.undo else 0
                it = iter(Pipeline(x, y).train(a.batch, seed=0, epoch=0).repeat())
                times = []
                for _ in range(a.rounds + 1):
                    t0 = time.perf_counter()
                    float(training.loop.train_calls(it, tf.constant(a.steps, tf.int32))[0])
                    times.append(time.perf_counter() - t0)
                img_s = a.steps * a.batch * a.rounds / sum(times[1:])
                row = dict(model=a.model, batch=a.batch, precision=policy, arm=arm,
                           step=b_arm if arm == "B" else "engine", rewrites=list(kinds), layers_undone=undone,
                           img_s=round(img_s, 1), round_s=[round(t, 2) for t in times[1:]])
                print(json.dumps(row), flush=True)
                rows.append(row)
                keras.mixed_precision.set_global_policy("float32")
    finally:
        cpu_step.MATMUL_DW_MAX_MAP = engine_max_map
        keras.mixed_precision.set_global_policy("float32")
    result = dict(provenance("bench.ab", argv), rows=rows)
    with open(a.out or f"ab-{a.model}.json", "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
