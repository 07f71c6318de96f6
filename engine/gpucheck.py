"""`python -m engine.gpucheck`: every GPU path of the engine, run on this machine's GPU, one line each.

    PASS  kernel placement            every (op, dtype) has a GPU kernel ({models} models; mixed_bfloat16, mixed_float16)
    PASS  --amp --xla                 1 epoch of tiny: 4,210 img/s, test accuracy 0.912, policy mixed_bfloat16, xla True
    ...

Paths: the kernel-placement check (every (op, dtype) of every registered model's training graph (the
per-call driver and its train step, XLA off) and TTA eval step, in bfloat16 and in float16, has a GPU
kernel in this TensorFlow build; traced in a child process, so that this one never takes the GPU's
memory); one epoch of tiny with `--amp --xla`, with `--amp` alone and with `--strategy mirrored`; the
default command (`engine train` with nothing but its data: airbench-muon, Muon, the whitening
data-init, alternating flips, TTA, batch 2000, 8 epochs), which must take the GPU rule's choice; on
GPUs of compute capability >= 8.0 the same in float16 with loss scaling (ENGINE_AMP_FLOAT16=1, the
path T4 and V100 take); `engine.launch --workers 2` where two GPUs exist; TensorRT engines in fp32,
fp16 and int8 from the `--amp` run, each compared with TensorFlow on the test images (fp32 with TF32
off on both sides: NVIDIA_TF32_OVERRIDE=0).
Data: scikit-learn's digits at CIFAR-10's shape, `digits32` (ships with it: no download; the kernels
are checked at the shape the default command trains on); the default command's batch of 2000 takes
the digits with their 1-pixel shifts (2,876 training images). About 5 minutes on one GPU. Exit
status 0 if every path passed, 1 if any failed, 77 (skipped) on a machine without a GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from engine import layout, models
from engine.cli import Parser, import_tensorflow_quietly
from engine.errors import cli

__doc__ = __doc__.replace("{models}", str(len(models.names())))  # noqa: A001 - the count is the registry's
EXIT_SKIPPED = 77
DATA = "digits32"  # scikit-learn's digits at CIFAR-10's 32x32x3
TRAIN = ["--model", "tiny", "--data", DATA, "--epochs", "1", "--batch-size", "64", "--quiet"]
# The default command: `engine train` given only its data (8 steps of 2000 on the digits with shifts;
# 0.978 test accuracy in float32 on a CPU): it must learn.
DEFAULT_BAR = 0.8
KERNEL_POLICIES = ("mixed_bfloat16", "mixed_float16")  # --amp: compute capability >= 8.0, and 7.x
# Agreement with TensorFlow a TensorRT engine must keep on the digits test images: top-1, max |dlogit|.
TRT_BARS = {"fp32": (0.999, 1e-2), "fp16": (0.99, 0.1), "int8": (0.97, None)}


def missing_gpu_kernels(model: str, policy: str = "mixed_bfloat16") -> dict:
    """{(op, dtypes): count} of the ops of `model`'s training graph under `policy` that have no GPU
    kernel in this TensorFlow build's registry: the per-call driver (iterator, step counter,
    lookahead, divergence checks) with the train step it calls (the recipe's augmentation on, XLA
    off: the graph of --no-xla and --deterministic), and the TTA eval step. The graph is the one
    models.build makes where TensorFlow sees a GPU (Keras's own layers, none of the CPU rewrites)."""
    import numpy as np
    import tensorflow as tf

    from engine.data.pipeline import Pipeline
    from engine.train import resolve
    from engine.train.build import build_training
    with models.global_policy(policy):
        cfg = resolve.defaults(model).replace("model", weights="none", feature_cache=False, tta=2)
        cfg = cfg.replace("model", crop_pad=cfg.model.crop_pad or 2, flip="alternate" if cfg.model.flip == "none"
                          else cfg.model.flip).replace("optim", batch_size=8)
        # what engine.train decides before it builds (speed.choose): --amp as the policy says, XLA off
        cfg = cfg.replace("run", amp=policy != "float32", xla=False)
        loop = build_training(cfg, 10, 64, policy).loop
        batches = iter(Pipeline(np.zeros((64, 32, 32, 3), np.uint8), np.arange(64) % 10).train(8, 0, 0).repeat())
        driver = loop.train_calls.get_concrete_function(batches, tf.TensorSpec([], tf.int32))
        evaluate = tf.function(lambda x, y: loop._eval_step(x, y, 2)).get_concrete_function(
            tf.TensorSpec([8, 32, 32, 3], tf.uint8), tf.TensorSpec([8], tf.int32))
        return _missing(driver.graph.as_graph_def()) | _missing(evaluate.graph.as_graph_def())


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
    """`python -m module args` with this environment and `env` over it (None: the variable unset)."""
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=merged, timeout=1800)


