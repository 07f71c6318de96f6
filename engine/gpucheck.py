"""`python -m engine.gpucheck`: every GPU path of the engine, run on this machine's GPU, one line each.

    PASS  kernel placement      every op of the train and eval steps has a GPU kernel (8 models)
    PASS  --amp --xla           1 epoch of tiny: 4,210 img/s, loss 2.03, policy mixed_bfloat16
    ...

Paths: the kernel-placement check (every (op, dtype) of every model's traced train and eval step
has a GPU kernel in this TensorFlow build); one epoch of tiny with `--amp --xla`, with `--amp`
alone and with `--strategy mirrored`; `engine.launch --workers 2` where two GPUs exist; TensorRT
engines in fp32, fp16 and int8 from that run, each compared with TensorFlow on the test images.
Data: scikit-learn's digits (ships with it: no download). About 5 minutes on one GPU. Exit status 0
if every path passed, 1 if any failed, 77 (skipped) on a machine without a GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from engine.cli import Parser, import_tensorflow_quietly
from engine.errors import cli

EXIT_SKIPPED = 77
TRAIN = ["--model", "tiny", "--data", "digits", "--epochs", "1", "--batch-size", "64", "--quiet"]
# Agreement with TensorFlow a TensorRT engine must keep on the digits test images: top-1, max |dlogit|.
TRT_BARS = {"fp32": (0.999, 1e-2), "fp16": (0.99, 0.1), "int8": (0.97, None)}


def missing_gpu_kernels(model: str, policy: str = "mixed_float16") -> dict:
    """{(op, dtypes): count} of the ops in `model`'s traced train step (with its recipe's
    augmentation) and TTA eval step that have no GPU kernel in this TensorFlow build's registry."""
    import keras
    import tensorflow as tf

    from engine.train import resolve
    from engine.train.build import build_training
    keras.mixed_precision.set_global_policy(policy)
    try:
        cfg = resolve.defaults(model).replace("model", weights="none", feature_cache=False, tta=2)
        cfg = cfg.replace("model", crop_pad=cfg.model.crop_pad or 2, flip="alternate" if cfg.model.flip == "none"
                          else cfg.model.flip).replace("optim", batch_size=8)
        loop = build_training(cfg, 10, 64, policy).loop
        images = tf.TensorSpec([8, 32, 32, 3], tf.uint8)
        train = loop._step_fn.get_concrete_function(images, tf.TensorSpec([8], tf.int32), tf.TensorSpec([8], tf.int32),
                                                    tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int64))
        evaluate = tf.function(lambda x, y: loop._eval_step(x, y, 2)).get_concrete_function(
            images, tf.TensorSpec([8], tf.int32))
        return _missing(train.graph.as_graph_def()) | _missing(evaluate.graph.as_graph_def())
    finally:
        keras.mixed_precision.set_global_policy("float32")


_STRUCTURAL = {"Placeholder", "NoOp", "Identity", "Const", "_Arg", "_Retval", "StatefulPartitionedCall",
               "PartitionedCall", "If", "StatelessIf", "While", "StatelessWhile", "IdentityN"}


def _missing(graph_def) -> dict:
    import tensorflow as tf
    from tensorflow.python.framework import kernels
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    cache, out = {}, {}
    for n in nodes:
        if n.op in _STRUCTURAL:
            continue
        if n.op not in cache:
            cache[n.op] = [{c.name: {t for t in c.allowed_values.list.type} for c in k.constraint}
                           for k in kernels.get_registered_kernels_for_op(n.op).kernel
                           if k.device_type in ("GPU", "DEFAULT")]
        attrs = {k: v.type for k, v in n.attr.items() if v.HasField("type")}
        if not any(all(attrs[name] in allowed for name, allowed in c.items() if name in attrs) for c in cache[n.op]):
            key = (n.op, tuple(sorted((k, tf.dtypes.as_dtype(v).name) for k, v in attrs.items())))
            out[key] = out.get(key, 0) + 1
    return out


def _run(module: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800)


def _trained(p, out) -> tuple[bool, str]:
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    return True, (f"1 epoch of tiny: {m['train_img_s'] or 0:,.0f} img/s, test accuracy {m['test_accuracy']:.3f}, "
                  f"policy {m['policy']}, xla {m['xla']}")


