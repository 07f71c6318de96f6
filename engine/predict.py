"""`engine predict IMAGE|DIR ... --model RUN|model.onnx|model.savedmodel|model.engine`: class names
and probabilities for PNG/JPEG images, from any export (the backend follows from the path).

    engine predict cat.png --model runs/airbench
    engine predict photos/ --model runs/airbench/model.onnx --topk 3 --json

Images must have the model's size (its export's input, e.g. 32x32 for CIFAR-10, 28x28 for MNIST);
`--resize` scales other sizes first (said once on stderr, with the sizes it scaled from). Images are converted to the model's channels (said once on
stderr): grey, 16-bit, palette, RGBA and CMYK to RGB for an RGB model, colour to grey (luminance) for
a grayscale one. A folder is read with its
subfolders.
"""
from __future__ import annotations

import collections
import json
import os
import stat
import sys

import numpy as np

from engine import layout
from engine.cli import Parser, integer
from engine.contract import IMAGE_SHAPE
from engine.data.images import (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, open_image, read_regular, shape_of,
                                size_checked_here, to_rgb)
from engine.data.images import decode as decode_pixels
from engine.errors import EngineError, cli

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
SIZE = (IMAGE_SHAPE[1], IMAGE_SHAPE[0])  # PIL's (width, height) of CIFAR-10's images


def parse(argv=None):
    p = Parser(prog="engine predict", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="PNG/JPEG files, or folders of them")
    p.add_argument("--model", required=True,
                   help="a run directory, or an export: .onnx, .savedmodel folder, OpenVINO .xml, TensorRT .engine")
    p.add_argument("--topk", type=integer, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of lines")
    p.add_argument("--resize", action="store_true",
                   help="scale images of another size to the model's (up to 67 megapixels; grey, palette "
                        "and RGBA images are converted to the model's channels without it)")
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
        names = read_json(layout.run_file(path, layout.CLASSES_FILE), None)
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
    """The image files named, and those in the folders named and their subfolders (a folder of class
    folders, such as a data set's test/, is read whole), in sorted order."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):  # does not follow links to folders
                dirs.sort()
                out += [_regular(os.path.join(root, f)) for f in sorted(files) if f.lower().endswith(IMAGE_EXTS)]
        elif os.path.exists(p):
            out.append(_regular(p))
        else:
            raise EngineError(f"image not found: {printable(p)}")
    if not out:
        raise EngineError(f"no PNG or JPEG images in {printable(', '.join(paths))}")
    return out


def _regular(path: str) -> str:
    """`path`, unless it is a FIFO, socket or device (reading one could block forever)."""
    try:
        st = os.stat(path)
    except OSError:
        return path  # a dangling link: decoding names it
    if not stat.S_ISREG(st.st_mode):
        raise EngineError(f"refusing image {printable(path)}: not a regular file")
    return path


def printable(text: str) -> str:
    """`text` with control characters (newlines, escapes, bidi overrides, undecodable bytes) shown as
    escapes, so a class or file name prints as one line of what it is."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape", "backslashreplace").decode()
                   for c in text)


def decode(path: str, resize: bool, shape=IMAGE_SHAPE) -> tuple[np.ndarray, str | None, tuple | None]:
    """A uint8 image of `shape` [H, W, C] (the model's), the mode it was converted from (None where
    it had the model's: RGB, or L for C = 1) and the (H, W) it was scaled from (None where it had the
    model's). The size is checked from the header before any pixel is decoded; other modes are
    converted (to RGB: grey, 16-bit grey, palette, RGBA, CMYK; to grey: any of those by its
    luminance); other sizes are scaled only with `resize`."""
    from PIL import Image
    h, w, c = shape
    size, want = (w, h), "RGB" if c == 3 else "L"
    name = printable(path)
    img = open_image(read_regular(path, MAX_IMAGE_BYTES, "image", name), name, MAX_IMAGE_PIXELS)
    with img:
        if img.size != size and not resize:
            raise EngineError(f"image {name} is {shape_of(img).split()[0]}, the model takes {h}x{w}x{c} "
                              f"{'RGB' if c == 3 else 'grayscale'}; pass --resize to scale it")
        mode, scaled = img.mode, (None if img.size == size else img.size[::-1])
        out = decode_pixels(img, name)
        out = out if out.mode == want else to_rgb(out) if want == "RGB" else _to_gray(out)
        if out.size != size:
            out = out.resize(size, Image.BILINEAR)
        arr = np.asarray(out)
    return arr.reshape(h, w, c), (None if mode == want else mode), scaled


def resized_text(sizes: list, most: int = 3) -> str:
    """'3 images from 40x40, 24x20' for the (H, W) sizes images were scaled from: each size once, the
    commonest first, at most `most` of them."""
    counts = collections.Counter(sizes).most_common()
    shown = ", ".join(f"{h}x{w}" for (h, w), _ in counts[:most])
    more = f" and {len(counts) - most} other sizes" if len(counts) > most else ""
    n = len(sizes)
    return f"{n} image{'s' * (n > 1)} from {shown}{more}"


def _to_gray(img):
    """8-bit grey (PIL's L: ITU-R 601-2 luminance) of a decoded image, through to_rgb's handling of
    16-bit grey, palettes and alpha."""
    return to_rgb(img).convert("L")


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
    from engine import layout
    with layout.reading([a.model], "predict"):  # a run's checkpoint, read whole: not one being trained
        predictor = open_predictor(backend, a.model)  # its input says the images' shape
    shape = predictor.image_shape
    with size_checked_here():
        decoded = [decode(f, a.resize, shape) for f in files]
    images = np.stack([arr for arr, _, _ in decoded])
    modes = sorted({m for _, m, _ in decoded if m})
    if modes:
        n = sum(m is not None for _, m, _ in decoded)
        alpha = " (transparency ignored)" if any("A" in m or "a" in m for m in modes) else ""
        target = "RGB" if shape[2] == 3 else "grayscale (L)"
        print(f"note: converted {n} image{'s' * (n > 1)} from mode {', '.join(modes)} to {target}{alpha}",
              file=sys.stderr)
    scaled = [s for _, _, s in decoded if s]
    if scaled:
        print(f"note: resized {resized_text(scaled)} to the model's {shape[0]}x{shape[1]}", file=sys.stderr)
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
            print(f"{printable(r['image'])}: " + ", ".join(f"{printable(str(t['class']))} {t['probability']:.3f}"
                                                         for t in r["top"]))


if __name__ == "__main__":
    main()
