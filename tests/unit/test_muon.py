"""engine.train.muon against a reference written here from airbench94_muon's definition, in NumPy
float64 and in PyTorch's layout ([C_out, C_in, k, k] filters), so that the Keras-layout reshape is
checked too."""
import numpy as np
import keras
import tensorflow as tf

from engine.train.muon import Muon, newton_schulz
from engine.train.optim import PiecewiseLinear

A, B, C = 3.4445, -4.7750, 2.0315


def ns_reference(g, steps=3, eps=1e-7):
    x = g / (np.linalg.norm(g) + eps)
    if g.shape[0] > g.shape[1]:
        x = x.T
    for _ in range(steps):
        a = x @ x.T
        x = A * x + (B * a + C * a @ a) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def to_torch(kernel):   # Keras [k, k, in, out] -> PyTorch [out, in, k, k]
    return kernel.transpose(3, 2, 0, 1)


def from_torch(weight):
    return weight.transpose(2, 3, 1, 0)


def test_newton_schulz_is_the_quintic_iteration_and_nearly_orthogonalises():
    rng = np.random.default_rng(0)
    for shape in [(6, 20), (20, 6), (8, 8)]:
        g = rng.normal(size=shape)
        got = newton_schulz(tf.constant(g, tf.float32)).numpy()
        np.testing.assert_allclose(got, ns_reference(g), rtol=1e-4, atol=1e-5)
        # the singular values pulled together toward 1 (three steps do not get all the way there)
        s, s0 = np.linalg.svd(got, compute_uv=False), np.linalg.svd(g, compute_uv=False)
        assert s.max() < 1.6 and s.max() / s.min() < s0.max() / s0.min(), (s, s0)


def test_muon_steps_match_the_reference_definition():
    rng = np.random.default_rng(1)
    lr, mu, aux_lr, aux_mu, bias_scale, wd, total, horizon = 0.24, 0.6, 50.0, 0.85, 0.1, 0.004, 10, 4
    filt0 = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)
    bias0 = rng.normal(size=(8,)).astype(np.float32)
    head0 = rng.normal(size=(8, 3)).astype(np.float32)
    stem0 = rng.normal(size=(8,)).astype(np.float32)
    filt, bias, head, stem = (keras.Variable(x, name=n) for x, n in
                              [(filt0, "filt"), (bias0, "bias"), (head0, "head"), (stem0, "stem")])
    opt = Muon(PiecewiseLinear([0, 0, total], [lr, lr, 0.0]), peak_lr=lr, momentum=mu, nesterov=True,
               aux_lr=aux_lr, aux_momentum=aux_mu, bias_lr_scale=bias_scale, weight_decay=wd,
               horizons={stem.path: horizon})
    variables = [filt, bias, head, stem]
    opt.build(variables)

    w = to_torch(filt0).astype(np.float64)
    ref = {"bias": bias0.astype(np.float64), "head": head0.astype(np.float64), "stem": stem0.astype(np.float64)}
    bufs = {k: 0.0 for k in ["filt", *ref]}
    for step in range(6):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        frac = 1 - step / total
        # Muon on the filter, as the reference's Muon.step does it on a PyTorch weight
        g = to_torch(grads[0]).astype(np.float64)
        bufs["filt"] = mu * bufs["filt"] + g
        u = g + mu * bufs["filt"]
        w = w * np.sqrt(len(w)) / np.linalg.norm(w)
        w = w - lr * frac * ns_reference(u.reshape(len(u), -1)).reshape(u.shape)
        # PyTorch SGD (Nesterov, weight_decay = wd / group LR) on the rest
        for name, grad, peak, f in [("bias", grads[1], aux_lr * bias_scale, frac),
                                    ("head", grads[2], aux_lr, frac),
                                    ("stem", grads[3], aux_lr * bias_scale, max(0.0, 1 - step / horizon))]:
            d = grad + (wd / peak) * ref[name]
            bufs[name] = aux_mu * bufs[name] + d
            ref[name] = ref[name] - peak * f * (d + aux_mu * bufs[name])
    np.testing.assert_allclose(filt.numpy(), from_torch(w), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(bias.numpy(), ref["bias"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(head.numpy(), ref["head"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(stem.numpy(), ref["stem"], rtol=1e-4, atol=1e-4)


def test_the_filter_step_does_not_depend_on_the_gradients_scale():
    """Muon normalises the momentum before orthogonalising: a 1000x larger loss gives the same step
    (why the reference's summed loss needs no LR conversion for Muon)."""
    rng = np.random.default_rng(2)
    k0 = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    g = rng.normal(size=k0.shape).astype(np.float32)
    out = []
    for scale in (1.0, 1000.0):
        v = keras.Variable(k0)
        opt = Muon(PiecewiseLinear([0], [0.1]), peak_lr=0.1)
        opt.build([v])
        opt.apply_gradients([(tf.constant(g * scale), v)])
        out.append(v.numpy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(out[0], k0 * np.sqrt(4) / np.linalg.norm(k0))  # it did step
