import time, sys, math, tensorflow as tf
SQRT_HALF = math.sqrt(0.5)
x = tf.cast(tf.random.normal([1024, 15, 15, 256]), tf.bfloat16)
def bench(name, f, n=10):
    r = f(); [t.numpy() for t in r]
    t0 = time.perf_counter()
    for _ in range(n): r = f()
    [t.numpy() for t in r]
    print(f"{name:34s} {(time.perf_counter()-t0)/n*1e3:8.1f} ms", flush=True)
    return r
def fb(g):
    def f():
        with tf.GradientTape() as t:
            t.watch(x); y = g(x)
        return y, t.gradient(y, x, output_gradients=tf.ones_like(y))
    return tf.function(f)
def ours(x): return 0.5 * x * (1.0 + tf.math.erf(x * SQRT_HALF))
def f32(x):
    xf = tf.cast(x, tf.float32); return tf.cast(0.5 * xf * (1.0 + tf.math.erf(xf * SQRT_HALF)), x.dtype)
@tf.custom_gradient
def fused(x):
    xf = tf.cast(x, tf.float32)
    cdf = 0.5 * (1.0 + tf.math.erf(xf * SQRT_HALF))
    def grad(dy):
        pdf = tf.exp(-0.5 * xf * xf) * (1.0 / math.sqrt(2 * math.pi))
        return dy * tf.cast(cdf + xf * pdf, dy.dtype)
    return tf.cast(xf * cdf, x.dtype), grad
r0 = bench("ours bf16 fwd+bwd", fb(ours))
r1 = bench("float32 inside fwd+bwd", fb(f32))
r2 = bench("custom grad f32 fwd+bwd", fb(fused))
bench("ours bf16 fwd only", tf.function(lambda: [ours(x)]))
bench("erf bf16 only", tf.function(lambda: [tf.math.erf(x)]))
bench("erf f32 only (incl casts)", tf.function(lambda: [tf.cast(tf.math.erf(tf.cast(x, tf.float32)), tf.bfloat16)]))
bench("tanh bf16 only", tf.function(lambda: [tf.math.tanh(x)]))
bench("mul bf16 only", tf.function(lambda: [x * x]))
for a, b in [(r0, r1), (r0, r2)]:
    print([float(tf.reduce_max(tf.abs(tf.cast(p, tf.float32) - tf.cast(q, tf.float32)))) for p, q in zip(a, b)])
print("--- XLA clusters")
jit_ours = tf.function(ours, jit_compile=True)
r3 = bench("jit(ours) fwd+bwd (autodiff)", fb(jit_ours))
@tf.function(jit_compile=True)
def gfwd(x):
    xf = tf.cast(x, tf.float32)
    return tf.cast(0.5 * xf * (1.0 + tf.math.erf(xf * SQRT_HALF)), x.dtype)
@tf.function(jit_compile=True)
def gbwd(x, dy):
    xf = tf.cast(x, tf.float32)
    d = 0.5 * (1.0 + tf.math.erf(xf * SQRT_HALF)) + xf * tf.exp(-0.5 * xf * xf) * (1.0 / math.sqrt(2 * math.pi))
    return tf.cast(tf.cast(dy, tf.float32) * d, dy.dtype)
@tf.custom_gradient
def jgelu(x):
    return gfwd(x), lambda dy: gbwd(x, dy)
r4 = bench("custom grad, jit fwd & bwd", fb(jgelu))
bench("jit fwd only", tf.function(lambda: [gfwd(x)]))
for a, b in [(r0, r3), (r0, r4)]:
    print([float(tf.reduce_max(tf.abs(tf.cast(p, tf.float32) - tf.cast(q, tf.float32)))) for p, q in zip(a, b)])
