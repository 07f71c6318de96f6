"""`engine predict IMAGE|DIR ... --model RUN|model.onnx|model.savedmodel|model.engine`: class names
and probabilities for PNG/JPEG images, from any export (the backend follows from the path).

    engine predict cat.png --model runs/airbench
    engine predict photos/ --model runs/airbench/model.onnx --topk 3 --json

Images must be 32x32 RGB (the exported contract); `--resize` converts any other size or mode first.
"""
from __future__ import annotations

import json
import os

import numpy as np

from engine.cli import Parser, integer
from engine.contract import IMAGE_SHAPE
from engine.errors import EngineError, cli

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def parse(argv=None):
    p = Parser(prog="engine predict", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="PNG/JPEG files, or folders of them")
    p.add_argument("--model", required=True,
                   help="a run directory, or an export: .onnx, .savedmodel folder, OpenVINO .xml, TensorRT .engine")
    p.add_argument("--topk", type=integer, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of lines")
    p.add_argument("--resize", action="store_true", help="convert images of another size or mode to 32x32 RGB")
    a = p.parse_args(argv)
    if a.topk < 1:
        raise EngineError("--topk must be at least 1")
    return a


def class_names(path: str, backend: str, predictor=None) -> list | None:
    """The class names an export or run carries (None where it has none): from the open predictor's
    metadata (ONNX, OpenVINO), the run or SavedModel's files, or the ONNX file export trt writes beside."""
    from engine.files import read_json
    names = getattr(predictor, "metadata", {}).get("class_names")
    if names:
        return json.loads(names)
    if backend == "tf":
        names = read_json(os.path.join(path, "classes.json"), None)
        return names or read_json(os.path.join(path, "assets.extra.engine.json"), {}).get("class_names")
    if backend == "openvino":
        return None
    onnx_path = path if backend == "onnx" else os.path.splitext(path)[0] + ".onnx"  # export trt writes it beside
    if not os.path.isfile(onnx_path):
        return None
    from engine.runtime import onnx_metadata
    meta = onnx_metadata(onnx_path)
    return json.loads(meta["class_names"]) if "class_names" in meta else None


def image_files(paths: list) -> list:
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTS))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise EngineError(f"image not found: {p}")
    if not out:
        raise EngineError(f"no PNG or JPEG images in {', '.join(paths)}")
    return out


def decode(path: str, resize: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img.load()
            if resize:
                img = img.convert("RGB").resize(IMAGE_SHAPE[:2], Image.BILINEAR)
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise EngineError(f"cannot decode image {path}: {e}") from None
    if arr.shape != IMAGE_SHAPE or arr.dtype != np.uint8:
        got = "x".join(map(str, arr.shape))
        raise EngineError(f"image {path} is {got}, the model takes 32x32x3 RGB; pass --resize to convert it")
    return arr


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@cli
def main(argv=None):
    a = parse(argv)
    if not os.path.exists(a.model):
        raise EngineError(f"model not found: {a.model}")
    from engine.runtime import backend_of, open_predictor
    backend = backend_of(a.model)
    files = image_files(a.images)
    images = np.stack([decode(f, a.resize) for f in files])
    predictor = open_predictor(backend, a.model)
    probs = softmax(predictor.predict(images).astype(np.float64))
    names = class_names(a.model, backend, predictor) or [str(i) for i in range(probs.shape[1])]
    results = []
    for f, p in zip(files, probs):
        top = np.argsort(-p)[:a.topk]
        results.append({"image": f, "top": [{"class": names[i], "index": int(i), "probability": float(p[i])}
                                            for i in top]})
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))


if __name__ == "__main__":
    main()
