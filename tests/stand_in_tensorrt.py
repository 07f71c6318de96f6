"""A stand-in `tensorrt` module for tests (TensorRT cannot be installed without an NVIDIA GPU): the part of
TensorRT 10's Python API that engine.export.trt.build_trt_engine calls, recording what it is given.

- The builder config's flags: TensorRT documents BuilderFlag.TF32 as enabled by default in a new builder
  config (IBuilderConfig: "TF32 ... Enabled by default"), cleared with IBuilderConfig.clear_flag.
- The optimisation profiles set, and the input shapes parsed. Its OnnxParser gives the network the ONNX
  graph's input shape, with -1 for the dynamic batch, as TensorRT's parser does (INetworkDefinition inputs
  take the ONNX input's dims; dynamic dims are -1 and need an optimisation profile). With `input_shape`
  given, the network reports that shape and the parser reads nothing (for a file that is not ONNX).
"""
from __future__ import annotations

import importlib.machinery
import io
import types


class StandInTensorRT(types.ModuleType):
    def __init__(self, input_shape: tuple | None = None):
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # importlib.util.find_spec finds it
        self.flags, self.profiles, self.parsed_inputs = {"TF32"}, [], []
        trt = self

        class Network:
            def __init__(self):
                self.input_shape = input_shape

            def get_input(self, i):
                return types.SimpleNamespace(shape=self.input_shape)

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                trt.profiles.append((name, tuple(lo), tuple(opt), tuple(hi)))

        class Config:
            def set_memory_pool_limit(self, *a): pass
            def clear_flag(self, flag): trt.flags.discard(flag)
            def set_flag(self, flag): trt.flags.add(flag)
            def add_optimization_profile(self, p): pass
            def create_timing_cache(self, b): return b
            def set_timing_cache(self, c, ignore_mismatch): pass
            def get_timing_cache(self): return types.SimpleNamespace(serialize=lambda: b"cache")

        class Builder:
            def __init__(self, logger): pass
            def create_network(self, flags): return Network()
            def create_builder_config(self): return Config()
            def create_optimization_profile(self): return Profile()
            def build_serialized_network(self, network, config): return b"plan"

        class Parser:
            def __init__(self, network, logger):
                self.network = network

            def parse(self, data):
                if input_shape is None:
                    import onnx
                    dims = onnx.load(io.BytesIO(data)).graph.input[0].type.tensor_type.shape.dim
                    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
                    self.network.input_shape = shape
                    trt.parsed_inputs.append(shape)
                return True

        self.Logger = type("Logger", (), {"WARNING": 0, "__init__": lambda s, level: None})
        self.Builder, self.OnnxParser = Builder, Parser
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = types.SimpleNamespace(TF32="TF32")
