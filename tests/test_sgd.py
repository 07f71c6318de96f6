"""TorchSGD follows PyTorch's SGD rule (buffer of gradients, scaled by the LR of the step that applies
it), which differs from Keras's SGD as soon as the learning rate changes."""
import json

import keras
import numpy as np
import pytest

from engine import config as C
from engine.train import resolve
from engine.train.optim import TorchSGD


class Falling(keras.optimizers.schedules.LearningRateSchedule):
    """lr = 1.0, 0.7, 0.4, 0.1 for steps 0..3: a fast-changing schedule."""

    def __call__(self, step):
        return 1.0 - 0.3 * keras.ops.cast(step, "float32")


GRADS = [np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32),
         np.array([-1.0, 3.0], np.float32), np.array([2.0, 0.0], np.float32)]


def torch_rule(nesterov, mu=0.85):
    """torch.optim.SGD(momentum=mu, nesterov=...) written out: buf = mu*buf + g (buf = g at the first
    step), p -= lr * (g + mu*buf) with Nesterov, p -= lr * buf without."""
    p, buf = np.array([0.3, -0.1]), None
    for t, g in enumerate(GRADS):
        lr = 1.0 - 0.3 * t
        buf = g.copy() if buf is None else mu * buf + g
        p = p - lr * ((g + mu * buf) if nesterov else buf)
    return p


def run(opt):
    v = keras.Variable(np.array([0.3, -0.1], np.float32))
    for g in GRADS:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), v)])
    return v.numpy()


@pytest.mark.parametrize("nesterov", [True, False])
def test_torch_sgd_follows_pytorchs_rule_under_a_changing_lr(nesterov):
    ours = run(TorchSGD(learning_rate=Falling(), momentum=0.85, nesterov=nesterov))
    np.testing.assert_allclose(ours, torch_rule(nesterov), rtol=1e-5)
    keras_sgd = run(keras.optimizers.SGD(learning_rate=Falling(), momentum=0.85, nesterov=nesterov))
    assert np.abs(keras_sgd - torch_rule(nesterov)).max() > 0.1  # the convention matters here


def test_torch_sgd_equals_keras_sgd_at_a_constant_lr():
    a = run(TorchSGD(learning_rate=0.1, momentum=0.9, nesterov=True))
    b = run(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True))
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_recipes_choose_the_momentum_convention_of_their_source():
    assert resolve.defaults("airbench").optim.sgd_momentum == "pytorch"
    assert resolve.defaults("resnet9").optim.sgd_momentum == "keras"


def test_a_run_saved_before_the_flag_existed_resumes_with_keras_momentum(tmp_path):
    d = resolve.defaults("airbench").to_dict()
    del d["optim"]["sgd_momentum"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    assert C.Config.load(str(path)).optim.sgd_momentum == "keras"
    assert ("optim", "sgd_momentum") in C.RESUME_FIXED
