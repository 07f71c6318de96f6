"""`engine evaluate MODEL` (or `python -m engine.evaluate`): top-1 accuracy on the test split, img/s,
and with `--against [BACKEND:]PATH` the agreement between two models on the same images (top-1
agreement, max and mean |logit difference|). Writes a JSON report.

    engine evaluate runs/airbench/model.onnx --against runs/airbench

The backend follows from the path (a run or SavedModel folder: tf; .onnx: onnx; .xml: openvino;
.engine/.plan: trt);
`--backend` names it where the path does not say (`--backend openvino` runs a .onnx file in OpenVINO).

A run is evaluated on the data as it was trained: MODEL a run folder or an export in one (runs/x/model.onnx),
the data flags its config.json stores (--data, --label-mode, --image-size, --limit-test) are the defaults.
--data and --limit-test given override them (another test set of the images the model takes, or fewer of
them: a line says so); a --label-mode or --image-size that contradicts the run is refused, since the model
knows only its own classes and image size.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from engine import data, devices
from engine.cli import Parser, import_tensorflow_quietly, integer
from engine.config import LEGACY_DATA, Config, add_data_flags, data_default, default_cache_dir
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
    add_data_flags(d, "data source, as for engine train (MODEL a run, or an export in one: the run's data)")
    d.set_defaults(data=None)  # not given: the run's, else $ENGINE_DATA or cifar10 (run_data)
    d.add_argument("--limit-test", type=integer, default=None, metavar="N",
                   help="class-balanced subset of N test images (default: the run's, else 0: all)")
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
    if a.batch_size is not None and a.batch_size < 1:
        raise EngineError("--batch-size must be >= 1")
    if a.against:
        backend, _, path = a.against.partition(":") if a.against.split(":", 1)[0] in BACKENDS else ("", "", a.against)
        if not os.path.exists(path):
            raise EngineError(f"--against {a.against}: no such model (give [BACKEND:]PATH, BACKEND one of "
                              f"{', '.join(BACKENDS)})")
        a.against = f"{backend or backend_of(path)}:{path}"
    if a.report:  # before any work: a report never replaces a run, a run's file or a folder
        claim_output(a.report, a.overwrite, protected=layout.protected)
    run_data(a)
    return a


def run_of(path: str) -> str | None:
    """The run folder `path` is, or holds it (an export's default place: runs/x/model.onnx,
    runs/x/model.savedmodel); None for a model outside any run."""
    path = os.path.normpath(path)
    for folder in (path, os.path.dirname(path)):
        if folder and os.path.isdir(folder) and is_run_dir(folder):
            return folder
    return None


def run_data(a) -> None:
    """Fill a's data flags (data, label_mode, image_size, limit_test; None: not given) from the run MODEL
    (or else --against) is or sits in, so that a run is evaluated on the data as it was trained. Without
    a run: the defaults engine train has. Before TensorFlow: a contradiction answers in a second."""
    from engine.data.sources import NAMED, check_source, parse_image_size, takes_label_mode
    against = a.against.split(":", 1)[1] if a.against else None
    a.run = run_of(a.model) or (run_of(against) if against else None)
    if a.run is None:
        a.data = a.data or data_default()
        a.label_mode, a.image_size = a.label_mode or "fine", a.image_size or ""
        a.limit_test = a.limit_test or 0
        check_source(a.data, a.image_size, a.label_mode)
        return
    cfg = Config.load(layout.run_file(a.run, layout.CONFIG_FILE))
    d = cfg.data
    if a.label_mode is not None and a.label_mode != d.label_mode:
        raise EngineError(f"--label-mode {a.label_mode}: {a.run} was trained on {d.label_mode} labels, and its "
                          f"outputs are those classes; drop the flag to evaluate it as trained")
    h, w, _ = cfg.image_shape
    if a.image_size is not None and parse_image_size(a.image_size) != (h, w):
        how = f"--image-size {d.image_size}" if d.image_size else "its data's own size"
        raise EngineError(f"--image-size {a.image_size}: {a.run} takes {h}x{w} images (trained at {how}); drop "
                          f"the flag to evaluate it as trained")
    inherited = []
    if a.data is None:
        if d.data not in NAMED and not os.path.exists(os.path.expanduser(d.data)):
            raise EngineError(f"{a.run} was trained on --data {d.data}, which is not there from this folder: "
                              f"give --data PATH to its data (or to another test set of {shape_text(cfg.image_shape)} "
                              f"images)")
        a.data = d.data
        inherited.append(f"--data {d.data}")
    elif a.data != d.data and os.path.abspath(a.data) != os.path.abspath(d.data):
        print(f"evaluate: on --data {a.data}; {a.run} was trained on {d.data}")
    if a.label_mode is None:  # (not where it cannot apply: an older version ignored it there)
        a.label_mode = d.label_mode if takes_label_mode(a.data) else "fine"
        if a.label_mode != "fine":
            inherited.append(f"--label-mode {d.label_mode}")
    if a.image_size is None:
        a.image_size = d.image_size
        if d.image_size:
            inherited.append(f"--image-size {d.image_size}")
    if a.limit_test is None:
        a.limit_test = d.limit_test
        if d.limit_test:
            inherited.append(f"--limit-test {d.limit_test}")
    elif a.limit_test != d.limit_test:
        print(f"evaluate: --limit-test {a.limit_test or 'all'} test images; {a.run} was tested on "
              f"{d.limit_test or 'all'}")
    check_source(a.data, a.image_size, a.label_mode)
    if inherited:
        print(f"evaluate: the data as {a.run} was trained ({layout.CONFIG_FILE}): {' '.join(inherited)}")


def default_report(model: str, backend: str) -> str:
    """evaluate-<model>-<backend>.json beside MODEL (inside a run or SavedModel folder), at the first
    free name: evaluating another model, or the same one again, never replaces a report."""
    model = os.path.normpath(model)
    if os.path.isdir(model):
        folder, name = model, "run" if is_run_dir(model) else os.path.basename(model).split(".")[0]
    else:
        folder, name = os.path.dirname(model), os.path.splitext(os.path.basename(model))[0]
    return free_name(os.path.join(folder, f"evaluate-{name}-{backend}.json"))


def timed_predict(predictor, images, check=None):
    """(logits, img/s) of the images; `check(logits)` of the warm-up batch first, before the whole pass."""
    first = predictor.predict(images[: predictor.batch_size])  # warm-up: session init, tracing
    if check is not None:
        check(first)
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
    reading = layout.reading([a.model, a.against and a.against.split(":", 1)[1]], "evaluate")  # before any work
    if "trt" in (a.backend, (a.against or ":").split(":", 1)[0]):  # TensorRT beside TensorFlow's allocator
        import_tensorflow_quietly()
        from engine.devices import allow_memory_growth
        allow_memory_growth()
    tf32 = devices.tf32_override() if "tf" in (a.backend, (a.against or ":").split(":", 1)[0]) else None

    def open_(backend, path):
        opts = {"onnx": {"optimization": a.ort_optimization},
                "openvino": {"precision": a.openvino_precision}}.get(backend, {})
        return open_predictor(backend, path, a.batch_size, **opts)
    with reading:  # a run's checkpoint, read whole: no engine train starts in it meanwhile
        predictor = open_(a.backend, a.model)
        other = open_(*a.against.split(":", 1)) if a.against else None
    former, image_size = LEGACY_DATA.get(a.data), a.image_size
    if former and tuple(predictor.image_shape) == IMAGE_SHAPE:
        # a model trained on --data digits when those were 32x32x3: the same images, by their name today
        print(f"note: {a.model} takes {shape_text(IMAGE_SHAPE)} images: evaluating on --data {former}, "
              f"the {a.data} at that shape")
        a.data, image_size = former, ""
    splits = data.load(a.data, a.cache_dir or default_cache_dir(), label_mode=a.label_mode, image_size=image_size)
    x, y = splits.x_test, splits.y_test
    for p in (predictor, other):
        if p is not None and tuple(x.shape[1:]) != tuple(p.image_shape):
            raise EngineError(f"--data {a.data} has {shape_text(x.shape[1:])} images but {p.path} takes "
                              f"{shape_text(p.image_shape)}: evaluate it on the data it was trained on")
    if a.limit_test:
        x, y, _, _ = data.balanced_subset(x, y, a.limit_test, seed=0, num_classes=splits.num_classes)
    def classes_check(logits):  # on the first batch, not after the whole test set
        if logits.shape[1] != splits.num_classes:
            raise EngineError(f"{a.model} has {logits.shape[1]} outputs but --data {a.data} has {splits.num_classes} "
                              f"classes{' (--label-mode ' + a.label_mode + ')' if a.label_mode != 'fine' else ''}: "
                              f"evaluate it on the classes it was trained on")
    logits, ips = timed_predict(predictor, x, classes_check)
    report = {"backend": a.backend, "model": os.path.abspath(a.model), "data": a.data,
              "label_mode": a.label_mode, "image_size": a.image_size, "classes": splits.num_classes,
              "run": a.run and os.path.abspath(a.run), "images": len(x),
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
