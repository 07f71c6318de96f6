"""The weight gradient of a 3x3, stride-1, 'same' convolution: TensorFlow's kernel
(Conv2DBackpropFilter, oneDNN's on a CPU) against matrix-product forms, the engine's among them
(`engine.models.layers._conv3x3_weight_gradient`: nine products, rows in two halves, float32 sums), at one
shape [N, H, H, C_in] -> C_out, in GFLOP/s, with each form's largest relative difference from
TensorFlow's.

    python -m bench.micro.weight_gradient N H C_IN C_OUT [--dtype bfloat16] [--reps 6]
    python -m bench.micro.weight_gradient 1024 7 256 256
"""
from __future__ import annotations

import argparse
import os
import sys
import time

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"


def forms(tf, x, dy, ci, co):
    """name -> function of no arguments giving the [3, 3, ci, co] weight gradient."""
    from engine.models.layers import _conv3x3_weight_gradient
    h = x.shape[1]
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])

    def shifted(i, j, rows=1):
        return tf.reshape(xp[:, i:i + h, j:j + h, :], [rows, -1, ci] if rows > 1 else [-1, ci])

    def nine_products():
        d = tf.reshape(dy, [-1, co])
        return tf.reshape(tf.stack([tf.matmul(shifted(i, j), d, transpose_a=True)
                                    for i in range(3) for j in range(3)]), [3, 3, ci, co])

    def dy_transposed():  # dW^T = dy^T [co, NHW] @ x [NHW, ci]
        d = tf.transpose(tf.reshape(dy, [-1, co]))
        w = tf.stack([tf.matmul(d, shifted(i, j)) for i in range(3) for j in range(3)])
        return tf.transpose(tf.reshape(w, [3, 3, co, ci]), [0, 1, 3, 2])

    def three_row_products():  # the three column shifts of a row concatenated on channels
        d = tf.reshape(dy, [-1, co])
        rows = [tf.matmul(tf.reshape(tf.concat([xp[:, i:i + h, j:j + h, :] for j in range(3)], -1), [-1, 3 * ci]),
                          d, transpose_a=True) for i in range(3)]
        return tf.reshape(tf.stack(rows), [3, 3, ci, co])

    def chunks(b):
        def f():
            d = tf.reshape(dy, [b, -1, co])
            return tf.cast(tf.reshape(tf.stack([tf.reduce_sum(tf.cast(
                tf.matmul(shifted(i, j, b), d, transpose_a=True), tf.float32), 0)
                for i in range(3) for j in range(3)]), [3, 3, ci, co]), x.dtype)
        return f

    out = {"TensorFlow's kernel": lambda: tf.raw_ops.Conv2DBackpropFilter(
               input=x, filter_sizes=[3, 3, ci, co], out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"),
           "engine: nine products, 2 halves": lambda: _conv3x3_weight_gradient(x, dy),
           "nine products": nine_products, "dy^T @ x": dy_transposed, "three row products": three_row_products}
    for b in (4, 16):
        if (x.shape[0] * h * h) % b == 0:
            out[f"nine products, {b} chunks"] = chunks(b)
    return out


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m bench.micro.weight_gradient", description=__doc__.split("\n\n")[0])
    for name in ("n", "h", "c_in", "c_out"):
        p.add_argument(name, type=int, nargs="?")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--reps", type=int, default=6, help="timed calls per form, after one warm-up call")
    p.add_argument("--quick", action="store_true", default=QUICK, help="a tiny shape: proves the tool runs")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.h, a.c_in, a.c_out, a.reps = 4, 4, 8, 8, 1
    if None in (a.n, a.h, a.c_in, a.c_out):
        p.error("give the shape: N H C_IN C_OUT (e.g. 1024 7 256 256)")
    import tensorflow as tf

    from bench.conftest import print_provenance
    print_provenance("bench.micro.weight_gradient", argv)
    x = tf.cast(tf.random.normal([a.n, a.h, a.h, a.c_in], seed=0), a.dtype)
    dy = tf.cast(tf.random.normal([a.n, a.h, a.h, a.c_out], seed=1), a.dtype)
    flops = 2 * a.n * a.h * a.h * a.c_in * a.c_out * 9
    rates, ref = {}, None
    for name, f in forms(tf, x, dy, a.c_in, a.c_out).items():
        f = tf.function(f)
        r = f().numpy()
        t0 = time.perf_counter()
        for _ in range(a.reps):
            out = f()
        out.numpy()
        seconds = (time.perf_counter() - t0) / a.reps
        rates[name] = flops / seconds / 1e9
        ref = r if ref is None else ref
        rel = float(abs(tf.cast(r, tf.float32) - tf.cast(ref, tf.float32)).numpy().max()
                    / max(float(abs(tf.cast(ref, tf.float32)).numpy().max()), 1e-30))
        print(f"{name:32s} {seconds * 1e3:9.2f} ms {rates[name]:8.1f} GFLOP/s   rel diff {rel:.3g}", flush=True)
    return rates


if __name__ == "__main__":
    main()
