import time, sys, tensorflow as tf
dt = tf.bfloat16
N, H, CI, CO = [int(a) for a in sys.argv[1:5]]
x = tf.cast(tf.random.normal([N, H, H, CI]), dt)
w = tf.cast(tf.random.normal([3, 3, CI, CO]) * 0.05, dt)
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
ref = bench("backprop filter (TF)", tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=[1,1,1,1], padding="SAME")))
def chk(r):
    a, b = tf.cast(ref, tf.float32), tf.cast(r, tf.float32)
    print("   rel", float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a))))
def v1():  # 9 matmuls, transpose_a
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); d = tf.reshape(dy, [-1, CO])
    return tf.reshape(tf.stack([tf.matmul(tf.reshape(xp[:, i:i + H, j:j + H, :], [-1, CI]), d, transpose_a=True) for i in range(3) for j in range(3)]), [3, 3, CI, CO])
def v2():  # channel-major x: (CI, N, H+2, W+2), slices -> (CI, NHW) @ (NHW, CO)
    xp = tf.transpose(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [3, 0, 1, 2]); d = tf.reshape(dy, [-1, CO])
    return tf.reshape(tf.stack([tf.matmul(tf.reshape(xp[:, :, i:i + H, j:j + H], [CI, -1]), d) for i in range(3) for j in range(3)]), [3, 3, CI, CO])
def v3():  # transpose dy instead: dW^T = dy^T (CO, NHW) @ x_slice (NHW, CI)
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); dT = tf.transpose(tf.reshape(dy, [-1, CO]))
    return tf.transpose(tf.reshape(tf.stack([tf.matmul(dT, tf.reshape(xp[:, i:i + H, j:j + H, :], [-1, CI])) for i in range(3) for j in range(3)]), [3, 3, CO, CI]), [0, 1, 3, 2])
def v4():  # per-row: 3 matmuls, with the 3 kw shifts concatenated on channels
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); d = tf.reshape(dy, [-1, CO])
    rows = []
    for i in range(3):
        cols = tf.concat([xp[:, i:i + H, j:j + H, :] for j in range(3)], -1)
        rows.append(tf.matmul(tf.reshape(cols, [-1, 3 * CI]), d, transpose_a=True))
    return tf.reshape(tf.stack(rows), [3, 3, CI, CO])
def v5():  # batch-matmul over chunks of batch, then sum (float32 accumulation)
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); d = tf.reshape(dy, [-1, CO])
    return tf.reshape(tf.stack([tf.cast(tf.matmul(tf.cast(tf.reshape(xp[:, i:i + H, j:j + H, :], [-1, CI]), tf.float32), tf.cast(d, tf.float32), transpose_a=True), dt) for i in range(3) for j in range(3)]), [3, 3, CI, CO])
for name, f in [("9 matmuls transpose_a", v1), ("channel-major slices", v2), ("dy^T @ x", v3), ("3 row matmuls", v4), ("fp32 matmuls", v5)]:
    chk(bench(name, tf.function(f)))
