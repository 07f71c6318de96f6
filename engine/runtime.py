"""One Predictor interface over TensorFlow, ONNX Runtime, OpenVINO and TensorRT.

    p = open_predictor("onnx", "runs/x/model.onnx")
    logits = p.predict(images)   # uint8 [N,H,W,C] in (the export's shape), float32 [N,classes] out, batched inside

Every backend runs the same exported contract, so any two can be compared (`engine.evaluate
--against`). Inputs are checked once, here, with a one-line error for the wrong dtype or shape.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from engine.cli import import_tensorflow_quietly
from engine.layout import is_run_dir
from engine import devices
from engine.contract import (CONTRACT_ANY, IMAGE_SHAPE, INPUT, OPENVINO_RT_INFO, OUTPUT, check_images, export_shape,
                             inference_batch)
from engine.errors import EngineError
from engine.export import openvino_weights

BACKENDS = ("tf", "onnx", "openvino", "trt")
OPENVINO_PRECISIONS = ("auto", "f32", "bf16")


class Predictor:
    """`batch_size` None: inference_batch of the model's input side (after the graph's upsampling),
    read from the export's metadata; 256 when it does not say."""
    backend = ""

    def __init__(self, path: str, batch_size: int | None = None):
        if not os.path.exists(path):
            raise EngineError(f"model not found: {path}")
        if batch_size is not None and batch_size < 1:
            raise EngineError(f"batch size must be >= 1, got {batch_size}")
        self.path = path
        self.batch_size = batch_size or 256
        self.image_shape = IMAGE_SHAPE  # the uint8 [H, W, C] images the export takes (its input says)

    def _default_batch(self, batch_size: int | None, side) -> None:
        if batch_size is None and side:
            self.batch_size = inference_batch(int(side))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def details(self) -> dict:
        """How this backend runs the model (for reports): precision, the CPU features it chose by."""
        return {}

    def predict(self, images) -> np.ndarray:
        images = check_images(images, self.image_shape)
        out = [self._run(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class TFPredictor(Predictor):
    """A SavedModel exported by engine.export, or a run directory (its best checkpoint)."""
    backend = "tf"

    def __init__(self, path, batch_size=None):
        super().__init__(path, batch_size)
        import_tensorflow_quietly()
        import tensorflow as tf
        devices.warn_gpu_setup()  # a GPU TensorFlow cannot use: said, since TensorFlow's logs are quiet
        if is_run_dir(path):
            from engine.export.load import load_run
            exp = load_run(path)
            self._fn = exp.serve_fn()
            self.image_shape = exp.image_shape
            self._default_batch(batch_size, exp.size)
        else:
            try:
                self._fn = tf.saved_model.load(path).signatures["serving_default"]
            except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
                raise EngineError(f"cannot load SavedModel {path}: {type(e).__name__}") from None
            spec = self._fn.structured_input_signature[1].get(INPUT)
            self.image_shape = (spec is not None and export_shape(spec.shape.as_list())) or IMAGE_SHAPE
            try:
                with open(os.path.join(path, "assets.extra.engine.json")) as f:
                    self._default_batch(batch_size, json.load(f).get("input_side"))
            except (OSError, ValueError, AttributeError):
                pass  # not one of ours: the plain default
        self._tf = tf

    def _run(self, batch):
        return self._fn(**{INPUT: self._tf.constant(batch)})[OUTPUT].numpy()


ORT_LEVELS = ("all", "basic")


def _describe(args) -> str:
    return ", ".join(f"{a.name!r} {a.type.removeprefix('tensor(').removesuffix(')')} {a.shape}" for a in args) or "none"


def check_onnx_contract(path: str, inputs, outputs) -> int | None:
    """A one-line error unless an ONNX model's inputs and outputs (onnxruntime's NodeArgs) are the
    exported contract: one input `images` uint8 [N,H,W,C] (C 1 or 3), an output `logits` float
    [N,classes]. Returns the number of classes where the graph fixes it."""
    expects = f"the engine runs models of its export contract ({CONTRACT_ANY}; input {INPUT!r}, output {OUTPUT!r})"
    ok = len(inputs) == 1 and inputs[0].name == INPUT and inputs[0].type == "tensor(uint8)" \
        and export_shape(inputs[0].shape) is not None
    if not ok:
        raise EngineError(f"{path}: {expects}; its inputs are {_describe(inputs)}")
    logits = [o for o in outputs if o.name == OUTPUT]
    if not logits or logits[0].type != "tensor(float)" or len(logits[0].shape) != 2:
        raise EngineError(f"{path}: {expects}; its outputs are {_describe(outputs)}")
    classes = logits[0].shape[1]
    return classes if isinstance(classes, int) else None


def check_class_names(path: str, metadata: dict, classes: int | None) -> None:
    """A one-line error unless an export's `class_names` metadata (where it has one) is a JSON list
    of names, one per output."""
    if "class_names" not in metadata:
        return
    try:
        names = json.loads(metadata["class_names"])
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
            or (classes is not None and len(names) != classes):
        want = f"{classes} names, one per output" if classes is not None else "names, one per output"
        got = f"{len(names)} names" if isinstance(names, list) else "not a JSON list"
        raise EngineError(f"{path}: its class_names metadata should be a JSON list of {want}; it is {got}")


def onnx_metadata(path: str) -> dict:
    """An ONNX file's metadata_props (our exports record precision, input side, class names there)."""
    import onnx
    try:
        return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and others for a corrupt file
        raise EngineError(f"cannot load ONNX model {path}: {type(e).__name__}") from None


class ONNXPredictor(Predictor):
    """onnxruntime. `optimization="all"` (default) lets ORT fuse Q/DQ pairs into its int8 kernels;
    on x86 CPUs without VNNI those saturate int16 sums with full-range per-channel int8 weights
    (measured: 38.8% instead of 61.1% top-1). `"basic"` keeps Q/DQ as written: the exact int8
    semantics TensorRT implements, which is how int8 files are verified here."""
    backend = "onnx"

    def __init__(self, path, batch_size=None, threads: int = 0, optimization: str = "all"):
        super().__init__(path, batch_size)
        import onnxruntime as ort
        if optimization not in ORT_LEVELS:
            raise EngineError(f"unknown onnxruntime optimization {optimization!r}; choose from {ORT_LEVELS}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimization == "all"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            self._session = ort.InferenceSession(path, opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise EngineError(f"cannot load ONNX model {path}: {str(e).splitlines()[0][:160]}") from None
        classes = check_onnx_contract(path, self._session.get_inputs(), self._session.get_outputs())
        self.image_shape = export_shape(self._session.get_inputs()[0].shape)
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        check_class_names(path, self.metadata, classes)
        side = self.metadata.get("input_side", "")
        self._default_batch(batch_size, int(side) if side.isdigit() else None)
        self.optimization, self.threads = optimization, threads
        if self.metadata.get("int8_weights") == "8-bit" and optimization == "all" \
                and not devices.int8_dot():
            print(f"warning: {path} has full-range int8 weights (made for CPUs with VNNI or AMX); this CPU has "
                  f"neither, so onnxruntime's int8 kernels can saturate: re-export it here with --int8-target cpu",
                  file=sys.stderr)

    def _run(self, batch):
        return self._session.run([OUTPUT], {INPUT: batch})[0]

    def details(self) -> dict:
        meta = self.metadata
        return {"model_precision": meta.get("precision", "fp32"), "ort_optimization": self.optimization,
                "ort_intra_op_threads": self.threads or "onnxruntime's default (one per physical core)",
                **({"int8_target": meta["int8_target"]} if "int8_target" in meta else {}),
                **({"int8_weights": meta["int8_weights"]} if "int8_weights" in meta else {}),
                "cpu_int8_dot": devices.int8_dot()}


def openvino_precision(choice: str, flags: set) -> str:
    """OpenVINO's inference precision on a CPU: bf16 where the CPU computes bfloat16 in hardware
    (AMX or AVX-512 BF16), else f32; or the one asked for."""
    if choice not in OPENVINO_PRECISIONS:
        raise EngineError(f"unknown OpenVINO precision {choice!r}; choose from {', '.join(OPENVINO_PRECISIONS)}")
    if choice != "auto":
        return choice
    return "bf16" if devices.fast_bf16(flags) else "f32"


class OpenVINOPredictor(Predictor):
    """An OpenVINO IR (`model.xml` with its `model.bin`) exported by `engine export openvino`, or one of
    our `.onnx` exports read by OpenVINO as it is (an int8 Q/DQ graph runs in OpenVINO's int8 kernels), on
    the CPU. `precision` is OpenVINO's inference precision hint: auto (bf16 where the CPU has AMX or
    AVX-512 BF16, else f32), f32 or bf16; an int8 IR runs its quantized layers in int8 either way."""
    backend = "openvino"

    def __init__(self, path, batch_size=None, precision: str = "auto"):
        super().__init__(path, batch_size)
        try:
            import openvino as ov
        except ImportError:
            raise EngineError("the openvino backend needs OpenVINO: pip install -e '.[openvino]'") from None
        onnx_file = path.endswith(".onnx")  # OpenVINO reads our ONNX exports as they are (Q/DQ included)
        weights = path if onnx_file else openvino_weights(path)
        if not os.path.isfile(weights):
            raise EngineError(f"cannot load OpenVINO model {path}: its weights file {weights} is missing")
        self.asked = precision
        hint = openvino_precision(precision, devices.cpu_flags())
        try:
            core = ov.Core()
            model = core.read_model(path)
            self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        except Exception as e:  # noqa: BLE001 - OpenVINO raises untyped RuntimeErrors
            raise EngineError(f"cannot load OpenVINO model {path}: {' '.join(str(e).split())[:160]}") from None
        if onnx_file:
            self.metadata = onnx_metadata(path)
        else:
            self.metadata = {k: v.astype(str) for k, v in model.get_rt_info()[OPENVINO_RT_INFO].items()} \
                if model.has_rt_info(OPENVINO_RT_INFO) else {}
        check_class_names(path, self.metadata, self._check_contract(path))
        self.precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        side = self.metadata.get("input_side", "")
        self._default_batch(batch_size, int(side) if side.isdigit() else None)

    def _check_contract(self, path: str) -> int | None:
        """A one-line error unless the compiled model takes one uint8 [N,H,W,C] input (C 1 or 3; its shape
        becomes the predictor's) and gives float32 [N,classes] first; returns the number of classes
        where the model fixes it."""
        def describe(ports):
            return ", ".join(f"{p.get_element_type().get_type_name()} {p.get_partial_shape()}" for p in ports) or "none"
        inputs, outputs = self._compiled.inputs, self._compiled.outputs
        shape = inputs[0].get_partial_shape() if len(inputs) == 1 else None
        image = None if shape is None or shape.rank.is_dynamic else \
            export_shape([d.get_length() if d.is_static else None for d in shape])
        if image is None or inputs[0].get_element_type().get_type_name() != "u8":
            raise EngineError(f"{path}: the engine runs models of its export contract ({CONTRACT_ANY}); its inputs "
                              f"are {describe(inputs)}")
        self.image_shape = image
        out = outputs[0].get_partial_shape() if outputs else None
        if out is None or outputs[0].get_element_type().get_type_name() != "f32" or out.rank.is_dynamic \
                or out.rank.get_length() != 2:
            raise EngineError(f"{path}: the engine runs models of its export contract ({CONTRACT_ANY}); its outputs "
                              f"are {describe(outputs)}")
        last = list(out)[1]
        return last.get_length() if last.is_static else None

    def _run(self, batch):
        return self._compiled(batch)[0]

    def details(self) -> dict:
        return {"openvino_precision_asked": self.asked, "openvino_inference_precision": self.precision,
                "model_precision": self.metadata.get("precision", "fp32"), "cpu_fast_bf16": devices.fast_bf16(),
                "cpu_amx": devices.cpu_has_amx()}


class TRTPredictor(Predictor):
    """A serialized TensorRT engine built by `engine.export trt` (needs TensorRT and an NVIDIA GPU).
    The batch size defaults to the engine's profile maximum (--max-batch) if that is smaller than
    256; a larger one is refused."""
    backend = "trt"

    def __init__(self, path, batch_size=None):
        super().__init__(path, batch_size)
        try:
            from polygraphy.backend.common import BytesFromPath
            from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        except ImportError:
            raise EngineError("the trt backend needs TensorRT and polygraphy: pip install -e '.[trt]' "
                              "on a machine with an NVIDIA GPU") from None
        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(path)))
        self._runner.activate()
        profile = self._runner.engine.get_tensor_profile_shape(INPUT, 0)  # [min, opt, max] shapes
        largest = int(profile[2][0])
        image = export_shape([int(d) for d in profile[2]])
        if image is None:
            raise EngineError(f"{path}: the engine runs models of its export contract ({CONTRACT_ANY}); its input "
                              f"profile's largest shape is {[int(d) for d in profile[2]]}")
        self.image_shape = image
        if batch_size is None:
            self.batch_size = min(self.batch_size, largest)
        elif batch_size > largest:
            raise EngineError(f"batch size {batch_size} is above the {largest} images {path} was built for "
                              f"(its --max-batch); pass --batch-size {largest} or rebuild with a larger --max-batch")

    def _run(self, batch):
        # Polygraphy's runners may reuse their output buffers between calls ("if you need to save
        # outputs from multiple inferences, you should make a copy"): each batch's logits are copied.
        return np.array(self._runner.infer({INPUT: batch})[OUTPUT], copy=True)


def backend_of(path: str) -> str:
    """The backend an export's path calls for: .onnx, .engine/.plan, or a run / SavedModel folder."""
    if path.endswith(".onnx"):
        return "onnx"
    if path.endswith((".engine", ".plan")):
        return "trt"
    if path.endswith(".xml"):
        return "openvino"
    if is_run_dir(path) or os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "tf"
    raise EngineError(f"{path}: not a run directory, SavedModel folder, .onnx, OpenVINO .xml or .engine file")


def open_predictor(backend_or_path: str, path: str | None = None, batch_size: int | None = None,
                   **options) -> Predictor:
    """`open_predictor("runs/x/model.onnx")` (the backend follows from the path), or
    `open_predictor("onnx", "runs/x/model.onnx")`."""
    if path is None:
        path = backend_or_path
        if not os.path.exists(path):
            raise EngineError(f"model not found: {path}")
        backend = backend_of(path)
    else:
        backend = backend_or_path
    cls = {"tf": TFPredictor, "onnx": ONNXPredictor, "openvino": OpenVINOPredictor, "trt": TRTPredictor}.get(backend)
    if cls is None:
        raise EngineError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return cls(path, batch_size, **options)
