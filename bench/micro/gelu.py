"""GELU forward + backward in the forms the engine weighed, at one shape and dtype: TensorFlow's ops
on the input dtype (`gelu_erf`), the same in float32, a hand-written float32 gradient, XLA's autodiff
of one compiled forward, and the engine's form (`gelu_erf_compiled`: forward and gradient each one
XLA-compiled loop), with each form's largest difference from the first.

    python -m bench.micro.gelu [--shape 1024,15,15,256] [--dtype bfloat16] [--reps 10] [--inter-op-threads 1]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m bench.micro.gelu", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="1024,15,15,256")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--reps", type=int, default=10, help="timed calls per form, after one warm-up call")
    p.add_argument("--inter-op-threads", type=int, default=1, help="TensorFlow's inter-op threads (0: its default)")
    p.add_argument("--quick", action="store_true", default=QUICK, help="a tiny shape: proves the tool runs")
    a = p.parse_args(argv)
    if a.quick:
        a.shape, a.reps = "4,5,5,8", 1
    import tensorflow as tf
    try:
        tf.config.threading.set_inter_op_parallelism_threads(a.inter_op_threads)
    except RuntimeError:  # TensorFlow already started in this process (bench/test_tools.py)
        print(f"# inter-op threads: {tf.config.threading.get_inter_op_parallelism_threads()} (already set)")

    from bench.conftest import print_provenance
    from engine.models.layers import SQRT_HALF, gelu_erf, gelu_erf_compiled
    print_provenance("bench.micro.gelu", argv)
    x = tf.cast(tf.random.normal([int(d) for d in a.shape.split(",")], seed=0), a.dtype)

    def in_float32(v):
        return tf.cast(gelu_erf(tf.cast(v, tf.float32)), v.dtype)

    @tf.custom_gradient
    def float32_gradient(v):
        vf = tf.cast(v, tf.float32)
        cdf = 0.5 * (1.0 + tf.math.erf(vf * SQRT_HALF))

        def grad(dy):
            return dy * tf.cast(cdf + vf * tf.exp(-0.5 * vf * vf) / math.sqrt(2 * math.pi), dy.dtype)
        return tf.cast(vf * cdf, v.dtype), grad

    forms = [("TF ops, input dtype", gelu_erf), ("TF ops in float32", in_float32),
             ("float32 custom gradient", float32_gradient),
             ("XLA forward, autodiff", tf.function(gelu_erf, jit_compile=True)),
             ("engine: gelu_erf_compiled", gelu_erf_compiled)]
    times, first = {}, None
    def forward_backward(g):
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = g(x)
            return y, tape.gradient(y, x, output_gradients=tf.ones_like(y))
        return tf.function(step)

    for name, g in forms:
        f = forward_backward(g)
        out = [t.numpy() for t in f()]
        t0 = time.perf_counter()
        for _ in range(a.reps):
            r = f()
        [t.numpy() for t in r]
        times[name] = (time.perf_counter() - t0) / a.reps
        first = first or out
        diff = max(float(abs(tf.cast(p_, tf.float32) - tf.cast(q, tf.float32)).numpy().max()) for p_, q in zip(out, first))
        print(f"{name:28s} {times[name] * 1e3:9.2f} ms forward + backward   max |diff| {diff:.3g}", flush=True)
    return times


if __name__ == "__main__":
    main()