def _trained(p, out) -> tuple[bool, str]:
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    m = layout.read_metrics(out)
    return True, (f"1 epoch of tiny: {m.train_img_s or 0:,.0f} img/s, test accuracy {m.test_accuracy:.3f}, "
                  f"policy {m.policy}, xla {m.xla}")


def check_training(work: str, name: str, flags: list) -> tuple[bool, str]:
    out = os.path.join(work, name)
    return _trained(_run("engine.train", *TRAIN, *flags, "--out", out), out)


def check_launch(work: str) -> tuple[bool, str]:
    out = os.path.join(work, "launch")
    return _trained(_run("engine.launch", "--workers", 2, "--", *TRAIN, "--out", out), out)


def check_trt(work: str, run: str, precision: str) -> tuple[bool, str]:
    engine_path = os.path.join(work, f"model-{precision}.engine")
    # fp32 against TensorFlow's float32, like with like: TF32 (both sides' default from compute
    # capability 8.0 on, 10-bit mantissas) off in the TensorRT build and in TensorFlow
    env = {"NVIDIA_TF32_OVERRIDE": "0"} if precision == "fp32" else None
    p = _run("engine.export", "trt", run, "--out", engine_path, "--precision", precision, "--data", DATA, env=env)
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    report = os.path.join(work, f"evaluate-{precision}.json")
    p = _run("engine.evaluate", "--backend", "trt", "--model", engine_path, "--against", f"tf:{run}",
             "--data", DATA, "--report", report, env=env)
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    with open(report) as f:
        r = json.load(f)
    agree, diff = r["against"]["top1_agreement"], r["against"]["max_abs_logit_diff"]
    bar_agree, bar_diff = TRT_BARS[precision]
    ok = agree >= bar_agree and (bar_diff is None or diff <= bar_diff)
    detail = f"{r['img_s']:,.0f} img/s, top-1 agreement with TensorFlow {agree:.4f}, max |dlogit| {diff:.3g}"
    if env and r.get("tensorflow_tf32") is not False:
        return False, f"{detail}; TensorFlow's side ran with TF32 on, not float32"
    return ok, detail + (", TF32 off" if env else "")


def sweep(names=None) -> dict:
    """{"model policy": [op names]} of every (model, policy) whose graphs lack a GPU kernel (see
    missing_gpu_kernels); empty where none does."""
    bad = {}
    for m in names or models.names():
        for policy in KERNEL_POLICIES:
            missing = missing_gpu_kernels(m, policy)
            if missing:
                bad[f"{m} {policy}"] = sorted({op for op, _ in missing})
    return bad


def check_kernels(names=None) -> tuple[bool, str]:
    """The kernel sweep, traced in a child process: building the models here would have TensorFlow
    take nearly all of the GPU's memory in this process, for the rest of the steps."""
    names = list(names or models.names())
    p = subprocess.run([sys.executable, "-c", "import json, sys; from engine.gpucheck import sweep; "
                        "print(json.dumps(sweep(sys.argv[1:])))", *names],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=1800)
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    bad = json.loads(p.stdout.strip().splitlines()[-1])
    if bad:
        return False, "no GPU kernel: " + "; ".join(f"{k}: {', '.join(ops)}" for k, ops in bad.items())
    return True, (f"every (op, dtype) has a GPU kernel ({len(names)} models; {', '.join(KERNEL_POLICIES)})")


