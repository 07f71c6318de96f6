"""`engine evaluate MODEL` (or `python -m engine.evaluate`): top-1 accuracy on the test split, img/s,
and with `--against [BACKEND:]PATH` the agreement between two models on the same images (top-1
agreement, max and mean |logit difference|). Writes a JSON report.

    engine evaluate runs/airbench/model.onnx --against runs/airbench

The backend follows from the path (a run or SavedModel folder: tf; .onnx: onnx; .xml: openvino;
.engine/.plan: trt);
`--backend` names it where the path does not say (`--backend openvino` runs a .onnx file in OpenVINO).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from engine import data, devices
from engine.cli import Parser, import_tensorflow_quietly, integer
from engine.config import LEGACY_DATA, add_data_flags, default_cache_dir
from engine.contract import IMAGE_SHAPE, shape_text
from engine.layout import is_run_dir
from engine.errors import EngineError, cli
from engine import layout
from engine.files import claim_output, free_name, write_json
from engine.runtime import BACKENDS, OPENVINO_PRECISIONS, ORT_LEVELS, backend_of, open_predictor


def parse(argv=None):
    p = Parser(prog="engine evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a run directory or SavedModel folder, a .onnx file, an OpenVINO .xml, or a TensorRT .engine file")
    p.add_argument("--model", dest="model_flag", metavar="PATH", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--backend", choices=BACKENDS, help="runtime for MODEL (default: from its path)")
    p.add_argument("--against", metavar="[BACKEND:]PATH",
                   help="a second model to compare with on the same images, e.g. runs/x or tf:runs/x")
    d = p.add_argument_group("data")
    add_data_flags(d, "data source, as for engine train")
    d.add_argument("--limit-test", type=integer, default=0, metavar="N",
                   help="class-balanced subset of N test images (0: all)")
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per call (default: 256; fewer for models upsampling beyond 64x64, e.g. 20 "
                        "at 224x224, as the export's metadata says)")
    r.add_argument("--ort-optimization", choices=ORT_LEVELS, default="all",
                   help="onnx backend: 'basic' keeps int8 Q/DQ exact (as TensorRT computes it); 'all' "
                        "lets ORT fuse it into CPU int8 kernels")
    r.add_argument("--openvino-precision", choices=OPENVINO_PRECISIONS, default="auto",
                   help="openvino backend: its inference precision; auto is bf16 where the CPU has AMX or AVX-512 "
                        "BF16, else f32")
    o = p.add_argument_group("output")
    o.add_argument("--out", "--report", dest="report", metavar="FILE",
                   help="JSON report path (default: evaluate-<model>-<backend>.json beside MODEL, or inside a run "
                        "folder; a name already taken gets -2, -3, ...: no report replaces another)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --out report")
    a = p.parse_args(argv)
    if a.model and a.model_flag and a.model != a.model_flag:
        raise EngineError("give the model once: as MODEL, or as --model PATH (the older spelling)")
    a.model = a.model or a.model_flag
    if not a.model:
        raise EngineError("engine evaluate: which model? give MODEL, e.g. engine evaluate runs/x/model.onnx")
    if not os.path.exists(a.model):
        raise EngineError(f"model not found: {a.model}")
    a.backend = a.backend or backend_of(a.model)
    if (a.batch_size is not None and a.batch_size < 1) or a.limit_test < 0:
        raise EngineError("--batch-size must be >= 1 and --limit-test >= 0")
    if a.against:
        backend, _, path = a.against.partition(":") if a.against.split(":", 1)[0] in BACKENDS else ("", "", a.against)
        if not os.path.exists(path):
            raise EngineError(f"--against {a.against}: no such model (give [BACKEND:]PATH, BACKEND one of "
                              f"{', '.join(BACKENDS)})")
        a.against = f"{backend or backend_of(path)}:{path}"
    if a.report:  # before any work: a report never replaces a run, a run's file or a folder
        claim_output(a.report, a.overwrite, protected=layout.protected)
    return a


def default_report(model: str, backend: str) -> str:
    """evaluate-<model>-<backend>.json beside MODEL (inside a run or SavedModel folder), at the first
    free name: evaluating another model, or the same one again, never replaces a report."""
    model = os.path.normpath(model)
    if os.path.isdir(model):
        folder, name = model, "run" if is_run_dir(model) else os.path.basename(model).split(".")[0]
    else:
        folder, name = os.path.dirname(model), os.path.splitext(os.path.basename(model))[0]
    return free_name(os.path.join(folder, f"evaluate-{name}-{backend}.json"))


def timed_predict(predictor, images):
    predictor.predict(images[: predictor.batch_size])  # warm-up: session init, tracing
    t0 = time.perf_counter()
    logits = predictor.predict(images)
    return logits, len(images) / (time.perf_counter() - t0)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    if a.shape != b.shape:
        raise EngineError(f"the two models disagree in output shape: {a.shape} vs {b.shape}")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean())}


@cli
def main(argv=None):
    a = parse(argv)
    if "trt" in (a.backend, (a.against or ":").split(":", 1)[0]):  # TensorRT beside TensorFlow's allocator
        import_tensorflow_quietly()
        from engine.devices import allow_memory_growth
        allow_memory_growth()
    tf32 = devices.tf32_override() if "tf" in (a.backend, (a.against or ":").split(":", 1)[0]) else None

    def open_(backend, path):
        opts = {"onnx": {"optimization": a.ort_optimization},
                "openvino": {"precision": a.openvino_precision}}.get(backend, {})
        return open_predictor(backend, path, a.batch_size, **opts)
    predictor = open_(a.backend, a.model)
    other = open_(*a.against.split(":", 1)) if a.against else None
    splits = data.load(a.data, a.cache_dir or default_cache_dir())
    former = LEGACY_DATA.get(a.data)
    if former and tuple(predictor.image_shape) == IMAGE_SHAPE != tuple(splits.x_test.shape[1:]):
        # a model trained on --data digits when those were 32x32x3: the same images, by their name today
        print(f"note: {a.model} takes {shape_text(IMAGE_SHAPE)} images: evaluating on --data {former}, "
              f"the {a.data} at that shape")
        a.data, splits = former, data.load(former, a.cache_dir or default_cache_dir())
    x, y = splits.x_test, splits.y_test
    for p in (predictor, other):
        if p is not None and tuple(x.shape[1:]) != tuple(p.image_shape):
            raise EngineError(f"--data {a.data} has {shape_text(x.shape[1:])} images but {p.path} takes "
                              f"{shape_text(p.image_shape)}: evaluate it on the data it was trained on")
    if a.limit_test:
        x, y, _, _ = data.balanced_subset(x, y, a.limit_test, seed=0, num_classes=splits.num_classes)
    logits, ips = timed_predict(predictor, x)
    report = {"backend": a.backend, "model": os.path.abspath(a.model), "data": a.data, "images": len(x),
              "top1_accuracy": float(np.mean(logits.argmax(1) == y)), "img_s": ips,
              "batch_size": predictor.batch_size, "ort_optimization": a.ort_optimization,
              "runtime": predictor.details(), "device": devices.device_name(), "tensorflow_tf32": tf32}
    print(f"{a.backend}: top-1 {report['top1_accuracy']:.4f} on {len(x)} test images, {ips:.1f} img/s")
    if other is not None:
        other_logits, other_ips = timed_predict(other, x)
        report["against"] = {"backend": other.backend, "model": os.path.abspath(other.path),
                             "top1_accuracy": float(np.mean(other_logits.argmax(1) == y)),
                             "img_s": other_ips, "runtime": other.details(), **agreement(logits, other_logits)}
        r = report["against"]
        print(f"{other.backend}: top-1 {r['top1_accuracy']:.4f}, {other_ips:.1f} img/s; agreement "
              f"{r['top1_agreement']:.4%}, max |dlogit| {r['max_abs_logit_diff']:.3g}, "
              f"mean {r['mean_abs_logit_diff']:.3g}")
    path = a.report or default_report(a.model, a.backend)
    write_json(path, report)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
