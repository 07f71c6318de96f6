"""fp16 and int8 ONNX (the TensorRT inputs), verified with onnxruntime on all 10,000 real test images
for a model trained in the test: fp16 agrees with fp32 on >= 99.5% of top-1 answers; int8 (calibrated on
training images) loses <= 1 point of accuracy, and a deliberately broken calibration misses that bar."""
import json

import keras
import numpy as np
import onnx
import pytest

from engine.export.load import load_run
from engine.export.onnx import calibration_images, export_onnx
from engine.train.resolve import defaults
from engine.evaluate import agreement
from engine.runtime import ONNXPredictor
from engine.train.trainer import Trainer
from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data, shared_splits):
    out = tmp_path_factory.mktemp("quant") / "run"
    cfg = defaults("tiny").replace("data", data=shared_data, limit=10000, limit_test=500)
    cfg = cfg.replace("optim", batch_size=128, epochs=4, lr=0.4)
    Trainer(cfg.replace("run", out=str(out), quiet=True), log=lambda *a: None).run()
    keras.mixed_precision.set_global_policy("float32")
    exp = load_run(str(out))
    fp32 = export_onnx(exp, str(out / "fp32.onnx"))
    x, y = shared_splits.x_test, shared_splits.y_test
    logits = ONNXPredictor(fp32).predict(x)
    acc = float(np.mean(logits.argmax(1) == y))
    assert acc > 0.4, acc  # measured ~0.5: a model whose accuracy can drop
    return {"run": out, "exp": exp, "x": x, "y": y, "logits": logits, "acc": acc}


def int8_accuracy(t, path):
    # "basic": Q/DQ kept exact, as TensorRT computes it (see engine.runtime.ONNXPredictor)
    return float(np.mean(ONNXPredictor(path, optimization="basic").predict(t["x"]).argmax(1) == t["y"]))


def test_fp16_agrees_with_fp32(trained, tmp_path):
    path = export_onnx(trained["exp"], str(tmp_path / "fp16.onnx"), precision="fp16")
    m = onnx.load(path)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16_weights = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) >= 4  # conv and dense weights really are half precision
    a = agreement(trained["logits"], ONNXPredictor(path).predict(trained["x"]))
    assert a["top1_agreement"] >= 0.995, a
    assert {p.key: p.value for p in m.metadata_props}["precision"] == "fp16"


def test_int8_loses_at_most_one_point(trained, tmp_path, shared_data):
    calib = calibration_images(trained["exp"], 512, shared_data)
    path = export_onnx(trained["exp"], str(tmp_path / "int8.onnx"), precision="int8",
                              calib_images=calib)
    m = onnx.load(path)
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    zero_points = [i for i in m.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)  # symmetric
    dtypes = {onnx.numpy_helper.to_array(z).dtype for z in zero_points}
    assert dtypes == {np.dtype(np.int8)}  # no int32 bias DequantizeLinear: TensorRT takes INT8/FP8/INT4 only
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["calibration"]) == {"images": 512, "method": "minmax", "per_channel": True}
    drop = trained["acc"] - int8_accuracy(trained, path)
    assert drop <= 0.01, drop


def test_int8_cpu_target_keeps_accuracy_in_onnxruntimes_fused_kernels(trained, tmp_path, shared_data):
    """The CPU form (uint8 activations, 7-bit weights) run the fast way: ORT's full graph optimisation,
    which fuses Q/DQ into its int8 kernels."""
    calib = calibration_images(trained["exp"], 512, shared_data)
    path = export_onnx(trained["exp"], str(tmp_path / "int8-cpu.onnx"), precision="int8",
                              calib_images=calib, int8_target="cpu")
    m = onnx.load(path)
    zero_points = {onnx.numpy_helper.to_array(i).dtype for i in m.graph.initializer if i.name.endswith("zero_point")}
    assert np.dtype(np.uint8) in zero_points  # asymmetric uint8 activations
    assert {p.key: p.value for p in m.metadata_props}["int8_target"] == "cpu"
    fused = float(np.mean(ONNXPredictor(path, optimization="all").predict(trained["x"]).argmax(1) == trained["y"]))
    assert trained["acc"] - fused <= 0.01, (trained["acc"], fused)


def test_broken_calibration_fails_the_bar(trained, tmp_path, shared_splits):
    """One image of one class as the whole calibration set: activation ranges are far too narrow."""
    one = shared_splits.x_train[shared_splits.y_train == 0][:1]
    path = export_onnx(trained["exp"], str(tmp_path / "bad.onnx"), precision="int8", calib_images=one)
    drop = trained["acc"] - int8_accuracy(trained, path)
    assert drop > 0.01, drop


def test_int8_cli_and_bad_calibration_flag(trained, tmp_path, shared_data):
    out = tmp_path / "cli-int8.onnx"
    p = run_cli("engine.export", "onnx", trained["run"], "--out", out, "--precision", "int8",
            "--calib-images", 256, "--calib-method", "percentile", "--data", shared_data)
    assert p.returncode == 0, p.stderr
    meta = {q.key: q.value for q in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["calibration"])["method"] == "percentile"
    assert_one_line_error(run_cli("engine.export", "onnx", trained["run"], "--out", tmp_path / "x.onnx",
                       "--precision", "int8", "--calib-images", 0), "--calib-images must be at least 1")