def digits_with_shifts(folder: str) -> str:
    """A train/<class>/ test/<class>/ tree of PNGs: scikit-learn's digits at 32x32x3 (digits32) and their
    copies shifted one pixel right (training images only), enough for the default batch of 2000. Returns `folder`."""
    import numpy as np
    from PIL import Image

    from engine.data import load_digits
    d = load_digits(side=32)
    splits = {"train": (np.concatenate([d.x_train, np.roll(d.x_train, 1, axis=2)]), np.tile(d.y_train, 2)),
              "test": (d.x_test, d.y_test)}
    for split, (x, y) in splits.items():
        for i, (image, label) in enumerate(zip(x, y)):
            os.makedirs(os.path.join(folder, split, d.class_names[label]), exist_ok=True)
            Image.fromarray(image).save(os.path.join(folder, split, d.class_names[label], f"{i:05d}.png"))
    return folder


def expected_rule(capabilities: list, float16: bool = False) -> tuple[str, bool]:
    """(policy, xla) the GPU rule must give the default command on GPUs of these compute capabilities:
    bfloat16 from 8.0, float16 + loss scaling below (or with ENGINE_AMP_FLOAT16=1: `float16`), XLA on
    except for float16 over several GPUs."""
    float16 = float16 or not capabilities or min(capabilities) < (8, 0)
    return ("mixed_float16" if float16 else "mixed_bfloat16"), not (float16 and len(capabilities) > 1)


def check_default(work: str, name: str, capabilities: list, float16: bool = False) -> tuple[bool, str]:
    """The default command on the digits with their shifts (with ENGINE_AMP_FLOAT16=1 if `float16`):
    it must train in the GPU rule's choice, and learn."""
    data = os.path.join(work, "digits-with-shifts")
    if not os.path.isdir(data):
        digits_with_shifts(data)
    out = os.path.join(work, name)
    # as a user's shell without the engine's variables: --amp and --xla auto
    env = {"ENGINE_AMP": None, "ENGINE_XLA": None, "ENGINE_AMP_FLOAT16": "1" if float16 else None}
    p = _run("engine.train", "--data", data, "--cache-dir", os.path.join(work, "cache"), "--quiet", "--out", out,
             env=env)
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
    m = layout.read_metrics(out)
    detail = (f"{m.steps} steps of the default command: {m.train_img_s or 0:,.0f} img/s, test accuracy "
              f"{m.test_accuracy:.3f} (TTA {m.test_accuracy_tta:.3f}), policy {m.policy}, xla {m.xla}")
    policy, xla = expected_rule(capabilities, float16)
    if (m.policy, m.xla) != (policy, xla):
        return False, f"{detail}; the GPU rule gives {policy}, xla {xla}"
    return m.test_accuracy >= DEFAULT_BAR, detail


def plan(num_gpus: int, capabilities: list = ()) -> list[tuple[str, object]]:
    """(name, check(work) -> (ok, detail)) for a machine with `num_gpus` GPUs of these compute
    capabilities, in the order run."""
    capabilities = list(capabilities)
    steps = [("kernel placement", lambda w: check_kernels()),
             ("--amp --xla", lambda w: check_training(w, "amp-xla", ["--amp", "--xla"])),
             ("--amp", lambda w: check_training(w, "amp", ["--amp", "--no-xla"])),
             ("default command", lambda w: check_default(w, "default", capabilities)),
             ("--strategy mirrored", lambda w: check_training(w, "mirrored", ["--strategy", "mirrored"]))]
    if capabilities and min(capabilities) >= (8, 0):  # below, the steps above already train in float16
        steps.insert(4, ("default command, float16", lambda w: check_default(w, "default-float16", capabilities,
                                                                             float16=True)))
    if num_gpus >= 2:
        steps.append(("engine.launch --workers 2", check_launch))
    run = lambda w: os.path.join(w, "amp")  # noqa: E731 - the --amp run is the exported model
    for precision in ("fp32", "fp16", "int8"):
        steps.append((f"TensorRT {precision}", lambda w, p=precision: check_trt(w, run(w), p)))
    return steps


@cli
def main(argv=None):
    p = Parser(prog="engine gpucheck", description=__doc__.split("\n\n")[0])
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
    for name, check in plan(len(gpus), devices.compute_capabilities()):
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
