"""Layers the model families share."""
import keras
import tensorflow as tf


SQRT_HALF = 0.7071067811865476


@keras.saving.register_keras_serializable(package="engine")
def gelu_erf(x):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as PyTorch's nn.GELU. Keras's gelu is the same
    function, but TensorFlow writes it with erfc, which ONNX has no op for: this form exports (Erf)."""
    return 0.5 * x * (1.0 + tf.math.erf(x * SQRT_HALF))


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
