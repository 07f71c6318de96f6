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


# where the matmul weight gradient was measured faster than oneDNN's bfloat16 kernel: maps of H*W <= 64
# (3x3, 4x4, 7x7, 8x8; not faster at 10x10, 15x15, 16x16) with >= 128 input and output channels (slower at 64)
MATMUL_WEIGHT_GRADIENT_MAX_MAP = 64
MATMUL_WEIGHT_GRADIENT_MIN_CHANNELS = 128


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
def _conv3x3_same(x, kernel):
    def gradient(upstream):
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream,
                                            strides=[1, 1, 1, 1], padding="SAME")
        return dx, _conv3x3_weight_gradient(x, upstream)
    return tf.nn.conv2d(x, kernel, 1, "SAME"), gradient


def matmul_weight_gradient(layer) -> None:
    """Give a 3x3, stride-1, 'same' `keras.layers.Conv2D` a weight gradient computed as matrix products
    where oneDNN's bfloat16 kernel for it is slow: in bfloat16, on small maps (H*W <= 64) with at least
    128 input and output channels.

    On a CPU with AVX-512 BF16 and no AMX, oneDNN computes a bfloat16 convolution's weight gradient with
    an older kernel at half the rate of its forward pass (a 2-core AMD EPYC, Zen 5: 456 against 940
    GFLOP/s over airbench's step; 228 at its 3x3 maps). As matrix products, [1024, 7, 7, 256] -> 256
    took 90 instead of 109 ms, [1024, 3, 3, 256] 21 instead of 62 ms, [128, 8, 8, 256] -> 512 28 instead
    of 54 ms; at [1024, 15, 15, 64] -> 256, [128, 16, 16, 128] -> 128 and [128, 8, 8, 64] -> 64 they were
    slower, so larger maps and narrow layers keep oneDNN's kernel. The forward pass and the input gradient are
    TensorFlow's own ops, and the layer, its variables and its config are unchanged; other dtypes,
    shapes and layer settings take Keras's own path."""
    if not (tuple(layer.kernel_size) == (3, 3) and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1) and layer.padding == "same" and layer.groups == 1
            and layer.data_format == "channels_last"):
        return
    stock = layer.convolution_op

    def convolution_op(inputs, kernel):
        h, w, channels = inputs.shape[1], inputs.shape[2], min(inputs.shape[3] or 0, kernel.shape[3])
        if inputs.dtype != tf.bfloat16 or h is None or w is None or h * w > MATMUL_WEIGHT_GRADIENT_MAX_MAP \
                or channels < MATMUL_WEIGHT_GRADIENT_MIN_CHANNELS:
            return stock(inputs, kernel)
        return _conv3x3_same(inputs, tf.cast(kernel, inputs.dtype))

    layer.convolution_op = convolution_op


@keras.saving.register_keras_serializable(package="engine")
class GELU(keras.layers.Layer):
    """Exact GELU (`gelu_erf`) as a layer.

    With `compiled_training` set (`models.build` sets it on CPUs without XLA), a training call computes
    it with `gelu_erf_compiled`: forward and gradient are each one XLA-compiled elementwise loop,
    computed in float32 and rounded once to the layer's dtype, inside a graph that is otherwise not
    compiled (so the convolutions stay in oneDNN). Measured on a 2-core AMD EPYC (Zen 5), bfloat16
    [1024, 15, 15, 256], forward and backward: 108 -> 42 ms. Inference is always `gelu_erf` (an Erf op,
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

    With `xla_training` set (the trainer sets it for --xla runs), training computes it as a reshape +
    reduce_max: its gradient is elementwise work that XLA fuses, where MaxPool's gradient
    (SelectAndScatter) is a slow loop on XLA's CPU backend. Measured on the 2-core CPU: airbench
    under --xla at batch 1024 went from ~105-109 to 135.6 img/s. Without XLA the native max pool is
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


def fuse_batch_norm_training(layer) -> None:
    """Train a `keras.layers.BatchNormalization` with TensorFlow's fused kernel (FusedBatchNormV3).

    Keras 3 computes a training-mode BatchNorm from separate ops (moments, then scale and shift,
    upcasting bfloat16 inputs to float32 first) and differentiates them op by op; the fused kernel
    computes the statistics in float32 from the input's own dtype and has a fused gradient. Measured on
    a 2-core AMD EPYC (Zen 5), [1024, 32, 32, 64], forward and backward: 324 -> 82 ms in float32,
    250 -> 65 ms in bfloat16, same results within float32 rounding. The layer, its variables and its
    config are unchanged (a saved model is plain Keras); only a training call of a 4-D NHWC input with
    no mask, renorm or cross-replica statistics takes the fused form, and it updates the moving
    statistics as Keras does (the biased batch variance). Inference is Keras's own call."""
    stock = layer.call

    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable and mask is None and not layer.renorm and not layer.synchronized
                and len(inputs.shape) == 4 and layer.axis in (-1, 3)):
            return stock(inputs, training=training, mask=mask)
        return _fused_training_call(layer, inputs)

    layer.call = call


def _fused_training_call(layer, inputs):
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
