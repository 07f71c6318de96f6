"""Augmentation on batches of NHWC images, driven by stateless seeds.

A seed is an int32/int64 tensor of shape [2]; the same seed gives the same augmentation on any
device and under XLA (which ignores the seeds of stateful RNG ops). The training loop derives a
seed from (run seed, step), so the augmentation of step N does not depend on how steps are grouped
into calls or on whether the run was resumed. Given each image's `index` in the training set (and
the set's size), the random draws are made per training image and looked up by index, so an image's
augmentation does not depend on which batch position or replica it lands on either: a global batch
split over 1 or N replicas is augmented identically.
"""
import tensorflow as tf


def translate(images, dy, dx, pad, pad_mode="reflect"):
    """Shift each image by its own (dy[i], dx[i]) pixels, each in [-pad, pad], keeping the size.

    The padded border is filled by reflection or with zeros. Implemented as two batched gathers so
    it compiles under XLA and works on uint8 (4x fewer bytes to move than float32).
    """
    if pad == 0:
        return images
    mode = {"reflect": "REFLECT", "constant": "CONSTANT"}[pad_mode]
    dtype = images.dtype
    # TensorFlow has no GPU kernel for uint8 GatherV2 or MirrorPad: without XLA those ops would run
    # on the host, with copies every step. float16 holds every uint8 value exactly and has both.
    x = tf.cast(images, tf.float16) if dtype == tf.uint8 else images
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode=mode)
    rows = tf.range(h)[None, :] + pad - tf.cast(dy, tf.int32)[:, None]  # [N, H]
    cols = tf.range(w)[None, :] + pad - tf.cast(dx, tf.int32)[:, None]  # [N, W]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # [N, H, W+2p, C]
    out = tf.gather(out, cols, axis=2, batch_dims=1)     # [N, H, W, C]
    return tf.cast(out, dtype) if dtype == tf.uint8 else out


def _uniform(rows, images, seed, index, num_images, **kw):
    """[rows, N] stateless uniform draws for a batch: by batch position, or (given `index` and
    `num_images`) drawn for the whole training set and gathered by each image's index."""
    if index is None:
        return tf.random.stateless_uniform([rows, tf.shape(images)[0]], seed, **kw)
    return tf.gather(tf.random.stateless_uniform([rows, num_images], seed, **kw), index, axis=1)


def random_crop(images, seed, pad=4, pad_mode="reflect", index=None, num_images=0):
    """Pad by `pad` pixels and crop back to the input size at a random offset per image."""
    if pad == 0:
        return images
    offsets = _uniform(2, images, seed, index, num_images, minval=-pad, maxval=pad + 1, dtype=tf.int32)
    return translate(images, offsets[0], offsets[1], pad, pad_mode)


def flip_left_right(images):
    return tf.reverse(images, axis=[2])


def random_flip(images, seed, index=None, num_images=0):
    """Mirror a random half (in expectation) of the images left-right."""
    mask = _uniform(1, images, seed, index, num_images)[0] < 0.5
    return tf.where(mask[:, None, None, None], flip_left_right(images), images)


def alternating_flip(images, index, epoch, seed, num_images):
    """airbench's "alternating flip": a fixed random half of the data set (drawn once from `seed`) is
    mirrored on even epochs, and exactly the other half on odd epochs, so every image is seen both
    ways in every pair of epochs (independent flips leave ~25% of images one way for two epochs).

    `index` is each image's position in the training set, `epoch` the 0-based epoch.
    """
    base = _uniform(1, images, seed, index, num_images)[0] < 0.5
    odd = tf.equal(tf.math.floormod(tf.cast(epoch, tf.int64), 2), 1)
    mask = tf.math.logical_xor(base, odd)
    return tf.where(mask[:, None, None, None], flip_left_right(images), images)


def color_jitter(images, seed, brightness=0.0, contrast=0.0, index=None, num_images=0):
    """Per-image colour jitter of float images (the model's input: after normalisation), as hiverge's
    CIFAR-10 speedrun: add a shift drawn from [-brightness, brightness], then multiply by a factor
    drawn from [1 - contrast, 1 + contrast] (around the input's zero: the data set's mean for the
    cifar10 normalisation). One fused elementwise pass over the batch."""
    if not brightness and not contrast:
        return images
    draws = _uniform(2, images, seed, index, num_images, minval=-1.0, maxval=1.0)
    shift = tf.cast(draws[0] * brightness, images.dtype)[:, None, None, None]
    scale = tf.cast(1.0 + draws[1] * contrast, images.dtype)[:, None, None, None]
    return (images + shift) * scale
