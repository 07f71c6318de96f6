"""Upsampling of NHWC image batches to a square size, on the device."""
import tensorflow as tf

METHODS = ("nearest", "bilinear")


def upsample(images, size, method="nearest"):
    """Resize `images` [N,H,W,C] to [N,size,size,C].

    `nearest` at an integer factor repeats each pixel factor x factor times, exactly as Keras's
    `UpSampling2D` does; `bilinear` uses half-pixel centres without antialiasing (what
    `UpSampling2D(interpolation="bilinear")` and `tf.image.resize` do). Returns the input unchanged
    when it already has that size. The output dtype is float32 for bilinear, the input's for nearest.
    """
    if method not in METHODS:
        raise ValueError(f"unknown upsampling method {method!r}; choose from {METHODS}")
    h, w = images.shape[1], images.shape[2]
    if h == size and w == size:
        return images
    if method == "nearest":
        if h and w and size % h == 0 and size % w == 0:
            fy, fx = size // h, size // w
            x = tf.repeat(images, fy, axis=1)
            return tf.repeat(x, fx, axis=2)
        return tf.image.resize(images, [size, size], method="nearest")
    return tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear")
