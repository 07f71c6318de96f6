"""A lint of every exported ONNX graph (fp32, fp16, int8; 32-px and upsampled models) against the
operator and type support that onnx-tensorrt documents for TensorRT 10.1, the version `[trt]` pins
(docs/operators.md of onnx/onnx-tensorrt, branch 10.1-GA). It checks the documented support matrix,
not that TensorRT builds the graph: the real parser needs a GPU."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper, shape_inference

from engine import models
from engine.export.load import Exportable
from engine.export.onnx import export_onnx
from engine.kernels import Preprocess

F, H, B, I32, I64, U8, BOOL, I8 = "FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "UINT8", "BOOL", "INT8"
FLOATS = {F, H, B}
# "Supported Types" of onnx-tensorrt 10.1's support matrix, for the operators our graphs can hold.
SUPPORTED = {
    "Add": FLOATS | {I32, I64}, "Sub": FLOATS | {I32, I64}, "Mul": FLOATS | {I32, I64},
    "Div": FLOATS | {I32, I64}, "Cast": FLOATS | {I32, I64, U8, BOOL}, "Concat": FLOATS | {I32, I64, BOOL},
    "Conv": FLOATS, "DequantizeLinear": {I8, "FLOAT8E4M3FN", "INT4"}, "QuantizeLinear": FLOATS, "Erf": FLOATS,
    "Gather": FLOATS | {I32, I64, BOOL}, "Gemm": FLOATS, "MatMul": FLOATS, "GlobalAveragePool": FLOATS,
    "GlobalMaxPool": FLOATS, "MaxPool": FLOATS, "AveragePool": FLOATS, "Relu": FLOATS | {I32, I64},
    "Reshape": FLOATS | {I32, I64, BOOL}, "Shape": FLOATS | {I32, I64, BOOL}, "Squeeze": FLOATS | {I32, I64, BOOL},
    "Unsqueeze": FLOATS | {I32, I64, BOOL}, "Transpose": FLOATS | {I32, I64, BOOL}, "Flatten": FLOATS | {I32, I64, BOOL},
    "Identity": FLOATS | {I32, I64, BOOL}, "Log": FLOATS, "Max": FLOATS | {I32, I64}, "Softmax": FLOATS,
    "ReduceMax": FLOATS | {I32, I64}, "ReduceMean": FLOATS | {I32, I64}, "Slice": FLOATS | {I32, I64, BOOL},
    "Pad": FLOATS | {I32, I64}, "Sigmoid": FLOATS, "Tanh": FLOATS, "Sqrt": FLOATS, "Pow": FLOATS,
    "Exp": FLOATS, "Neg": FLOATS | {I32, I64}, "Constant": FLOATS | {I32, I64, BOOL}, "Einsum": FLOATS,
    "BatchNormalization": FLOATS, "Clip": FLOATS, "Where": FLOATS | {I32, I64, BOOL},
    "Expand": FLOATS | {I32, I64, BOOL}, "Tile": FLOATS | {I32, I64, BOOL}, "Range": FLOATS | {I32, I64},
    "ConstantOfShape": FLOATS | {I32, I64, BOOL}, "Split": FLOATS | {I32, I64, BOOL},
    "ReverseSequence": FLOATS | {I32, I64, BOOL},
}
CONSTANT_INPUT = {"Squeeze": 1, "Unsqueeze": 1, "ReduceMax": 1, "ReduceMean": 1, "Pad": 3}  # "axes must be an initializer"


def lint(model) -> list[str]:
    """What the documented support matrix rules out in `model` (empty: nothing)."""
    m = shape_inference.infer_shapes(model)
    g = m.graph
    init = {i.name: i for i in g.initializer}
    constants = set(init) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    types = {v.name: TensorProto.DataType.Name(v.type.tensor_type.elem_type)
             for v in [*g.value_info, *g.input, *g.output]}
    types.update({name: TensorProto.DataType.Name(i.data_type) for name, i in init.items()})
    inputs = {i.name for i in g.input}
    problems = []
    for n in g.node:
        where = f"{n.op_type} {n.name}"
        if n.op_type not in SUPPORTED:
            problems.append(f"{where}: not in the support matrix")
            continue
        data = types.get(n.input[0]) if n.input else None
        if data is not None and data not in SUPPORTED[n.op_type]:
            problems.append(f"{where}: {data} input not supported")
        if data == U8 and (n.op_type != "Cast" or n.input[0] not in inputs):
            problems.append(f"{where}: UINT8 only as a network input (into a Cast)")
        for out in n.output:
            if types.get(out) == U8:
                problems.append(f"{where}: UINT8 output {out}: UINT8 is only a network input or output type")
        k = CONSTANT_INPUT.get(n.op_type)
        if k is not None and len(n.input) > k and n.input[k] and n.input[k] not in constants:
            problems.append(f"{where}: input {k} must be an initializer")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            zero = init.get(n.input[2])
            if zero is None or numpy_helper.to_array(zero).any():
                problems.append(f"{where}: zero point must be a zero initializer")
    return problems


CASES = [("tiny", 32, "nearest"), ("tiny", 64, "nearest"), ("tiny", 64, "bilinear"), ("airbench", 32, "nearest"),
         ("vgg16", 64, "nearest")]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    import keras
    keras.mixed_precision.set_global_policy("float32")
    calib = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    d, out = tmp_path_factory.mktemp("lint"), {}
    for name, size, method in CASES:
        keras.utils.set_random_seed(0)
        spec = models.get(name)
        exp = Exportable(models.build(name, size, 10), Preprocess(size, spec.normalization, method),
                         [str(i) for i in range(10)], {}, "")
        for precision in ("fp32", "fp16", "int8"):
            path = str(d / f"{name}-{size}-{method}-{precision}.onnx")
            out[(name, size, method, precision)] = onnx.load(export_onnx(
                exp, path, precision=precision, calib_images=calib if precision == "int8" else None))
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_exported_graph_keeps_to_the_documented_tensorrt_support(graphs, case, precision):
    assert lint(graphs[(*case, precision)]) == []


def test_the_lint_sees_what_tensorrt_documents_it_refuses():
    """uint8 into a Gather, and an int32 bias into a DequantizeLinear: what the exports once held."""
    from onnx import helper
    g = helper.make_graph(
        [helper.make_node("Gather", ["images", "idx"], ["g"]),
         helper.make_node("DequantizeLinear", ["bias", "scale", "zero"], ["b"]), helper.make_node("Cast", ["g"], ["logits"], to=1)],
        "bad", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0, 1], np.int32), "idx"), numpy_helper.from_array(np.zeros(4, np.int32), "bias"),
         numpy_helper.from_array(np.array(0.1, np.float32), "scale"), numpy_helper.from_array(np.array(0, np.int32), "zero")])
    problems = " | ".join(lint(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))
    assert "Gather" in problems and "UINT8 only as a network input" in problems
    assert "DequantizeLinear" in problems and "INT32 input not supported" in problems
