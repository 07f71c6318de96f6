"""Device kernels: known patterns, equivalence with the Keras layers users know, XLA compilation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from engine import kernels


def xla(fn):
    return tf.function(fn, jit_compile=True)


def batch(n=4, h=32, w=32, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def test_upsample_nearest_known_pattern():
    x = tf.constant(np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1))
    out = kernels.upsample(x, 4, "nearest").numpy()[0, :, :, 0]
    np.testing.assert_array_equal(out, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    assert kernels.upsample(x, 4, "nearest").dtype == tf.uint8  # stays small until normalised


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_upsample_matches_keras_upsampling2d_and_compiles(method):
    x = batch()
    ours = kernels.upsample(x, 64, method)
    keras_out = keras.layers.UpSampling2D(2, interpolation=method)(tf.cast(x, tf.float32))
    np.testing.assert_allclose(tf.cast(ours, tf.float32).numpy(), keras_out.numpy(), atol=1e-4)
    compiled = xla(lambda t: kernels.upsample(t, 64, method))(x)
    np.testing.assert_allclose(tf.cast(compiled, tf.float32).numpy(), keras_out.numpy(), atol=1e-4)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [64, 75, 96, 160, 224])
def test_upsample_matches_eager_resize_under_xla(size, method):
    """Odd factors (96, 160, 224) are where XLA's own ResizeBilinear goes wrong on CPU."""
    x = batch(2)
    ref = tf.image.resize(tf.cast(x, tf.float32), [size, size], method=method).numpy()
    for out in (kernels.upsample(x, size, method), xla(lambda t: kernels.upsample(t, size, method))(x)):
        assert out.shape == (2, size, size, 3)
        np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), ref, atol=1e-3)


def test_upsample_same_size_is_identity():
    x = batch()
    assert kernels.upsample(x, 32) is x


def test_translate_known_shift_constant_padding():
    x = tf.constant(np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5, 1))
    out = kernels.translate(x, tf.constant([1]), tf.constant([-2]), pad=2, pad_mode="constant")
    out = out.numpy()[0, :, :, 0]
    expected = np.zeros((5, 5), np.uint8)
    expected[1:, :3] = x.numpy()[0, :4, 2:, 0]  # content moves down 1, left 2; zeros come in
    np.testing.assert_array_equal(out, expected)


def test_translate_reflect_padding():
    x = tf.constant(np.tile(np.arange(1, 6, dtype=np.uint8), (3, 1)).reshape(1, 3, 5, 1))
    out = kernels.translate(x, tf.constant([0]), tf.constant([2]), pad=2, pad_mode="reflect")
    np.testing.assert_array_equal(out.numpy()[0, 1, :, 0], [3, 2, 1, 2, 3])


def test_random_crop_keeps_size_and_content_window():
    x = batch(64)
    out = xla(lambda t, s: kernels.random_crop(t, s, pad=4, pad_mode="constant"))(x, tf.constant([1, 2]))
    assert out.shape == x.shape and out.dtype == tf.uint8
    xn, on = x.numpy(), out.numpy()
    shifted = 0
    for i in range(len(xn)):
        # each output is the input shifted by some (dy, dx) in [-4, 4]^2 with zero fill
        found = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                ref = np.zeros_like(xn[i])
                src = xn[i][max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)]
                ref[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
                if np.array_equal(ref, on[i]):
                    found = True
                    shifted += (dy, dx) != (0, 0)
                    break
            if found:
                break
        assert found, f"image {i} is not a shifted copy"
    assert shifted > 48  # offsets are random, not all zero


def test_random_flip_flips_about_half_exactly():
    x = batch(200)
    out = xla(kernels.random_flip)(x, tf.constant([3, 4])).numpy()
    xn = x.numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, xn)]
    same = [np.array_equal(o, i) for o, i in zip(out, xn)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 70 < sum(flipped) < 130


def test_augmentation_is_a_function_of_the_seed():
    x = batch(16)
    f = xla(lambda t, s: kernels.random_flip(kernels.random_crop(t, s, 4), s))
    a, b = f(x, tf.constant([5, 6])), f(x, tf.constant([5, 6]))
    c = f(x, tf.constant([5, 7]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


def test_augmentation_keyed_by_index_does_not_depend_on_batch_split():
    """A global batch augmented whole equals its halves augmented apart (two replicas or workers)."""
    x, n = batch(16), 40
    index = tf.constant(np.random.default_rng(7).choice(n, 16, replace=False).astype(np.int32))
    seed = tf.constant([5, 6])
    f = xla(lambda t, i: kernels.random_flip(kernels.random_crop(t, seed, 4, "reflect", i, n), seed, i, n))
    whole = f(x, index).numpy()
    halves = np.concatenate([f(x[:8], index[:8]).numpy(), f(x[8:], index[8:]).numpy()])
    np.testing.assert_array_equal(whole, halves)
    # Keyed by batch position instead, the halves draw the same offsets: a different augmentation.
    g = xla(lambda t: kernels.random_crop(t, seed, 4))
    assert not np.array_equal(g(x).numpy(), np.concatenate([g(x[:8]).numpy(), g(x[8:]).numpy()]))


@pytest.mark.parametrize("mode,keras_fn", [
    ("caffe", keras.applications.vgg16.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
    ("tf", keras.applications.inception_v3.preprocess_input),
])
def test_normalize_matches_keras_applications(mode, keras_fn):
    x = batch(3)
    ours = xla(lambda t: kernels.normalize(t, mode))(x).numpy()
    ref = keras_fn(x.numpy().astype(np.float32))
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-5, atol=1e-4)


def test_normalize_cifar10():
    x = tf.constant(np.full((1, 1, 1, 3), 255, np.uint8))
    out = kernels.normalize(x, "cifar10").numpy().ravel()
    np.testing.assert_allclose(out, (1 - np.array(kernels.normalize.__globals__["CIFAR10_MEAN"]))
                               / np.array(kernels.normalize.__globals__["CIFAR10_STD"]), rtol=1e-6)
    with pytest.raises(ValueError):
        kernels.normalize(x, "nope")


def test_normalize_raw_and_unit_are_the_pixels_as_float():
    x = batch(2)
    np.testing.assert_array_equal(kernels.normalize(x, "raw").numpy(), x.numpy().astype(np.float32))
    np.testing.assert_allclose(kernels.normalize(x, "unit").numpy(), x.numpy() / 255.0, rtol=1e-6)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_preprocess_normalises_then_upsamples_as_upsampling_first_would(method):
    """Normalising first keeps uint8 out of the Gather (GPU kernels, TensorRT); both orders agree."""
    x = batch(2)
    ours = kernels.Preprocess(64, "caffe", method)(x).numpy()
    other = kernels.normalize(kernels.upsample(x, 64, method), "caffe").numpy()
    np.testing.assert_allclose(ours, other, atol=1e-4)