def check_training(work: str, name: str, flags: list) -> tuple[bool, str]:
    out = os.path.join(work, name)
    return _trained(_run("engine.train", *TRAIN, *flags, "--out", out), out)


def check_launch(work: str) -> tuple[bool, str]:
    out = os.path.join(work, "launch")
    return _trained(_run("engine.launch", "--workers", 2, "--", *TRAIN, "--out", out), out)


def check_trt(work: str, run: str, precision: str) -> tuple[bool, str]:
    engine_path = os.path.join(work, f"model-{precision}.engine")
    p = _run("engine.export", "trt", run, "--out", engine_path, "--precision", precision, "--data", "digits")
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    report = os.path.join(work, f"evaluate-{precision}.json")
    p = _run("engine.evaluate", "--backend", "trt", "--model", engine_path, "--against", f"tf:{run}",
             "--data", "digits", "--report", report)
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    with open(report) as f:
        r = json.load(f)
    agree, diff = r["against"]["top1_agreement"], r["against"]["max_abs_logit_diff"]
    bar_agree, bar_diff = TRT_BARS[precision]
    ok = agree >= bar_agree and (bar_diff is None or diff <= bar_diff)
    return ok, f"{r['img_s']:,.0f} img/s, top-1 agreement with TensorFlow {agree:.4f}, max |dlogit| {diff:.3g}"


def check_kernels() -> tuple[bool, str]:
    from engine import models
    missing = {m: missing_gpu_kernels(m) for m in models.names()}
    bad = {m: sorted(k[0] for k in v) for m, v in missing.items() if v}
    if bad:
        return False, "no GPU kernel: " + "; ".join(f"{m}: {', '.join(ops)}" for m, ops in bad.items())
    return True, f"every op of the train and eval steps has a GPU kernel ({len(missing)} models, mixed_float16)"


def plan(num_gpus: int) -> list[tuple[str, object]]:
    """(name, check(work) -> (ok, detail)) for a machine with `num_gpus` GPUs, in the order run."""
    steps = [("kernel placement", lambda w: check_kernels()),
             ("--amp --xla", lambda w: check_training(w, "amp-xla", ["--amp", "--xla"])),
             ("--amp", lambda w: check_training(w, "amp", ["--amp", "--no-xla"])),
             ("defaults (--amp auto --xla auto: the GPU rule)", lambda w: check_training(w, "auto", [])),
             ("--strategy mirrored", lambda w: check_training(w, "mirrored", ["--strategy", "mirrored"]))]
    if num_gpus >= 2:
        steps.append(("engine.launch --workers 2", check_launch))
    run = lambda w: os.path.join(w, "amp")  # noqa: E731 - the --amp run is the exported model
    for precision in ("fp32", "fp16", "int8"):
        steps.append((f"TensorRT {precision}", lambda w, p=precision: check_trt(w, run(w), p)))
    return steps


@cli
def main(argv=None):
    p = Parser(prog="python -m engine.gpucheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", help="keep the runs and engines in this folder (default: a temporary one)")
    a = p.parse_args(argv)
    from engine import devices
    summary, problems = devices.driver_summary(), devices.gpu_setup_problems()
    if summary:  # the NVIDIA driver's version and GPUs, and the CUDA TensorFlow was built for
        print(summary)
    for problem in problems:  # a driver or an install no GPU path can pass with: stop before the checks
        print(f"FAIL  GPU setup  {problem.removesuffix('; running on the CPU')}")
    if problems:
        sys.exit(1)
    import_tensorflow_quietly()
    from engine import devices
    gpus = devices.gpus()
    if not gpus:
        print("gpucheck: no NVIDIA GPU visible to TensorFlow here; nothing to check "
              "(the CPU test suite checks what it can without one)")
        sys.exit(EXIT_SKIPPED)
    print(f"gpucheck on {devices.device_name()}")
    work = a.keep or tempfile.mkdtemp(prefix="engine-gpucheck-")
    failed = 0
    for name, check in plan(len(gpus)):
        t0 = time.perf_counter()
        try:
            ok, detail = check(work)
        except Exception as e:  # noqa: BLE001 - a check that crashes is a failed path, and the rest still run
            ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name:26s} {detail} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"gpucheck: {'all paths passed' if not failed else f'{failed} path(s) failed'}; runs in {work}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
