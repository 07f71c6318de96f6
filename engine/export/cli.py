"""`engine export {savedmodel,onnx,trt} RUN` (or `python -m engine.export`): a trained run -> a deployable
inference graph, written into the run directory unless --out says where.

The exported contract, for every format: input `images`, uint8 NHWC [N,H,W,C] of the run's image
shape (32x32x3 for CIFAR-10; dynamic N);
output `logits`, float32 [N,num_classes]. In between: the run's kernels.Preprocess (upsample ->
normalise) -> the model in inference mode, the same kernels the training step used. Built under a
float32 policy whatever the run trained in (bf16 graphs do not give valid ONNX; weights are float32
anyway).

Reads a run directory (its best or latest checkpoint), never the trainer's internals. Never
overwrites an existing output without --overwrite.
"""
from __future__ import annotations

import argparse
import importlib.util
import os

from engine import files, layout
from engine.cli import Parser, import_tensorflow_quietly
from engine.contract import CONTRACT, NORMALIZATIONS, UPSAMPLE_METHODS
from engine.errors import EngineError, cli
from engine.export import CALIB_METHODS, INT8_TARGETS, OPENVINO_PRECISIONS, OPSET, PRECISIONS, openvino_weights

DESCRIPTION = "A trained run -> a deployable inference graph (SavedModel, ONNX, OpenVINO, TensorRT)."


def _parser() -> Parser:
    p = Parser(prog="engine export", description=DESCRIPTION)
    sub = p.add_subparsers(dest="format", required=True, parser_class=Parser, metavar="{savedmodel,onnx,openvino,trt}")
    common = Parser(add_help=False)
    common.add_argument("run", help="a run directory written by engine train, or a saved .keras model")
    io = common.add_argument_group("input and output")
    io.add_argument("--out", metavar="PATH",
                    help="output path (default: in the run directory, model.savedmodel, model.onnx or model.engine, "
                         "with -fp16/-int8 for those precisions; beside a .keras file, its name with that ending)")
    io.add_argument("--checkpoint", choices=layout.WHICH, default="best",
                    help="which checkpoint of the run: best validation epoch, or the last one")
    io.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    k = common.add_argument_group(".keras input (a run directory knows its own)")
    k.add_argument("--normalization", choices=NORMALIZATIONS,
                   help="how its training inputs were scaled (e.g. caffe for vgg16's preprocess_input, unit for x/255)")
    k.add_argument("--upsample-method", choices=UPSAMPLE_METHODS, default="nearest",
                   help="how 32x32 images reach a square RGB model's input side")
    k.add_argument("--class-names", "--classes", dest="classes", metavar="A,B,...",
                   help="comma-separated class names to record in the export (default: CIFAR-10's)")
    sub.add_parser("savedmodel", parents=[common], help="TensorFlow SavedModel with a serving signature")
    prec = Parser(add_help=False)
    q = prec.add_argument_group("precision")
    q.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16: float16 weights and activations; int8: Q/DQ (QuantizeLinear/DequantizeLinear) "
                        "static quantization (symmetric int8, per-channel weights) calibrated on training images")
    q.add_argument("--calib-images", type=int, default=512, metavar="N", help="int8: training images to calibrate on")
    q.add_argument("--calib-method", choices=CALIB_METHODS, default="minmax", help="int8 calibration")
    q.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="int8: per-channel weight scales")
    q.add_argument("--data", metavar="SOURCE", help="int8: data source for calibration (default: the run's)")
    q.add_argument("--int8-target", choices=INT8_TARGETS, default="trt",
                   help="int8: trt (symmetric int8 activations: what TensorRT consumes) or cpu (uint8 "
                        "activations, 7-bit weights: onnxruntime's fast x86 kernels)")
    q.add_argument("--simplify", action="store_true",
                   help="simplify the ONNX graph with onnxslim, kept only if it still matches TensorFlow")
    sub.add_parser("onnx", parents=[common, prec], help=f"ONNX (opset {OPSET}), checked with onnxruntime")
    ov = sub.add_parser("openvino", parents=[common], help="OpenVINO IR (model.xml + model.bin) for CPUs, "
                                                          "checked with OpenVINO's CPU runtime")
    q = ov.add_argument_group("precision")
    q.add_argument("--precision", choices=OPENVINO_PRECISIONS, default="fp32",
                   help="int8: NNCF post-training quantization calibrated on training images (the inference "
                        "precision of the rest, f32 or bf16, is chosen when the model is run)")
    q.add_argument("--calib-images", type=int, default=512, metavar="N", help="int8: training images to calibrate on")
    q.add_argument("--data", metavar="SOURCE", help="int8: data source for calibration (default: the run's)")
    t = sub.add_parser("trt", parents=[common, prec],
                       help="TensorRT engine built from the ONNX export of that precision (needs an NVIDIA GPU)")
    e = t.add_argument_group("TensorRT engine")
    e.add_argument("--onnx", metavar="FILE", help="ONNX file to build from (default: export one next to --out, X.engine -> "
                                                        "X.trt-PRECISION.onnx)")
    e.add_argument("--min-batch", type=int, default=1, metavar="N", help="smallest batch the engine accepts")
    e.add_argument("--opt-batch", type=int, default=64, metavar="N", help="the batch TensorRT tunes its kernels for")
    e.add_argument("--max-batch", type=int, default=256, metavar="N", help="largest batch the engine accepts")
    e.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache file, reused across builds "
                                                        "(default: timing.cache next to --out)")
    return p


