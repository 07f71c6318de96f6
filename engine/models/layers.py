"""Layers the model families share."""
import keras
import tensorflow as tf


SQRT_HALF = 0.7071067811865476


@keras.saving.register_keras_serializable(package="engine")
def gelu_erf(x):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as PyTorch's nn.GELU. Keras's gelu is the same
    function, but TensorFlow writes it with erfc, which ONNX has no op for: this form exports (Erf)."""
    return 0.5 * x * (1.0 + tf.math.erf(x * SQRT_HALF))


INV_SQRT_2PI = 0.3989422804014327


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_compiled(x):
    return tf.cast(gelu_erf(tf.cast(x, tf.float32)), x.dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_gradient_compiled(x, upstream):
    x = tf.cast(x, tf.float32)
    derivative = 0.5 * (1.0 + tf.math.erf(x * SQRT_HALF)) + x * tf.exp(-0.5 * x * x) * INV_SQRT_2PI
    return tf.cast(tf.cast(upstream, tf.float32) * derivative, upstream.dtype)


@tf.custom_gradient
def gelu_erf_compiled(x):
    """gelu_erf and its gradient, each one XLA-compiled elementwise loop in float32 (one pass over
    memory each way, where TensorFlow runs the formula and its autodiff gradient as a dozen separate
    kernels). The rest of the graph stays outside XLA."""
    return _gelu_compiled(x), lambda upstream: _gelu_gradient_compiled(x, upstream)


def _conv3x3_weight_gradient(x, upstream):
    """The weight gradient of a 3x3, stride-1, 'same' convolution as nine matrix products, one per
    kernel position: dW[i, j] = x shifted by (i, j), as [N*H*W, C_in], transposed @ upstream [N*H*W, C_out].
    The rows are split in two halves computed as one batched product (each core takes one) and summed
    in float32."""
    n, h, w, cin = x.shape
    cout = upstream.shape[-1]
    halves = 2 if n is not None and (n * h * w) % 2 == 0 else 1
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    dy = tf.reshape(upstream, [halves, -1, cout])
    taps = []
    for i in range(3):
        for j in range(3):
            shifted = tf.reshape(padded[:, i:i + h, j:j + w, :], [halves, -1, cin])
            taps.append(tf.reduce_sum(tf.cast(tf.matmul(shifted, dy, transpose_a=True), tf.float32), 0))
    return tf.cast(tf.reshape(tf.stack(taps), [3, 3, cin, cout]), x.dtype)


@tf.custom_gradient
def conv3x3_same_matmul_weight_gradient(x, kernel):
    """A 3x3, stride-1, 'same' convolution whose weight gradient is nine matrix products
    (_conv3x3_weight_gradient) instead of oneDNN's kernel. On a CPU with AVX-512 BF16 and no AMX,
    oneDNN computes a bfloat16 convolution's weight gradient with an older kernel at half the rate of
    its forward pass; on small maps with many channels the matrix products are faster (engine.models.
    cpu_step decides where, bench/results/2026-12-05-amd-avx512/matmul-weight-gradient/ has the
    measurements). The forward pass and the input gradient are TensorFlow's own ops."""
    def gradient(upstream):
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream,
                                            strides=[1, 1, 1, 1], padding="SAME")
        return dx, _conv3x3_weight_gradient(x, upstream)
    return tf.nn.conv2d(x, kernel, 1, "SAME"), gradient


@keras.saving.register_keras_serializable(package="engine")
class GELU(keras.layers.Layer):
    """Exact GELU (`gelu_erf`) as a layer.

    With `compiled_training` set (engine.models.cpu_step sets it on CPUs without XLA), a training call
    computes it with `gelu_erf_compiled`: forward and gradient are each one XLA-compiled elementwise
    loop, computed in float32 and rounded once to the layer's dtype, inside a graph that is otherwise
    not compiled (so the convolutions stay in oneDNN); measured in
    bench/results/2026-12-05-amd-avx512/compiled-gelu/. Inference is always `gelu_erf` (an Erf op,
    which exported graphs need)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.compiled_training = False

    def call(self, x, training=None):
        if training and self.compiled_training:
            return gelu_erf_compiled(x)
        return gelu_erf(x)


@keras.saving.register_keras_serializable(package="engine")
class MaxPool2(keras.layers.Layer):
    """2x2 max pooling, stride 2, 'valid' (an odd side loses its last row/column), as
    `keras.layers.MaxPooling2D(2)`, with the same outputs.

    With `xla_training` set (engine.models.cpu_step sets it for --xla runs), training computes it as a
    reshape + reduce_max: its gradient is elementwise work that XLA fuses, where MaxPool's gradient
    (SelectAndScatter) is a slow loop on XLA's CPU backend (bench/results/2026-11-30-airbench-runs/
    has the measurement). Without XLA the native max pool is
    faster (oneDNN), so it is used there, and always at inference: exported graphs keep a MaxPool op
    that ONNX Runtime and TensorRT run fast. The gradients differ only where a window holds tied
    maxima (reduce_max shares the gradient among them, MaxPool gives it to one)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.xla_training = False

    def call(self, x, training=None):
        if not (training and self.xla_training):
            return tf.nn.max_pool2d(x, 2, 2, "VALID")
        h, w, c = x.shape[1] // 2, x.shape[2] // 2, x.shape[3]
        x = x[:, :2 * h, :2 * w, :]
        return tf.reduce_max(tf.reshape(x, [-1, h, 2, w, 2, c]), axis=[2, 4])

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else h // 2, None if w is None else w // 2, c)


def fused_batch_norm_training(layer, inputs):
    """A training call of a `keras.layers.BatchNormalization` on a 4-D NHWC input by TensorFlow's fused
    kernel (FusedBatchNormV3), with the layer's own variables.

    Keras 3 computes a training-mode BatchNorm from separate ops (moments, then scale and shift,
    upcasting bfloat16 inputs to float32 first) and differentiates them op by op; the fused kernel
    computes the statistics in float32 from the input's own dtype and has a fused gradient (faster,
    same results within float32 rounding: bench/results/2026-12-05-amd-avx512/fused-bn/). It updates
    the moving statistics as Keras does (the biased batch variance). engine.models.cpu_step decides
    which calls take it."""
    channels = inputs.shape[-1]
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels], tf.float32)
    offset = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels], tf.float32)
    empty = tf.zeros([0], tf.float32)
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=layer.epsilon,
        data_format="NHWC", is_training=True)
    # the kernel returns the unbiased variance (for PyTorch-style running statistics); Keras keeps the biased
    n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
    variance = variance * (n - 1.0) / n
    m = layer.momentum
    layer.moving_mean.assign(layer.moving_mean * m + tf.stop_gradient(mean) * (1.0 - m))
    layer.moving_variance.assign(layer.moving_variance * m + tf.stop_gradient(variance) * (1.0 - m))
    return tf.cast(y, layer.compute_dtype)
