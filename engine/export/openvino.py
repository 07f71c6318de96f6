"""OpenVINO IR export (`model.xml` + `model.bin`): converted from the parity-checked fp32 ONNX graph
with `openvino.convert_model`, the same uint8 NHWC -> float32 logits contract and metadata (in the
IR's rt_info, under "engine"); int8 by NNCF post-training quantization calibrated on class-balanced
training images. Checked with OpenVINO's CPU runtime before anything is written, and written
whole or not at all (both files)."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
import tensorflow as tf

from engine import files
from engine.contract import OPENVINO_RT_INFO, OUTPUT
from engine.errors import EngineError
from engine.export import OPENVINO_PRECISIONS, openvino_weights
from engine.export.load import Exportable, writing
from engine.export.onnx import PARITY, _fp32_onnx



def require_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise EngineError("OpenVINO is not installed: pip install -e '.[openvino]'") from None
    return ov


def export_openvino(exp: Exportable, out: str, overwrite: bool = False, precision: str = "fp32",
                    calib_images=None) -> str:
    """IR in fp32, or int8 (NNCF, on `calib_images`), with the export's metadata."""
    ov = require_openvino()
    if precision not in OPENVINO_PRECISIONS:
        raise EngineError(f"OpenVINO export: --precision {precision}; choose from {', '.join(OPENVINO_PRECISIONS)}")
    files.claim_output(openvino_weights(out), overwrite)
    files.claim_output(out, overwrite)
    check = np.random.default_rng(0).integers(0, 256, (8, *exp.image_shape), dtype=np.uint8)
    reference = exp.serve_fn()(tf.constant(check))[OUTPUT].numpy()
    proto = _fp32_onnx(exp, check, reference)
    with tempfile.TemporaryDirectory(prefix="engine-ov-") as d:
        path = os.path.join(d, "fp32.onnx")
        onnx.save(proto, path)
        model = ov.convert_model(path)
    meta = dict(exp.metadata, precision=precision)
    if precision == "int8":
        if calib_images is None or len(calib_images) == 0:
            raise EngineError("int8 export needs calibration images (--calib-images N)")
        model = quantize(model, calib_images)
        meta["calibration"] = {"images": len(calib_images), "method": "NNCF post-training quantization"}
    logits = compile_cpu(ov, model, "f32")(check)[0]
    err = float(np.max(np.abs(logits - reference)))
    if precision == "fp32" and not err <= PARITY:
        raise EngineError(f"OpenVINO export disagrees with TensorFlow (max |dlogit| {err:.3g}); not written")
    if logits.dtype != np.float32 or logits.shape != reference.shape or not np.all(np.isfinite(logits)):
        raise EngineError(f"the OpenVINO {precision} model does not keep the contract ({logits.dtype} "
                          f"{logits.shape}); not written")
    for k, v in meta.items():
        model.set_rt_info(v if isinstance(v, str) else json.dumps(v), [OPENVINO_RT_INFO, k])
    with writing(out):
        _save(ov, model, out)
    return out


def quantize(model, calib_images):
    """NNCF's post-training quantization (its default preset: symmetric int8 weights and
    activations, per-channel weights), calibrated on `calib_images` in batches of 64."""
    import nncf
    batches = [calib_images[i:i + 64] for i in range(0, len(calib_images), 64)]
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(calib_images))


def compile_cpu(ov, model, precision: str):
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})


def _save(ov, model, out: str) -> None:
    """Both files into a temporary folder beside `out`, then moved into place: the weights first, so
    that a .xml that exists always has its .bin."""
    folder = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(prefix=".engine-ov-", dir=folder) as d:
        tmp = os.path.join(d, "model.xml")
        ov.save_model(model, tmp, compress_to_fp16=False)
        for made, final in ((openvino_weights(tmp), openvino_weights(out)), (tmp, out)):
            files.apply_umask(made)
            files.replace(made, final)
