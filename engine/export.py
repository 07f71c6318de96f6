"""`python -m engine.export {savedmodel,onnx,trt}`: a trained run -> a deployable inference graph.

The exported contract, for every format: input `images`, uint8 NHWC [N,32,32,3] (dynamic N);
output `logits`, float32 [N,num_classes]. In between: kernels.upsample -> kernels.normalize ->
the model in inference mode, the same kernels the training step used. Built under a float32
policy whatever the run trained in (bf16 graphs do not give valid ONNX; weights are float32 anyway).

Reads a run directory (its best or latest checkpoint), never the trainer's internals. Never
overwrites an existing output without --overwrite.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

from engine import __version__, files
from engine.config import Parser
from engine.data import CIFAR10_CLASSES as _CIFAR10
from kernels import NORMALIZATIONS
from engine.errors import EngineError, cli

CONTRACT = "uint8 NHWC [N,32,32,3] images -> float32 [N,classes] logits"
OPSET = 17


class Exportable:
    """A model with the preprocessing it was trained with: what every exporter starts from."""

    def __init__(self, model, size: int, normalization: str, upsample_method: str, class_names: list,
                 metadata: dict):
        self.model = model
        self.size = size
        self.normalization = normalization
        self.upsample_method = upsample_method
        self.class_names = class_names
        self.metadata = metadata

    def serve_fn(self):
        import tensorflow as tf

        from engine.loop import StepConfig, preprocess
        cfg = StepConfig(num_classes=len(self.class_names), global_batch=1, size=self.size,
                         normalization=self.normalization, upsample_method=self.upsample_method)
        model = self.model

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
        def serve(images):
            return {"logits": tf.identity(model(preprocess(images, cfg), training=False), name="logits")}
        return serve


def load_run(path: str, checkpoint: str = "best") -> Exportable:
    """Rebuild a run's model in float32 and restore its best (or latest) checkpoint."""
    import keras
    import tensorflow as tf

    from engine import models
    from engine.config import CONFIG_FILE, Config, is_run_dir
    if not is_run_dir(path):
        raise EngineError(f"{path} is not a run directory (no {CONFIG_FILE})")
    cfg = Config.load(os.path.join(path, CONFIG_FILE))
    try:
        with open(os.path.join(path, "classes.json")) as f:
            class_names = json.load(f)
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot read the class names of {path}: {e}") from None
    ckpt_dir = os.path.join(path, "checkpoints", "best" if checkpoint == "best" else "")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest is None:
        raise EngineError(f"no {checkpoint} checkpoint in {path}")
    keras.mixed_precision.set_global_policy("float32")
    spec = models.get(cfg.model.model)
    size = models.input_size(spec, cfg.model.upsample)
    # The checkpoint holds every weight: never download or read the run's starting weights again.
    model = models.build(spec.name, size, len(class_names), dataclasses.replace(cfg.model, weights="none"))
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise EngineError(f"cannot restore {latest}: {type(e).__name__}") from None
    meta = {"engine_version": __version__, "source_run": os.path.abspath(path), "checkpoint": latest,
            "class_names": class_names, "config": cfg.to_dict(), "contract": CONTRACT, "input_side": size}
    return Exportable(model, size, spec.normalization, cfg.model.upsample_method, class_names, meta)


def load_keras(path: str, normalization: str | None, upsample_method: str = "nearest",
               class_names: list | None = None) -> Exportable:
    """A saved `.keras` model (e.g. from a `model.fit` script) with the input scaling it was trained
    with (`normalization`, a kernels.normalize mode). Its input side sets the upsampling (32 -> side).
    A model ending in softmax is exported as logits = log(probabilities): same argmax, same softmax."""
    import keras
    import tensorflow as tf

    import importlib

    from engine.config import defaults
    importlib.import_module("engine.models")  # registers the engine's own layers for loading
    if not os.path.isfile(path):
        raise EngineError(f"model not found: {path}")
    if normalization not in NORMALIZATIONS:
        raise EngineError(f"a .keras model needs --normalization, the input scaling it was trained with: "
                          f"one of {', '.join(NORMALIZATIONS)}")
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt zip, a missing custom layer, a wrong format
        raise EngineError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}") \
            from None
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3 or (shape[0] or 0) < 32:
        raise EngineError(f"{path}: expected a model taking square RGB images of side >= 32, got input {shape}")
    outputs = int(model.outputs[0].shape[-1])
    names = class_names or (list(_CIFAR10) if outputs == 10 else [str(i) for i in range(outputs)])
    if len(names) != outputs:
        raise EngineError(f"--classes names {len(names)} classes but {path} has {outputs} outputs")
    last = model.layers[-1]
    softmax = getattr(getattr(last, "activation", None), "__name__", "") == "softmax" or \
        type(last).__name__ == "Softmax"
    net = model
    if softmax:  # probabilities -> logits, once, here
        inputs = keras.Input(shape, name="images")
        net = keras.Model(inputs, keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(p, 1e-30)),
                                                       name="logits")(model(inputs)))
    meta = {"engine_version": __version__, "source_model": os.path.abspath(path), "class_names": names,
            "normalization": normalization, "softmax_to_logits": softmax, "contract": CONTRACT,
            "input_side": int(shape[0]),
            "config": {"data": {"data": defaults().data.data}}}  # int8 calibration's default source
    return Exportable(net, int(shape[0]), normalization, upsample_method, names, meta)


