"""Your own model under mixed precision (engine.models.user): its layers compute in the run's policy,
but a final softmax, and the log that turns its probabilities into logits, stay in float32, as do the
layers a mixed-precision model pinned to float32. Checked under mixed_float16 (--amp on GPUs of compute
capability 7.x) on this CPU: the same Keras layers and casts a GPU runs; GPU float16 kernels are not."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine import models
from engine.models import user
from engine.train.loop import smoothed_cross_entropy


@pytest.fixture
def policy():
    """Sets the global policy for the test (as precision.apply does for a run), float32 afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def confident_softmax_file(path):
    """GAP -> Dense(10) -> float32 softmax, saved in float32, with logits spread over ~40 for the
    constant images below: probabilities down to 1e-15, far below float16's smallest (6e-8)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(stddev=2.5, seed=1))(x)
    keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(x)).save(path)
    return str(path)


def policies(model) -> dict:
    return {layer.name: layer.dtype_policy.name for layer in user._all_layers(model)}


def test_a_confident_softmax_model_trains_with_finite_scaled_gradients_under_float16(tmp_path, policy):
    """Its probabilities used to be rounded to float16 twice before the log (the softmax rebuilt in
    float16, then the log's layer casting its input to float16): the small ones became log 1e-30 =
    -69.1 with no gradient, and those just above float16's floor overflowed the scaled gradient, so
    the loss scaler skipped the step. The log-probabilities are now float32's, and the gradients at
    Keras's initial loss scale 2^15 finite."""
    path = confident_softmax_file(tmp_path / "net.keras")
    rng = np.random.default_rng(0)
    images = tf.constant(np.broadcast_to(rng.normal(size=(64, 1, 1, 3)), (64, 32, 32, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, 64).astype(np.int32))
    policy("mixed_float16")
    model = models.build(path, 32, 10)  # what `engine train --model net.keras` builds under float16
    loaded = user.load(path)
    assert loaded.layers[-1].dtype_policy.name == "float32"  # the final softmax
    assert loaded.layers[-2].dtype_policy.name == "mixed_float16"  # the Dense before it
    log = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Lambda)]
    assert [layer.compute_dtype for layer in log] == ["float32"]
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_sum(smoothed_cross_entropy(labels, logits, 10, 0.2)) / 512
        scaled = loss * 2.0 ** 15  # LossScaleOptimizer.scale_loss at Keras's initial scale
    grads = tape.gradient(scaled, model.trainable_variables)
    assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
    smallest = float(tf.reduce_min(logits))
    assert -60 < smallest < -20  # confident, and not clamped at log(1e-30) = -69.1
    expected = tf.nn.log_softmax(keras.saving.load_model(path, compile=False).layers[-2](
        tf.reduce_mean(images, axis=[1, 2])))  # the float32 model's own log-probabilities
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=0.02, atol=0.2)  # float16 Dense


def test_layers_pinned_to_float32_in_a_mixed_precision_model_stay_float32(tmp_path, policy):
    """A model built under a mixed policy says which layers it wants in float32: they keep it, the
    others take the run's policy (here mixed_float16, from a file saved in mixed_bfloat16), and its
    final softmax is float32 even where it was not pinned. Without --amp every layer is float32."""
    policy("mixed_bfloat16")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.BatchNormalization(dtype="float32", name="bn")(x))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x)).save(tmp_path / "m.keras")
    policy("mixed_float16")
    got = policies(user.load(str(tmp_path / "m.keras")))
    assert {k: got[k] for k in ("conv", "bn", "pool", "head")} == {
        "conv": "mixed_float16", "bn": "float32", "pool": "mixed_float16", "head": "float32"}
    policy("float32")
    assert set(policies(user.load(str(tmp_path / "m.keras"))).values()) == {"float32"}


def test_a_functions_final_softmax_is_float32_under_mixed_precision(tmp_path, policy, monkeypatch):
    """`--model pkg.module:function` builds its model under the run's policy: its final softmax, unless
    pinned, would compute in float16; it is rebuilt in float32, the rest as the function made it."""
    (tmp_path / "softmaxnets.py").write_text(
        "import keras\n"
        "def net():\n"
        "    inputs = keras.Input((32, 32, 3))\n"
        "    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name='conv')(inputs))\n"
        "    return keras.Model(inputs, keras.layers.Dense(10, activation='softmax', name='head')(x))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "softmaxnets", raising=False)
    policy("mixed_float16")
    model = user.load("softmaxnets:net")
    assert (policies(model)["conv"], policies(model)["head"]) == ("mixed_float16", "float32")
    assert model(np.zeros((1, 32, 32, 3), np.float32)).dtype == "float32"
