"""The machine's achievable FLOP/s per dtype, through TensorFlow: a large matmul and a 3x3
convolution like the ones the CIFAR models spend their time in, float32 and bfloat16. The report
sets every training row's achieved FLOP/s (img/s x the model's FLOPs per image, bench/flops.py)
against the conv rate of its precision.

    pytest bench/test_peak.py --benchmark-json=peak.json
"""
import pytest
import tensorflow as tf

from bench.conftest import QUICK, machine_info

# op: (shape arguments, FLOPs); quick mode runs small ones that only prove the benchmark runs
MATMUL = 512 if QUICK else 2048                       # n x n @ n x n
CONV = (16, 8, 64) if QUICK else (256, 16, 256)       # batch, side, channels (in = out), 3x3, SAME
OPS = {
    "matmul": 2 * MATMUL ** 3,
    "conv3x3": 2 * CONV[0] * CONV[1] ** 2 * 9 * CONV[2] ** 2,
}


def _fn(op, dtype):
    if op == "matmul":
        a = tf.cast(tf.random.stateless_uniform((MATMUL, MATMUL), (0, 0)), dtype)
        b = tf.cast(tf.random.stateless_uniform((MATMUL, MATMUL), (0, 1)), dtype)
        f = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    else:
        n, side, c = CONV
        x = tf.cast(tf.random.stateless_uniform((n, side, side, c), (0, 0)), dtype)
        w = tf.cast(tf.random.stateless_uniform((3, 3, c, c), (0, 1)), dtype)
        f = tf.function(lambda: tf.reduce_sum(tf.cast(tf.nn.conv2d(x, w, 1, "SAME"), tf.float32)))
    return lambda: float(f())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", list(OPS))
def test_peak(benchmark, op, dtype):
    run = _fn(op, tf.as_dtype(dtype))
    info = machine_info()
    info.update(kind="peak", op=op, dtype=dtype, flops=OPS[op])
    benchmark.extra_info.update(info)
    benchmark.pedantic(run, rounds=2 if QUICK else 3, warmup_rounds=1, iterations=1)
    benchmark.extra_info["gflop_s"] = OPS[op] / benchmark.stats.stats.min / 1e9
