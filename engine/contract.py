"""The exported contract and the image format the engine works in, for every format and backend.

Every model the engine trains or exports takes uint8 NHWC images of one shape [H, W, C] (C = 1 for
grayscale, 3 for RGB; input `images`, any batch size) and returns float32 logits [N, classes] (output
`logits`). The shape is the training data's, stored in the run (config.json's data.image_shape; a run
without one is CIFAR-10's 32x32x3) and in every export's metadata. Upsampling, channel repetition and
normalisation happen inside the graph (engine.kernels), so a deployed model takes raw pixels.
"""
from __future__ import annotations

import numpy as np

from engine.errors import EngineError

IMAGE_SIDE = 32
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 3)
INPUT = "images"
OUTPUT = "logits"
CHANNELS = (1, 3)


def contract_text(shape=IMAGE_SHAPE) -> str:
    """The contract of a model taking images of `shape` [H, W, C], in words."""
    h, w, c = shape
    return f"uint8 NHWC [N,{h},{w},{c}] images -> float32 [N,classes] logits"


CONTRACT = contract_text()  # CIFAR-10's
CONTRACT_ANY = "uint8 NHWC [N,H,W,C] images, C 1 or 3 -> float32 [N,classes] logits"  # every export's


def export_shape(dims) -> tuple[int, int, int] | None:
    """The image shape [H, W, C] of an export's input dims [N, H, W, C] (a dim not fixed: 32x32x3's),
    or None where they are not of the contract (not 4 dims, C not 1 or 3)."""
    dims = list(dims)
    if len(dims) != 4:
        return None
    shape = tuple(d if isinstance(d, int) and d > 0 else want for d, want in zip(dims[1:], IMAGE_SHAPE))
    return shape if shape[2] in CHANNELS else None
OPENVINO_RT_INFO = "engine"  # the section of an OpenVINO IR's rt_info that holds the export's metadata
# The preprocessing every exported graph carries (engine.kernels implements them).
UPSAMPLE_METHODS = ("nearest", "bilinear")
NORMALIZATIONS = ("cifar10", "torch", "tf", "caffe", "unit", "raw")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def inference_batch(side: int) -> int:
    """Images per inference batch for side x side model inputs: 256 up to 64x64, fewer above so
    that a batch's activations stay the same size (256 VGG19 inputs at 224x224 exhausted 24 GiB)."""
    return max(1, min(256, 256 * 64 * 64 // (side * side)))


def shape_text(shape) -> str:
    """[H, W, C] as config.json and messages write it: "28x28x1"."""
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str) -> tuple[int, int, int]:
    """A stored image shape ("HxWxC", C 1 or 3) as a tuple; "" (a run saved before shapes were
    stored) is CIFAR-10's 32x32x3. ValueError for anything else."""
    if not text:
        return IMAGE_SHAPE
    parts = str(text).split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected HxWxC, e.g. 28x28x1, got {text!r}")
    h, w, c = (int(p) for p in parts)
    if h < 1 or w < 1 or c not in CHANNELS:
        raise ValueError(f"expected HxWxC with sides >= 1 and C 1 or 3, got {text!r}")
    return h, w, c


def check_images(images, shape=IMAGE_SHAPE) -> np.ndarray:
    """`images` if it is a uint8 [N,H,W,C] numpy array of `shape` [H, W, C]; a one-line error otherwise."""
    shape = tuple(int(d) for d in shape)
    if not isinstance(images, np.ndarray):
        raise EngineError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise EngineError(f"images must be uint8 (raw pixels), got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != shape:
        raise EngineError(f"images must be NHWC [N,{','.join(map(str, shape))}], got {list(images.shape)}")
    return images
