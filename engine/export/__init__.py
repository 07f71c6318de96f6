"""Export: a trained run (or a saved `.keras` model) -> SavedModel, ONNX (fp32/fp16/int8), OpenVINO, TensorRT.

    __main__.py    `python -m engine.export`: flags -> loader -> exporter
    load.py        Exportable: a model with its kernels.Preprocess, from a run or a .keras file
    savedmodel.py  TensorFlow SavedModel
    onnx.py        tf2onnx fp32 (+ onnxslim), fp16, int8 Q/DQ; parity checked before writing
    openvino.py    OpenVINO IR (fp32, or int8 by NNCF) from the checked ONNX graph, for CPUs
    trt.py         a TensorRT engine from the ONNX file (NVIDIA GPU)

Importing this package imports no TensorFlow; its modules do.
"""

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_TARGETS = ("trt", "cpu")  # trt: symmetric int8 activations; cpu: onnxruntime's u8s8 x86 kernels
import os

from engine.errors import EngineError

OPSET = 17
OPENVINO_PRECISIONS = ("fp32", "int8")


def openvino_weights(xml: str) -> str:
    """The .bin that holds an OpenVINO IR's weights, beside its .xml; a one-line error for another path."""
    if not xml.endswith(".xml"):
        raise EngineError(f"an OpenVINO IR is a .xml file (its weights go beside it in .bin): {xml}")
    return os.path.splitext(xml)[0] + ".bin"


def cpu_int8_weights(flags) -> str:
    """The weight range of the int8 form for onnxruntime on a CPU with these feature flags: full 8-bit
    where VNNI or AMX int8 compute u8 x s8 dot products into int32; 7-bit ("reduce_range") where
    they do not, because onnxruntime's AVX2 kernels then add pairs of u8 x s8 products in int16,
    which full-range weights overflow (measured: 38.8% top-1 instead of 61.1%)."""
    from engine.devices import int8_dot
    return "8-bit" if int8_dot(flags) else "7-bit"
