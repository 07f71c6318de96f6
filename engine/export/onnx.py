"""ONNX export: fp32 from tf2onnx, optionally simplified, then fp16 or int8 Q/DQ, each checked
against TensorFlow (fp32) or against the contract (fp16/int8) before anything is written."""
from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import onnx
import tensorflow as tf

from engine import data as data_mod
from engine import files
from engine.config import default_cache_dir
from engine.contract import INPUT, OUTPUT
from engine.errors import EngineError
from engine import devices
from engine.export import INT8_TARGETS, OPSET, PRECISIONS, cpu_int8_weights
from engine.export.load import Exportable, writing

PARITY = 1e-3  # max |dlogit| an exported graph may differ from TensorFlow by


def _parity_error(proto, reference, images) -> float:
    """max |dlogit| between the ONNX graph (onnxruntime) and the reference logits on `images`."""
    return float(np.max(np.abs(_run_onnx(proto, images) - reference)))


def _fp32_onnx(exp: Exportable, check_images, reference):
    """tf2onnx at opset 17 from the float32 serving function, checked with onnx.checker and against
    TensorFlow with onnxruntime (max |dlogit| <= PARITY)."""
    import tf2onnx
    serve = exp.serve_fn()
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET)
    onnx.checker.check_model(proto)
    err = _parity_error(proto, reference, check_images)
    if not err <= PARITY:
        raise EngineError(f"ONNX export disagrees with TensorFlow (max |dlogit| {err:.3g}); not written")
    return proto


def simplify(proto, check_images, reference):
    """onnxslim's graph simplification (constant folding, fusing, dead-node removal), kept only if
    the simplified graph still agrees with TensorFlow (max |dlogit| <= PARITY); otherwise the
    original graph is returned with a warning. Returns (proto, note for the metadata)."""
    import onnxslim
    try:
        slim = onnxslim.slim(proto)
        onnx.checker.check_model(slim)
        err = _parity_error(slim, reference, check_images)
    except Exception as e:  # noqa: BLE001 - any failure means: keep the graph we checked
        print(f"warning: onnxslim failed ({type(e).__name__}); exporting the unsimplified graph", file=sys.stderr)
        return proto, "no (onnxslim failed)"
    if not err <= PARITY:
        print(f"warning: the simplified graph disagrees with TensorFlow (max |dlogit| {err:.3g}); "
              f"exporting the unsimplified graph", file=sys.stderr)
        return proto, "no (lost parity)"
    return slim, f"onnxslim {onnxslim.__version__}: {len(proto.graph.node)} -> {len(slim.graph.node)} nodes"


def _run_onnx(proto, images):
    import onnxruntime as ort
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: images})[0]


def to_fp16(proto):
    """Weights and activations in float16; the graph's input (uint8) and output (float32 logits)
    stay as the contract says (`keep_io_types`)."""
    from onnxconverter_common import float16
    # Cast nodes stay as they are: the converter retypes a Cast's output to float16 without changing
    # its `to` attribute (uint8 -> float), which onnxruntime rejects; blocked, it adds its own casts.
    return float16.convert_float_to_float16(
        proto, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + ["Cast"])