def default_out(a) -> str:
    """Where an export goes without --out: into the run directory (model.<ending>), or beside a .keras
    file (its name with that ending); -fp16 / -int8 (-int8-cpu) name the other precisions."""
    ending = {"savedmodel": ".savedmodel", "onnx": ".onnx", "openvino": ".xml", "trt": ".engine"}[a.format]
    precision = getattr(a, "precision", "fp32")
    cpu = precision == "int8" and getattr(a, "int8_target", "") == "cpu"
    tag = "" if precision == "fp32" else f"-{precision}" + ("-cpu" if cpu else "")
    run = a.run.rstrip("/")
    if run.endswith(".keras"):
        return os.path.splitext(run)[0] + tag + ending
    return os.path.join(run, "model" + tag + ending)


def parse(argv=None):
    a = _parser().parse_args(argv)
    if getattr(a, "calib_images", 1) < 1:
        raise EngineError("--calib-images must be at least 1")
    if a.format == "trt" and getattr(a, "int8_target", "trt") != "trt":
        raise EngineError("--int8-target cpu makes a graph for onnxruntime on CPUs; TensorRT builds from "
                          "--int8-target trt")
    if a.format == "trt" and not 1 <= a.min_batch <= a.opt_batch <= a.max_batch:
        raise EngineError("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    if not a.out:
        if not os.path.exists(a.run):
            raise EngineError(f"{a.run} does not exist: give a run directory or a .keras file")
        a.out = default_out(a)
    return a


def claim_outputs(a) -> None:
    """Every path this export will write, checked before any work: each new, or replaced only with
    --overwrite and only by its own kind; a run, a folder of runs or a run's own file never."""
    claim = dict(protected=layout.protected)
    if a.format == "savedmodel":
        files.claim_output(a.out, a.overwrite, folder=True, replaceable=is_savedmodel, **claim)
        return
    files.claim_output(a.out, a.overwrite, **claim)
    if a.format == "openvino":
        files.claim_output(openvino_weights(a.out), a.overwrite, **claim)
    if a.format == "trt":
        if importlib.util.find_spec("tensorrt") is None:  # before anything is written, the ONNX input too
            raise EngineError(f"TensorRT is not installed (pip install -e \".[trt]\" on a machine with an NVIDIA "
                              f"GPU); nothing was exported (engine export onnx makes and checks the ONNX graph "
                              f"TensorRT builds from)")
        if not a.onnx:
            files.claim_output(trt_onnx(a), a.overwrite, flag="the ONNX input", **claim)


def is_savedmodel(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def trt_onnx(a) -> str:
    """The ONNX file a TensorRT engine is built from: --onnx, else one exported next to --out, named by
    its precision (X.engine -> X.trt-fp32.onnx), never an `engine export onnx` file's name (model.onnx)."""
    return a.onnx or f"{os.path.splitext(a.out)[0]}.trt-{a.precision}.onnx"


@cli
def main(argv=None):
    a = parse(argv)
    claim_outputs(a)  # fail before any work
    with layout.reading([a.run], "export"):  # no export of a run being trained
        export(a)


def export(a) -> None:
    import_tensorflow_quietly()
    if a.format == "openvino":
        from engine.export.openvino import require_openvino
        require_openvino()
    if a.format == "trt":  # TensorFlow checks the ONNX graph, then TensorRT needs the GPU's memory
        from engine.devices import allow_memory_growth, gpus, unusable_gpu
        if not gpus():
            found = unusable_gpu()  # the driver lists one: why TensorFlow cannot use it
            raise EngineError((f"NVIDIA GPU found ({found[0]}) but TensorFlow cannot use it: {found[1]}; " if found else
                               "no usable NVIDIA GPU: ") + "TensorRT engines are built on the GPU they run on; "
                              "nothing was exported")
        allow_memory_growth()
    from engine.export.load import load_keras, load_run
    from engine.export.onnx import calibration_images, export_onnx
    from engine.export.savedmodel import export_savedmodel
    from engine.export.trt import build_trt_engine
    if a.run.endswith(".keras"):
        exp = load_keras(a.run, a.normalization, a.upsample_method, a.classes.split(",") if a.classes else None)
    else:
        if a.normalization or a.classes:
            raise EngineError("--normalization and --class-names are for a .keras model; a run directory "
                              "knows its own")
        exp = load_run(a.run, a.checkpoint)
    if a.format == "savedmodel":
        export_savedmodel(exp, a.out, a.overwrite)
    elif a.format == "openvino":
        from engine.export.openvino import export_openvino
        calib = calibration_images(exp, a.calib_images, a.data) if a.precision == "int8" else None
        export_openvino(exp, a.out, a.overwrite, a.precision, calib)
    else:
        onnx_path = a.out if a.format == "onnx" else trt_onnx(a)
        if a.format == "onnx" or not a.onnx:
            calib = calibration_images(exp, a.calib_images, a.data) if a.precision == "int8" else None
            export_onnx(exp, onnx_path, a.overwrite, a.precision, calib, a.calib_method, a.per_channel,
                        a.simplify, a.int8_target)
    if a.format == "trt":
        if not os.path.exists(onnx_path):
            raise EngineError(f"--onnx {onnx_path} does not exist")
        cache = a.timing_cache or os.path.join(os.path.dirname(os.path.abspath(a.out)), "timing.cache")
        build_trt_engine(onnx_path, a.out, a.min_batch, a.opt_batch, a.max_batch, cache,
                         overwrite=a.overwrite)
    print(f"exported {a.format}: {a.out} ({exp.metadata.get('contract', CONTRACT)})")

