"""TensorRT engines built from an exported ONNX file (needs TensorRT and an NVIDIA GPU)."""
from __future__ import annotations

import os

from engine import files
from engine.contract import INPUT
from engine.devices import gpus, tf32_allowed
from engine.errors import EngineError
from engine.export.load import writing


def build_trt_engine(onnx_path: str, out: str, min_batch: int, opt_batch: int, max_batch: int,
                     timing_cache: str | None, workspace_gib: float = 4.0, overwrite: bool = False) -> str:
    """A TensorRT engine from an exported ONNX file with OnnxParser. TensorRT 10+/11 networks are
    strongly typed: the precision is the ONNX graph's (fp16 graphs carry float16 tensors and casts,
    int8 graphs Q/DQ nodes; see export_onnx), so no builder precision flags are set; float32 layers
    may run in TF32 (TensorRT's default) except under NVIDIA_TF32_OVERRIDE=0 (devices.tf32_allowed)."""
    files.claim_output(out, overwrite)
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(f"TensorRT is not installed (pip install -e '.[trt]' on a machine with an NVIDIA "
                          f"GPU); the checked ONNX input is at {onnx_path}") from None
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
    if not tf32_allowed():  # NVIDIA_TF32_OVERRIDE=0: float32 layers in float32, not TF32 (TensorRT's default)
        config.clear_flag(trt.BuilderFlag.TF32)
    # The export's image shape [H, W, C] is static in its ONNX input (only the batch is dynamic).
    image = tuple(network.get_input(0).shape)[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (min_batch, *image), (opt_batch, *image), (max_batch, *image))
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
        with writing(timing_cache):
            files.write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    with writing(out):
        files.write_bytes(out, bytes(serialized))
    return out
