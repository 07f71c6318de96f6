"""`python -m engine.export {savedmodel,onnx,trt}`: a trained run -> a deployable inference graph.

The exported contract, for every format: input `images`, uint8 NHWC [N,32,32,3] (dynamic N);
output `logits`, float32 [N,num_classes]. In between: the run's kernels.Preprocess (upsample ->
normalise) -> the model in inference mode, the same kernels the training step used. Built under a
float32 policy whatever the run trained in (bf16 graphs do not give valid ONNX; weights are float32
anyway).

Reads a run directory (its best or latest checkpoint), never the trainer's internals. Never
overwrites an existing output without --overwrite.
"""
from __future__ import annotations

import argparse
import os

from engine import files
from engine.cli import Parser, import_tensorflow_quietly
from engine.contract import CONTRACT, NORMALIZATIONS, UPSAMPLE_METHODS
from engine.errors import EngineError, cli
from engine.export import CALIB_METHODS, INT8_TARGETS, OPSET, PRECISIONS

DESCRIPTION = "A trained run -> a deployable inference graph (SavedModel, ONNX, TensorRT)."


def _parser() -> Parser:
    p = Parser(prog="python -m engine.export", description=DESCRIPTION)
    sub = p.add_subparsers(dest="format", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("run", help="a run directory written by engine.train, or a saved .keras model")
    common.add_argument("--normalization", choices=NORMALIZATIONS,
                        help=".keras input: how its training inputs were scaled (e.g. caffe for vgg16's "
                             "preprocess_input, unit for x/255)")
    common.add_argument("--upsample-method", choices=UPSAMPLE_METHODS, default="nearest",
                        help=".keras input: how 32x32 images reach its input side")
    common.add_argument("--classes", help=".keras input: comma-separated class names (default: CIFAR-10's)")
    common.add_argument("--out", required=True, help="output path")
    common.add_argument("--checkpoint", choices=["best", "latest"], default="best",
                        help="which checkpoint of the run (default: best validation epoch)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sub.add_parser("savedmodel", parents=[common], help="TensorFlow SavedModel with a serving signature")
    prec = Parser(add_help=False)
    prec.add_argument("--precision", choices=PRECISIONS, default="fp32",
                      help="fp16: float16 weights and activations; int8: Q/DQ static quantization "
                           "(symmetric int8, per-channel weights) calibrated on training images")
    prec.add_argument("--calib-images", type=int, default=512, help="int8: training images to calibrate on")
    prec.add_argument("--calib-method", choices=CALIB_METHODS, default="minmax", help="int8 calibration")
    prec.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                      help="int8: per-channel weight scales (default: on)")
    prec.add_argument("--data", help="int8: data source for calibration (default: the run's)")
    prec.add_argument("--int8-target", choices=INT8_TARGETS, default="trt",
                      help="int8: trt (symmetric int8 activations: what TensorRT consumes) or cpu (uint8 "
                           "activations, 7-bit weights: onnxruntime's fast x86 kernels)")
    prec.add_argument("--simplify", action="store_true",
                      help="simplify the ONNX graph with onnxslim, kept only if it still matches TensorFlow")
    sub.add_parser("onnx", parents=[common, prec], help=f"ONNX (opset {OPSET}), checked with onnxruntime")
    t = sub.add_parser("trt", parents=[common, prec],
                       help="TensorRT engine built from the ONNX export of that precision (needs an NVIDIA GPU)")
    t.add_argument("--onnx", help="ONNX file to build from (default: export one next to --out)")
    t.add_argument("--min-batch", type=int, default=1)
    t.add_argument("--opt-batch", type=int, default=64)
    t.add_argument("--max-batch", type=int, default=256)
    t.add_argument("--timing-cache", help="TensorRT timing cache file, reused across builds "
                                          "(default: timing.cache next to --out)")
    return p


def parse(argv=None):
    a = _parser().parse_args(argv)
    if getattr(a, "calib_images", 1) < 1:
        raise EngineError("--calib-images must be at least 1")
    if a.format == "trt" and getattr(a, "int8_target", "trt") != "trt":
        raise EngineError("--int8-target cpu makes a graph for onnxruntime on CPUs; TensorRT builds from "
                          "--int8-target trt")
    if a.format == "trt" and not 1 <= a.min_batch <= a.opt_batch <= a.max_batch:
        raise EngineError("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    return a


@cli
def main(argv=None):
    a = parse(argv)
    files.claim_output(a.out, a.overwrite)  # fail before any work
    import_tensorflow_quietly()
    if a.format == "trt":  # TensorFlow checks the ONNX graph, then TensorRT needs the GPU's memory
        from engine.devices import allow_memory_growth
        allow_memory_growth()
    from engine.export.load import load_keras, load_run
    from engine.export.onnx import calibration_images, export_onnx
    from engine.export.savedmodel import export_savedmodel
    from engine.export.trt import build_trt_engine
    if a.run.endswith(".keras"):
        exp = load_keras(a.run, a.normalization, a.upsample_method, a.classes.split(",") if a.classes else None)
    else:
        if a.normalization or a.classes:
            raise EngineError("--normalization and --classes are for a .keras model; a run directory "
                              "knows its own")
        exp = load_run(a.run, a.checkpoint)
    if a.format == "savedmodel":
        export_savedmodel(exp, a.out, a.overwrite)
    else:
        onnx_path = a.out if a.format == "onnx" else (a.onnx or os.path.splitext(a.out)[0] + ".onnx")
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
    print(f"exported {a.format}: {a.out} ({CONTRACT})")

