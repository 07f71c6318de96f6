"""`engine export trt` of a 28x28x1 run: the TensorRT network's input and its optimisation profile are
the run's [H,W,C] (not CIFAR-10's 32x32x3), and the ONNX graph it builds from is written beside the
engine under its own name (X.engine -> X.trt-fp32.onnx), so the fp32 `engine export onnx` file
(model.onnx) is never replaced. A TensorRT engine is run on the images of its profile; a profile off the
contract is one line, not taken for CIFAR-10's 32x32x3.

TensorRT cannot be installed here (no NVIDIA GPU): tests/stand_in_tensorrt.py implements the part of
TensorRT 10's Python API that build_trt_engine calls and records it."""
from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest

from tests.stand_in_tensorrt import StandInTensorRT
from tests.test_trt_runner_contract import ReusingRunner, polygraphy  # noqa: F401 - the stand-in Polygraphy fixture



@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """A tiny run of one epoch on a small 28x28 grayscale mnist.npz."""
    from engine.train import resolve, run
    d = tmp_path_factory.mktemp("trt")
    rng = np.random.default_rng(0)
    y = (np.arange(128) % 10).astype(np.uint8)
    x = rng.integers(0, 256, (128, 28, 28), dtype=np.uint8)
    np.savez(d / "mnist.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    cfg = resolve.defaults("tiny").replace("data", data=str(d / "mnist.npz"), val_images=0) \
        .replace("optim", epochs=1, batch_size=64).replace("run", out=str(d / "run"), amp=False, xla=False, quiet=True)
    run(cfg, log=lambda *a: None)
    return d / "run"


def export(capsys, *args):
    """`engine export ARGS` in this process (where the stand-in TensorRT is): (exit code, stdout, stderr)."""
    from engine.export.cli import main
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


@pytest.fixture
def tensorrt(monkeypatch):
    from engine import devices
    from engine.export import trt
    fake = StandInTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(devices, "gpus", lambda: ["fake GPU"])
    monkeypatch.setattr(devices, "allow_memory_growth", lambda: None)
    monkeypatch.setattr(trt, "gpus", lambda: ["fake GPU"])
    return fake


def test_the_tensorrt_profile_is_the_runs_28x28x1_and_the_fp32_onnx_export_is_untouched(grey_run, tensorrt, capsys):
    p = export(capsys, "onnx", grey_run)
    assert p.returncode == 0, p.stderr
    fp32 = grey_run / "model.onnx"
    before = (fp32.read_bytes(), os.stat(fp32).st_ino, os.stat(fp32).st_mtime_ns)

    for extra in ([], ["--overwrite"]):  # --overwrite replaces the engine and its own ONNX input, nothing else
        p = export(capsys, "trt", grey_run, "--min-batch", "2", "--opt-batch", "16",
                           "--max-batch", "32", *extra)
        assert p.returncode == 0, p.stderr
        assert "uint8 NHWC [N,28,28,1]" in p.stdout
    assert (fp32.read_bytes(), os.stat(fp32).st_ino, os.stat(fp32).st_mtime_ns) == before
    assert (grey_run / "model.engine").read_bytes() == b"plan"
    assert (grey_run / "model.trt-fp32.onnx").is_file()
    assert tensorrt.parsed_inputs == [(-1, 28, 28, 1)] * 2
    assert tensorrt.profiles == [("images", (2, 28, 28, 1), (16, 28, 28, 1), (32, 28, 28, 1))] * 2


def test_a_trt_export_of_another_precision_names_its_onnx_input_by_it(grey_run, tensorrt, capsys, tmp_path):
    p = export(capsys, "trt", grey_run, "--precision", "fp16", "--out", tmp_path / "x.engine")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["timing.cache", "x.engine", "x.trt-fp16.onnx"]
    assert tensorrt.profiles == [("images", (1, 28, 28, 1), (64, 28, 28, 1), (256, 28, 28, 1))]


@pytest.mark.parametrize("image", [(28, 28, 1), (24, 40, 3)])
def test_a_tensorrt_engine_takes_the_images_of_its_profile(polygraphy, monkeypatch, image):
    from engine.runtime import TRTPredictor
    monkeypatch.setattr(ReusingRunner, "profile", ((1, *image), (64, *image), (256, *image)), raising=False)
    monkeypatch.setattr(ReusingRunner, "__init__", _runner_with_profile)
    predictor = TRTPredictor(polygraphy)
    assert predictor.image_shape == image
    x = np.random.default_rng(0).integers(0, 256, (5, *image), dtype=np.uint8)
    assert predictor.predict(x).shape == (5, 10)


def test_a_tensorrt_engine_off_the_contract_is_one_line_not_taken_for_32x32x3(polygraphy, monkeypatch):
    from engine.errors import EngineError
    from engine.runtime import TRTPredictor
    monkeypatch.setattr(ReusingRunner, "profile", ((1, 28, 28, 2), (64, 28, 28, 2), (256, 28, 28, 2)), raising=False)
    monkeypatch.setattr(ReusingRunner, "__init__", _runner_with_profile)
    with pytest.raises(EngineError, match=r"export contract .* largest shape is \[256, 28, 28, 2\]"):
        TRTPredictor(polygraphy)


def _runner_with_profile(self, loader):
    self.buffer = None
    self.engine = types.SimpleNamespace(get_tensor_profile_shape=lambda name, profile: self.profile)