def to_int8(proto, calib_images, method: str = "minmax", per_channel: bool = True, target: str = "trt",
            cpu_weights: str = "7-bit"):
    """Static post-training quantization to Q/DQ, calibrated on `calib_images` (uint8 training images,
    never test images). Weights are symmetric int8 (per-channel unless told otherwise).

    target "trt": symmetric int8 activations, full-range weights, float biases -- the form TensorRT
    consumes.
    target "cpu": for onnxruntime on x86 CPUs -- asymmetric uint8 activations (its u8s8 kernels are
    the fast ones) and `cpu_weights` "8-bit" (full range, for CPUs with VNNI or AMX) or "7-bit"
    (`reduce_range`): without VNNI, full-range int8 weights saturate the int16 sums of its fused
    kernels (see runtime.ONNXPredictor and export.cpu_int8_weights)."""
    if target not in INT8_TARGETS:
        raise EngineError(f"unknown int8 target {target!r}; choose from {', '.join(INT8_TARGETS)}")
    cpu = target == "cpu"
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}

    class Reader(q.CalibrationDataReader):
        """uint8 training images in batches of 64; one pass is all calibration needs."""

        def __init__(self, batch=64):
            self._batches = iter([calib_images[i:i + batch] for i in range(0, len(calib_images), batch)])

        def get_next(self):
            b = next(self._batches, None)
            return None if b is None else {INPUT: b}

    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="engine-int8-") as d:
        fp32, pre, int8 = (os.path.join(d, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, fp32)
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)  # only the batch is dynamic
        q.quantize_static(pre, int8, reader, quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QUInt8 if cpu else q.QuantType.QInt8,
                          weight_type=q.QuantType.QInt8, per_channel=per_channel,
                          reduce_range=cpu and cpu_weights == "7-bit",
                          calibrate_method=methods[method],
                          # TensorRT's DequantizeLinear takes INT8/FP8/INT4, not onnxruntime's default
                          # int32 biases: for trt the biases stay float (TensorRT fuses them itself).
                          extra_options={"ActivationSymmetric": not cpu, "WeightSymmetric": True,
                                         "QuantizeBias": cpu})
        return onnx.load(int8)


def calibration_images(exp: Exportable, n: int, data: str | None = None, cache_dir: str | None = None):
    """n class-balanced training images of the run's data source (or `data`), read as the run read it
    (its --image-size; its --label-mode for its own source; its --cache-dir)."""
    opts = exp.data_options
    splits = data_mod.load(data or exp.data_source, cache_dir or opts.get("cache_dir") or default_cache_dir(),
                           log=lambda *a: None, image_size=opts.get("image_size") or "",
                           label_mode=(opts.get("label_mode") or "fine") if data is None else "fine")
    if tuple(splits.x_train.shape[1:]) != exp.image_shape:
        have, want = ("x".join(map(str, t)) for t in (splits.x_train.shape[1:], exp.image_shape))
        raise EngineError(f"calibration data {data or exp.data_source} has {have} images but the model takes {want}: "
                          f"give --data the data it was trained on")
    x, _, _, _ = data_mod.balanced_subset(splits.x_train, splits.y_train, n, seed=0,
                                          num_classes=splits.num_classes)
    return x


def export_onnx(exp: Exportable, out: str, overwrite: bool = False, precision: str = "fp32",
                calib_images=None, calib_method: str = "minmax", per_channel: bool = True,
                simplified: bool = False, int8_target: str = "trt") -> str:
    """ONNX in fp32, fp16 or int8 Q/DQ, always built from the checked fp32 graph (simplified with
    onnxslim first if asked and if it keeps parity), with metadata. Written to a temporary file and
    moved into place only when whole."""
    files.claim_output(out, overwrite)
    check = np.random.default_rng(0).integers(0, 256, (8, *exp.image_shape), dtype=np.uint8)
    reference = exp.serve_fn()(tf.constant(check))[OUTPUT].numpy()
    proto = _fp32_onnx(exp, check, reference)
    meta = dict(exp.metadata, precision=precision)
    if simplified:
        proto, meta["simplified"] = simplify(proto, check, reference)
    if precision == "fp16":
        proto = to_fp16(proto)
    elif precision == "int8":
        if calib_images is None or len(calib_images) == 0:
            raise EngineError("int8 export needs calibration images (--calib-images N)")
        weights = cpu_int8_weights(devices.cpu_flags())
        proto = to_int8(proto, calib_images, calib_method, per_channel, int8_target, weights)
        meta["calibration"] = {"images": len(calib_images), "method": calib_method, "per_channel": per_channel}
        meta["int8_target"] = int8_target
        if int8_target == "cpu":  # chosen by this CPU's features (export.cpu_int8_weights)
            meta["int8_weights"] = weights
    elif precision != "fp32":
        raise EngineError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "fp32":
        logits = _run_onnx(proto, check)
        if logits.dtype != np.float32 or logits.shape != (len(check), len(exp.class_names)) \
                or not np.all(np.isfinite(logits)):
            raise EngineError(f"the {precision} graph does not keep the contract "
                              f"({logits.dtype} {logits.shape}); not written")
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    with writing(out):
        files.write_bytes(out, proto.SerializeToString())
    return out
