"""The machine's achievable FLOP/s per dtype. Training, through TensorFlow: a large matmul and a 3x3
convolution like the ones the CIFAR models spend their time in, float32 and bfloat16. Inference,
through OpenVINO: a stack of 3x3 convolutions in f32, bf16 and int8. The report sets every training
row's achieved FLOP/s (img/s x the model's FLOPs per image, bench/flops.py) against the conv rate of
its precision, every inference row's against the inference rate of the precision it computes in, and
says what each speed goal would take of that rate.

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


# Inference: OpenVINO's CPU plugin on a stack of 3x3 convolutions + ReLU (NCHW, its native layout) at the
# CIFAR models' layer shapes, batch 256, in each inference precision: f32; bf16 (the precision hint: it
# computes in f32 where the CPU has no bf16 instructions, and the row records what ran); int8 (u8
# activations and per-channel int8 weights from FakeQuantize nodes, as NNCF quantizes a model, so each
# convolution reads and writes 8-bit tensors as in a quantized network). The report takes each
# precision's fastest shape as this CPU's rate and sets every inference row against it.
OV_DEPTH = 4
OV_CONVS = [(8, 8, 32)] if QUICK else [(256, 32, 128), (256, 16, 256), (256, 8, 512), (256, 4, 512)]


def _openvino_stack(n: int, side: int, c: int, precision: str):
    """(run, precision the convolutions ran in) for the stack at this shape and precision."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    def const(v):
        return ops.constant(np.asarray(v, np.float32))

    def fake_quantize(node, low, high, levels):
        return ops.fake_quantize(node, const(low), const(high), const(low), const(high), levels)
    rng = np.random.default_rng(0)
    x = ops.parameter([n, c, side, side], np.float32, name="x")
    h = x
    for _ in range(OV_DEPTH):
        w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        wn = const(w)
        if precision == "int8":
            limit = np.abs(w).max(axis=(1, 2, 3), keepdims=True)
            h, wn = fake_quantize(h, 0.0, 4.0, 256), fake_quantize(wn, -limit, limit, 255)
        h = ops.relu(ops.convolution(h, wn, [1, 1], [1, 1], [1, 1], [1, 1]))
    hint = "bf16" if precision == "bf16" else "f32"
    compiled = ov.Core().compile_model(ov.Model([h], [x]), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    ran = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
           if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    request = compiled.create_infer_request()
    images = rng.uniform(0, 4, (n, c, side, side)).astype(np.float32)
    return (lambda: request.infer({0: images})), ("int8" if ran & {"u8", "i8"} else "/".join(sorted(ran)))


@pytest.mark.parametrize("precision", ["f32", "bf16", "int8"])
@pytest.mark.parametrize("shape", OV_CONVS, ids=lambda s: "x".join(map(str, s)))
def test_openvino_peak(benchmark, shape, precision):
    n, side, c = shape
    run, ran = _openvino_stack(n, side, c, precision)
    flops = OV_DEPTH * 2 * n * side ** 2 * 9 * c ** 2
    info = machine_info()
    info.update(kind="inference_peak", runtime="openvino", op="conv3x3 stack", precision=precision, ran=ran,
                shape=f"{n}x{side}x{side}x{c}", flops=flops)
    benchmark.extra_info.update(info)
    benchmark.pedantic(run, rounds=2 if QUICK else 5, warmup_rounds=1, iterations=1)
    benchmark.extra_info["gflop_s"] = flops / benchmark.stats.stats.min / 1e9
