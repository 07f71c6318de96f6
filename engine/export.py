"""`python -m engine.export {savedmodel,onnx,trt}`: a trained run -> a deployable inference graph.

The exported contract, for every format: input `images`, uint8 NHWC [N,32,32,3] (dynamic N);
output `logits`, float32 [N,num_classes]. In between: kernels.upsample -> kernels.normalize ->
the model in inference mode, the same kernels the training step used. Built under a float32
policy whatever the run trained in (bf16 graphs do not give valid ONNX; weights are float32 anyway).

Reads a run directory (its best or latest checkpoint) or a saved `.keras` model; never the
trainer's internals. Never overwrites an existing output without --overwrite.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from engine import __version__
from engine.config import Parser
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
    from engine.config import Config
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise EngineError(f"{path} is not a run directory (no config.json)")
    cfg = Config.load(cfg_path)
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
    model = models.build(spec.name, size, len(class_names))
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise EngineError(f"cannot restore {latest}: {type(e).__name__}") from None
    meta = {"engine_version": __version__, "source_run": os.path.abspath(path), "checkpoint": latest,
            "class_names": class_names, "config": cfg.to_dict(), "contract": CONTRACT}
    return Exportable(model, size, spec.normalization, cfg.model.upsample_method, class_names, meta)


def _claim(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not overwrite:
        raise EngineError(f"{out} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise EngineError(f"the folder of --out does not exist: {parent}")


def _replace(tmp: str, out: str) -> None:
    """Move a finished export into place; the old one goes only once the new one is whole."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    elif os.path.exists(out):
        os.remove(out)
    os.replace(tmp, out)


def export_savedmodel(exp: Exportable, out: str, overwrite: bool = False) -> str:
    import tensorflow as tf
    _claim(out, overwrite)
    module = tf.Module()
    module.model = exp.model
    module.serve = exp.serve_fn()
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)), prefix=".export-")
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        with open(os.path.join(tmp, "assets.extra.engine.json"), "w") as f:
            json.dump(exp.metadata, f, indent=2)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_onnx(exp: Exportable, out: str, overwrite: bool = False, check_images=None) -> str:
    """tf2onnx at opset 17 from the float32 serving function; checked with onnx.checker and run
    once with onnxruntime against TensorFlow before it is moved into place."""
    import numpy as np
    try:
        import onnx
        import tf2onnx
    except ImportError as e:
        raise EngineError(f"ONNX export needs tf2onnx and onnx ({e.name} is missing): "
                          f"pip install -e .[dev]") from None
    import tensorflow as tf
    _claim(out, overwrite)
    serve = exp.serve_fn()
    spec = [tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")]
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=OPSET)
    for k, v in exp.metadata.items():
        proto.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    onnx.checker.check_model(proto)
    images = check_images if check_images is not None else \
        np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    import onnxruntime as ort
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": images})[0]
    want = serve(tf.constant(images))["logits"].numpy()
    err = float(np.max(np.abs(got - want)))
    if not err <= 1e-3:
        raise EngineError(f"ONNX export disagrees with TensorFlow (max |dlogit| {err:.3g}); not written")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        _replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out


def gpu_available() -> bool:
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def build_trt_engine(onnx_path: str, out: str, min_batch: int, opt_batch: int, max_batch: int,
                     timing_cache: str | None, workspace_gib: float = 4.0, overwrite: bool = False) -> str:
    """A TensorRT engine from an exported ONNX file with OnnxParser. TensorRT 10+/11 networks are
    strongly typed: the precision is the ONNX graph's (fp32 here; fp16/int8 graphs carry their own
    casts or Q/DQ nodes), so no builder precision flags are set."""
    _claim(out, overwrite)
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(f"TensorRT is not installed (pip install -e .[trt] on a machine with an NVIDIA "
                          f"GPU); the checked ONNX input is at {onnx_path}") from None
    if not gpu_available():
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
        _write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    _write_bytes(out, bytes(serialized))
    return out


def _write_bytes(path: str, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".export-")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


def parse(argv=None):
    p = Parser(prog="python -m engine.export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="format", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("run", help="a run directory written by engine.train")
    common.add_argument("--out", required=True, help="output path")
    common.add_argument("--checkpoint", choices=["best", "latest"], default="best",
                        help="which checkpoint of the run (default: best validation epoch)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sub.add_parser("savedmodel", parents=[common], help="TensorFlow SavedModel with a serving signature")
    sub.add_parser("onnx", parents=[common], help=f"ONNX (opset {OPSET}), checked with onnxruntime")
    t = sub.add_parser("trt", parents=[common], help="TensorRT engine via ONNX (needs an NVIDIA GPU)")
    t.add_argument("--onnx", help="ONNX file to build from (default: export one next to --out)")
    t.add_argument("--min-batch", type=int, default=1)
    t.add_argument("--opt-batch", type=int, default=64)
    t.add_argument("--max-batch", type=int, default=256)
    t.add_argument("--timing-cache", help="TensorRT timing cache file, reused across builds "
                                          "(default: timing.cache next to --out)")
    a = p.parse_args(argv)
    if a.format == "trt" and not 1 <= a.min_batch <= a.opt_batch <= a.max_batch:
        raise EngineError("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    return a


@cli
def main(argv=None):
    a = parse(argv)
    _claim(a.out, a.overwrite)  # fail before any work
    exp = load_run(a.run, a.checkpoint)
    if a.format == "savedmodel":
        export_savedmodel(exp, a.out, a.overwrite)
    elif a.format == "onnx":
        export_onnx(exp, a.out, a.overwrite)
    else:
        onnx_path = a.onnx or os.path.splitext(a.out)[0] + ".onnx"
        if not a.onnx:
            export_onnx(exp, onnx_path, overwrite=a.overwrite)
        elif not os.path.exists(onnx_path):
            raise EngineError(f"--onnx {onnx_path} does not exist")
        cache = a.timing_cache or os.path.join(os.path.dirname(os.path.abspath(a.out)), "timing.cache")
        build_trt_engine(onnx_path, a.out, a.min_batch, a.opt_batch, a.max_batch, cache,
                         overwrite=a.overwrite)
    print(f"exported {a.format}: {a.out} ({CONTRACT})")


if __name__ == "__main__":
    sys.exit(main())