def _claim(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not overwrite:
        raise EngineError(f"{out} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise EngineError(f"the folder of --out does not exist: {parent}")


def export_savedmodel(exp: Exportable, out: str, overwrite: bool = False) -> str:
    import tensorflow as tf
    _claim(out, overwrite)
    module = tf.Module()
    module.model = exp.model
    module.serve = exp.serve_fn()
    with files.atomic_dir(out) as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        with open(os.path.join(tmp, "assets.extra.engine.json"), "w") as f:
            json.dump(exp.metadata, f, indent=2)
    return out


PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("minmax", "entropy", "percentile")


def _fp32_onnx(exp: Exportable, check_images):
    """tf2onnx at opset 17 from the float32 serving function, checked with onnx.checker and against
    TensorFlow with onnxruntime (max |dlogit| <= 1e-3)."""
    import numpy as np
    import onnx
    import tensorflow as tf
    import tf2onnx
    serve = exp.serve_fn()
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET)
    onnx.checker.check_model(proto)
    got = _run_onnx(proto, check_images)
    want = serve(tf.constant(check_images))["logits"].numpy()
    err = float(np.max(np.abs(got - want)))
    if not err <= 1e-3:
        raise EngineError(f"ONNX export disagrees with TensorFlow (max |dlogit| {err:.3g}); not written")
    return proto


def simplify(proto, exp: Exportable, check_images):
    """onnxslim's graph simplification (constant folding, fusing, dead-node removal), kept only if
    the simplified graph still agrees with TensorFlow (max |dlogit| <= 1e-3); otherwise the
    original graph is returned with a warning. Returns (proto, note for the metadata)."""
    import numpy as np
    import onnx
    import onnxslim
    import tensorflow as tf
    try:
        slim = onnxslim.slim(proto)
        onnx.checker.check_model(slim)
        got = _run_onnx(slim, check_images)
    except Exception as e:  # noqa: BLE001 - any failure means: keep the graph we checked
        print(f"warning: onnxslim failed ({type(e).__name__}); exporting the unsimplified graph", file=sys.stderr)
        return proto, "no (onnxslim failed)"
    want = exp.serve_fn()(tf.constant(check_images))["logits"].numpy()
    err = float(np.max(np.abs(got - want)))
    if not err <= 1e-3:
        print(f"warning: the simplified graph disagrees with TensorFlow (max |dlogit| {err:.3g}); "
              f"exporting the unsimplified graph", file=sys.stderr)
        return proto, "no (lost parity)"
    return slim, f"onnxslim {onnxslim.__version__}: {len(proto.graph.node)} -> {len(slim.graph.node)} nodes"


def _run_onnx(proto, images):
    import onnxruntime as ort
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


def to_fp16(proto):
    """Weights and activations in float16; the graph's input (uint8) and output (float32 logits)
    stay as the contract says (`keep_io_types`)."""
    from onnxconverter_common import float16
    # Cast nodes stay as they are: the converter retypes a Cast's output to float16 without changing
    # its `to` attribute (uint8 -> float), which onnxruntime rejects; blocked, it adds its own casts.
    return float16.convert_float_to_float16(
        proto, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + ["Cast"])


INT8_TARGETS = ("trt", "cpu")


def to_int8(proto, calib_images, method: str = "minmax", per_channel: bool = True, target: str = "trt"):
    """Static post-training quantization to Q/DQ, calibrated on `calib_images` (uint8 training images,
    never test images). Weights are symmetric int8 (per-channel unless told otherwise).

    target "trt": symmetric int8 activations, full-range weights -- the form TensorRT consumes.
    target "cpu": for onnxruntime on x86 CPUs -- asymmetric uint8 activations (its u8s8 kernels are
    the fast ones) and 7-bit weight range (`reduce_range`): without VNNI, full-range int8 weights
    saturate the int16 sums of its fused kernels (see runtime.ONNXPredictor)."""
    if target not in INT8_TARGETS:
        raise EngineError(f"unknown int8 target {target!r}; choose from {', '.join(INT8_TARGETS)}")
    cpu = target == "cpu"
    import onnx
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
            return None if b is None else {"images": b}

    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="engine-int8-") as d:
        fp32, pre, int8 = (os.path.join(d, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, fp32)
        quant_pre_process(fp32, pre, skip_symbolic_shape=True)  # only the batch is dynamic
        q.quantize_static(pre, int8, reader, quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QUInt8 if cpu else q.QuantType.QInt8,
                          weight_type=q.QuantType.QInt8, per_channel=per_channel, reduce_range=cpu,
                          calibrate_method=methods[method],
                          extra_options={"ActivationSymmetric": not cpu, "WeightSymmetric": True})
        return onnx.load(int8)


def calibration_images(exp: Exportable, n: int, data: str | None = None):
    """n class-balanced training images of the run's data source (or `data`)."""
    from engine import data as data_mod
    from engine.config import default_cache_dir
    source = data or exp.metadata["config"]["data"]["data"]
    splits = data_mod.load(source, default_cache_dir(), log=lambda *a: None)
    x, _, _, _ = data_mod.balanced_subset(splits.x_train, splits.y_train, n, seed=0,
                                          num_classes=splits.num_classes)
    return x


def export_onnx(exp: Exportable, out: str, overwrite: bool = False, precision: str = "fp32",
                calib_images=None, calib_method: str = "minmax", per_channel: bool = True,
                simplified: bool = False, int8_target: str = "trt") -> str:
    """ONNX in fp32, fp16 or int8 Q/DQ, always built from the checked fp32 graph (simplified with
    onnxslim first if asked and if it keeps parity), with metadata. Written to a temporary file and
    moved into place only when whole."""
    import numpy as np
    _claim(out, overwrite)
    check = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    proto = _fp32_onnx(exp, check)
    meta = dict(exp.metadata, precision=precision)
    if simplified:
        proto, meta["simplified"] = simplify(proto, exp, check)
    if precision == "fp16":
        proto = to_fp16(proto)
    elif precision == "int8":
        if calib_images is None or len(calib_images) == 0:
            raise EngineError("int8 export needs calibration images (--calib-images N)")
        proto = to_int8(proto, calib_images, calib_method, per_channel, int8_target)
        meta["calibration"] = {"images": len(calib_images), "method": calib_method, "per_channel": per_channel}
        meta["int8_target"] = int8_target
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
    files.write_bytes(out, proto.SerializeToString())
    return out


def build_trt_engine(onnx_path: str, out: str, min_batch: int, opt_batch: int, max_batch: int,
                     timing_cache: str | None, workspace_gib: float = 4.0, overwrite: bool = False) -> str:
    """A TensorRT engine from an exported ONNX file with OnnxParser. TensorRT 10+/11 networks are
    strongly typed: the precision is the ONNX graph's (fp16 graphs carry float16 tensors and casts,
    int8 graphs Q/DQ nodes; see export_onnx), so no builder precision flags are set."""
    _claim(out, overwrite)
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(f"TensorRT is not installed (pip install -e .[trt] on a machine with an NVIDIA "
                          f"GPU); the checked ONNX input is at {onnx_path}") from None
    from engine.precision import gpus
    if not gpus():
        raise EngineError(f"no usable NVIDIA GPU: TensorRT engines are built on the GPU they run on; "
                          f"the checked ONNX input is at {onnx_path}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (min_batch, 32, 32, 3), (opt_batch, 32, 32, 3), (max_batch, 32, 32, 3))
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if timing_cache and os.path.exists(timing_cache):
        with open(timing_cache, "rb") as f:
            cache_bytes = f.read()
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    if timing_cache:
        files.write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    files.write_bytes(out, bytes(serialized))
    return out


def parse(argv=None):
    p = Parser(prog="python -m engine.export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="format", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("run", help="a run directory written by engine.train, or a saved .keras model")
    common.add_argument("--normalization", choices=NORMALIZATIONS,
                        help=".keras input: how its training inputs were scaled (e.g. caffe for vgg16's "
                             "preprocess_input, unit for x/255)")
    common.add_argument("--upsample-method", choices=["nearest", "bilinear"], default="nearest",
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
    a = p.parse_args(argv)
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
    _claim(a.out, a.overwrite)  # fail before any work
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


if __name__ == "__main__":
    sys.exit(main())
