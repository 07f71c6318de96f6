import time, sys, tensorflow as tf
dt = tf.bfloat16
N, H, CI, CO = [int(a) for a in sys.argv[1:5]]
x = tf.cast(tf.random.normal([N, H, H, CI]), dt)
dy = tf.cast(tf.random.normal([N, H, H, CO]), dt)
flops = 2 * N * H * H * CI * CO * 9
def bench(name, f, n=6):
    r = f(); r.numpy()
    t0 = time.perf_counter()
    for _ in range(n): r = f()
    r.numpy()
    s = (time.perf_counter() - t0) / n
    print(f"{name:28s} {s*1e3:8.1f} ms {flops/s/1e9:7.0f} GF/s", flush=True)
    return r
bench("backprop filter (TF)", tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[3, 3, CI, CO], out_backprop=dy, strides=[1,1,1,1], padding="SAME")))
for B in (2, 4, 16):
    def v(B=B):
        xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); d = tf.reshape(dy, [B, -1, CO])
        return tf.reshape(tf.stack([tf.reduce_sum(tf.cast(tf.matmul(tf.reshape(xp[:, i:i + H, j:j + H, :], [B, -1, CI]), d, transpose_a=True), tf.float32), 0) for i in range(3) for j in range(3)]), [3, 3, CI, CO])
    bench(f"chunks {B}", tf.function(v))
    def w(B=B):
        xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); d = tf.reshape(dy, [B, -1, CO])
        cols = tf.stack([tf.reshape(xp[:, i:i + H, j:j + H, :], [B, -1, CI]) for i in range(3) for j in range(3)], 0)  # 9,B,K,CI
        r = tf.einsum("sbkc,bko->sco", cols, d)
        return tf.reshape(r, [3, 3, CI, CO])
    bench(f"einsum chunks {B}", tf.function(w))
