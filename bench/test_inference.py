"""Inference: the Keras model (the serving tf.function around it), the exported SavedModel, ONNX
Runtime on the same exported graph (plus its fp16 and int8 Q/DQ variants) and OpenVINO on its IR (f32
and bf16 inference precision, NNCF int8): batch-1 latency percentiles and batch-256 throughput. The
CPU's features (AMX, AVX-512 BF16, VNNI) are in each row's extra_info: they decide the bf16 and int8 rows.

Speed does not depend on the weight values, so the models are freshly initialised (seed 0); accuracy
parity is what tests/test_export.py checks.

    pytest bench/test_inference.py --benchmark-json=bench-infer.json
"""
import numpy as np
import pytest
import tensorflow as tf

from bench.conftest import QUICK, machine_info
from bench.flops import forward_flops
from engine import models
from engine.export.load import Exportable
from engine.kernels import Preprocess
from engine.export.onnx import export_onnx
from engine.export.savedmodel import export_savedmodel
from engine.runtime import ONNXPredictor, TFPredictor

# vgg16: the frozen-VGG16 transfer experiment's model at its 64x64 input (upsampling inside the graph)
MODELS = ["tiny"] if QUICK else ["tiny", "resnet9", "airbench", "vgg16"]
LATENCY_ROUNDS = 20 if QUICK else 300
THROUGHPUT_ROUNDS = 2 if QUICK else 5
BATCH = 256


class _KerasPredictor:
    """The live Keras model behind the same serving function the exports are made from."""

    def __init__(self, exp):
        self._fn = exp.serve_fn()

    def predict(self, images):
        return self._fn(tf.constant(images))["logits"].numpy()


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory):
    import keras
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    spec = models.get(request.param)
    size = models.input_size(spec, 0)
    exp = Exportable(models.build(spec.name, size, 10), Preprocess(size, spec.normalization),
                     [str(i) for i in range(10)], {"bench": "untrained"}, data_source="")
    d = tmp_path_factory.mktemp(request.param)
    calib = np.random.default_rng(1).integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
    fp32_onnx = export_onnx(exp, str(d / "m.onnx"))
    return {"model": request.param, "gflop_per_image": forward_flops(exp.model) / 1e9,
            "keras": _KerasPredictor(exp),
            "savedmodel": TFPredictor(export_savedmodel(exp, str(d / "sm")), BATCH),
            "onnxruntime": ONNXPredictor(fp32_onnx, BATCH),
            # ONNX Runtime's own knobs on the same fp32 graph: one intra-op thread instead of one per
            # core, and basic graph optimisation (constant folding and simple fusions; none of the
            # extended fusions, no NCHWc layout)
            "onnxruntime 1-thread": ONNXPredictor(fp32_onnx, BATCH, threads=1),
            "onnxruntime basic-opt": ONNXPredictor(fp32_onnx, BATCH, optimization="basic"),
            "onnxruntime fp16": ONNXPredictor(export_onnx(exp, str(d / "fp16.onnx"), precision="fp16"),
                                              BATCH),
            # int8 for CPUs (uint8 activations, 7-bit weights) in ORT's fused kernels: accurate there
            # (tests/test_quantize.py) and the fast CPU path
            "onnxruntime int8": ONNXPredictor(export_onnx(exp, str(d / "int8.onnx"), precision="int8",
                                                                 calib_images=calib, int8_target="cpu"), BATCH),
            # the TensorRT form (symmetric int8) as ORT runs it exactly (Q/DQ kept): how it is verified
            "onnxruntime int8 trt-form": ONNXPredictor(
                export_onnx(exp, str(d / "int8-trt.onnx"), precision="int8", calib_images=calib),
                BATCH, optimization="basic"),
            # OpenVINO: f32, bf16 (computed in bf16 only where the CPU has AMX or AVX-512 BF16; its row
            # says what ran), and NNCF int8
            **_openvino(exp, d, calib)}


def _openvino(exp, d, calib) -> dict:
    from engine.export.openvino import export_openvino
    from engine.runtime import OpenVINOPredictor
    xml = export_openvino(exp, str(d / "m.xml"))
    int8 = export_openvino(exp, str(d / "int8.xml"), precision="int8", calib_images=calib)
    return {"openvino f32": OpenVINOPredictor(xml, BATCH, precision="f32"),
            "openvino bf16": OpenVINOPredictor(xml, BATCH, precision="bf16"),
            "openvino int8": OpenVINOPredictor(int8, BATCH)}


BACKENDS = ["keras", "savedmodel", "onnxruntime", "onnxruntime 1-thread", "onnxruntime basic-opt",
            "onnxruntime fp16", "onnxruntime int8", "onnxruntime int8 trt-form",
            "openvino f32", "openvino bf16", "openvino int8"]


def compute_precision(backend: str, runtime: dict) -> str | None:
    """What a row's convolutions compute in, which the report sets its FLOP/s against (bench/test_peak.py's
    inference rates): int8 for integer kernels (ORT's fused int8 form, OpenVINO int8); for OpenVINO's
    float forms the precision it reports it ran; f32 for the TensorRT int8 form, which ONNX Runtime runs
    as float operations between its Q/DQ pairs; None for ONNX Runtime fp16, whose CPU kernels differ per
    operator."""
    words = backend.split()
    if "trt-form" in words:
        return "f32"
    if "fp16" in words:
        return None
    if "int8" in words:
        return "int8"
    return runtime.get("openvino_inference_precision", "f32")


def _info(benchmark, exported, backend, mode):
    import onnxruntime
    info = machine_info()
    precision = next((p for p in ("fp16", "int8", "bf16") if p in backend.split()), "fp32")
    runtime = exported[backend].details() if hasattr(exported[backend], "details") else {}
    info.update(kind="inference", model=exported["model"], backend=backend, mode=mode,
                precision=precision, onnxruntime=onnxruntime.__version__, runtime=runtime,
                compute=compute_precision(backend, runtime), gflop_per_image=exported["gflop_per_image"])
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("backend", BACKENDS)
def test_latency_batch1(benchmark, exported, backend):
    predictor = exported[backend]
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    _info(benchmark, exported, backend, "batch 1 latency")
    benchmark.pedantic(predictor.predict, args=(image,), rounds=LATENCY_ROUNDS, warmup_rounds=5,
                       iterations=1)
    times_ms = np.array(benchmark.stats.stats.data) * 1000
    benchmark.extra_info.update(batch=1, p50_ms=float(np.percentile(times_ms, 50)),
                                p90_ms=float(np.percentile(times_ms, 90)),
                                p99_ms=float(np.percentile(times_ms, 99)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_throughput_batch256(benchmark, exported, backend):
    predictor = exported[backend]
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
    _info(benchmark, exported, backend, f"batch {BATCH} throughput")
    benchmark.pedantic(predictor.predict, args=(images,), rounds=THROUGHPUT_ROUNDS, warmup_rounds=1,
                       iterations=1)
    benchmark.extra_info.update(batch=BATCH, img_s=BATCH / benchmark.stats.stats.mean)
