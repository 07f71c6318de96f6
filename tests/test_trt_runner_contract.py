"""TRTPredictor against a stand-in for Polygraphy's TrtRunner that keeps the contract Polygraphy
documents (backend/base/runner.py, `infer`: "Runners may reuse these output buffers. Thus, if you
need to save outputs from multiple inferences, you should make a copy") and the profile query of a
TensorRT engine (`get_tensor_profile_shape` -> (min, opt, max) shapes). This proves our use of
those contracts; it runs no TensorRT."""
import sys
import types

import numpy as np
import pytest

from engine.errors import EngineError


class ReusingRunner:
    """One host buffer per output, resized in place and returned as a view, as Polygraphy's does."""
    max_batch = 256

    def __init__(self, loader):
        self.buffer = None
        self.engine = types.SimpleNamespace(get_tensor_profile_shape=lambda name, profile: (
            (1, 32, 32, 3), (64, 32, 32, 3), (self.max_batch, 32, 32, 3)))

    def activate(self):
        pass

    def infer(self, feed):
        x = feed["images"]
        logits = x.reshape(len(x), -1)[:, :10].astype(np.float32)  # any per-image function
        if self.buffer is None:
            self.buffer = np.empty(logits.size, np.float32)
        self.buffer.resize(logits.size, refcheck=False)
        self.buffer[:] = logits.ravel()
        return {"logits": self.buffer.reshape(logits.shape)}


@pytest.fixture
def polygraphy(monkeypatch, tmp_path):
    trt = types.ModuleType("polygraphy.backend.trt")
    trt.EngineFromBytes, trt.TrtRunner = (lambda b: b), ReusingRunner
    common = types.ModuleType("polygraphy.backend.common")
    common.BytesFromPath = lambda p: p
    for name, module in {"polygraphy": types.ModuleType("polygraphy"),
                         "polygraphy.backend": types.ModuleType("polygraphy.backend"),
                         "polygraphy.backend.common": common, "polygraphy.backend.trt": trt}.items():
        monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "model.engine"
    path.write_bytes(b"engine")
    return str(path)


def test_logits_of_every_batch_survive_the_runners_buffer_reuse(polygraphy):
    from engine.runtime import TRTPredictor
    x = np.random.default_rng(0).integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
    got = TRTPredictor(polygraphy, batch_size=256).predict(x)
    np.testing.assert_array_equal(got, x.reshape(len(x), -1)[:, :10].astype(np.float32))


def test_batches_follow_the_engines_profile(polygraphy, monkeypatch):
    from engine.runtime import TRTPredictor
    monkeypatch.setattr(ReusingRunner, "max_batch", 64)
    assert TRTPredictor(polygraphy).batch_size == 64  # the default shrinks to the profile's maximum
    with pytest.raises(EngineError, match="above the 64 images .* --max-batch"):
        TRTPredictor(polygraphy, batch_size=128)
