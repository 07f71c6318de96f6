"""Export: a trained run (or a saved `.keras` model) -> SavedModel, ONNX (fp32/fp16/int8), TensorRT.

    __main__.py    `python -m engine.export`: flags -> loader -> exporter
    load.py        Exportable: a model with its kernels.Preprocess, from a run or a .keras file
    savedmodel.py  TensorFlow SavedModel
    onnx.py        tf2onnx fp32 (+ onnxslim), fp16, int8 Q/DQ; parity checked before writing
    trt.py         a TensorRT engine from the ONNX file (NVIDIA GPU)

Importing this package imports no TensorFlow; its modules do.
"""

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_TARGETS = ("trt", "cpu")  # trt: symmetric int8 activations; cpu: onnxruntime's u8s8 x86 kernels
OPSET = 17
