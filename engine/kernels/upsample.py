"""Upsampling of NHWC image batches to a size (H x W, or a square side), on the device (and
downsampling by area averaging, for progressive resizing).

Written as static gathers (nearest) and two small interpolation matmuls (bilinear) rather than
`tf.image.resize`: XLA on CPU (TF 2.21) computes ResizeBilinear wrongly at odd integer factors
(32->96, ->160, ->224 differ from eager by up to 251 grey levels; tests/test_kernels.py), while
these forms are exact under XLA and map to plain Gather/MatMul in ONNX and TensorRT.
"""
import numpy as np
import tensorflow as tf

from engine.contract import UPSAMPLE_METHODS as METHODS


def _source_coords(out_size: int, in_size: int) -> np.ndarray:
    """Half-pixel-centre source coordinate of each output pixel (TF2 / Keras / PyTorch convention)."""
    return (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5


def nearest_indices(out_size: int, in_size: int) -> np.ndarray:
    src = np.floor(_source_coords(out_size, in_size) + 0.5 + 1e-9)
    return np.clip(src, 0, in_size - 1).astype(np.int32)


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] weights: each row mixes the two nearest source pixels, edges clamped."""
    src = np.clip(_source_coords(out_size, in_size), 0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    w = (src - lo).astype(np.float32)
    m = np.zeros((out_size, in_size), np.float32)
    np.add.at(m, (np.arange(out_size), lo), 1.0 - w)
    np.add.at(m, (np.arange(out_size), hi), w)
    return m


def sides(size) -> tuple[int, int]:
    """(height, width) of a size given as one side (a square) or as (height, width)."""
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def upsample(images, size, method="nearest"):
    """Resize `images` [N,H,W,C] (static H, W) to [N,size,size,C], or [N,height,width,C] for a
    `size` of (height, width).

    `nearest` equals Keras's `UpSampling2D` at integer factors (each pixel repeated) and
    `tf.image.resize(method="nearest")` otherwise, and keeps the input dtype (uint8 stays small).
    `bilinear` equals `tf.image.resize(method="bilinear")` (half-pixel centres, no antialiasing)
    and returns float32. Returns the input unchanged when it already has that size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown upsampling method {method!r}; choose from {METHODS}")
    h, w = images.shape[1], images.shape[2]
    out_h, out_w = sides(size)
    if h == out_h and w == out_w:
        return images
    if method == "nearest":
        x = tf.gather(images, nearest_indices(out_h, h), axis=1)
        return tf.gather(x, nearest_indices(out_w, w), axis=2)
    x = tf.cast(images, tf.float32)
    x = tf.einsum("ph,nhwc->npwc", tf.constant(bilinear_matrix(out_h, h)), x)
    return tf.einsum("qw,npwc->npqc", tf.constant(bilinear_matrix(out_w, w)), x)


def area_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] weights of area averaging (out <= in): output pixel o is the mean of the input over
    [o, o + 1) * in / out, each input pixel weighted by how much of it that interval covers."""
    scale = in_size / out_size
    m = np.zeros((out_size, in_size), np.float64)
    for o in range(out_size):
        lo, hi = o * scale, (o + 1) * scale
        for i in range(int(np.floor(lo)), min(in_size, int(np.ceil(hi)))):
            m[o, i] = max(0.0, min(hi, i + 1) - max(lo, i)) / scale
    return m.astype(np.float32)


def downsample(images, size):
    """Shrink float `images` [N,H,W,C] (static H, W >= size) to [N,size,size,C] by area averaging, as
    `tf.image.resize(method="area")`: every input pixel counts (no aliasing), written as two small
    matmuls (exact under XLA, as `upsample`). Returns the input unchanged when it already has that size."""
    h, w = images.shape[1], images.shape[2]
    if h == size and w == size:
        return images
    if size > h or size > w:
        raise ValueError(f"downsample: {size} is larger than the images' {h}x{w}")
    x = tf.einsum("ph,nhwc->npwc", tf.constant(area_matrix(size, h), images.dtype), images)
    return tf.einsum("qw,npwc->npqc", tf.constant(area_matrix(size, w), images.dtype), x)
