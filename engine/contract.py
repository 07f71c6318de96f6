"""The exported contract and the image format the engine works in, for every format and backend.

Every model the engine trains or exports takes uint8 NHWC images of 32x32 RGB pixels (input
`images`, any batch size) and returns float32 logits [N, classes] (output `logits`). Upsampling and
normalisation happen inside the graph (engine.kernels), so a deployed model takes raw pixels.
"""
from __future__ import annotations

import numpy as np

from engine.errors import EngineError

IMAGE_SIDE = 32
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 3)
INPUT = "images"
OUTPUT = "logits"
CONTRACT = "uint8 NHWC [N,32,32,3] images -> float32 [N,classes] logits"
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


def check_images(images) -> np.ndarray:
    """`images` if it is a uint8 [N,32,32,3] numpy array; a one-line error otherwise."""
    if not isinstance(images, np.ndarray):
        raise EngineError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise EngineError(f"images must be uint8 (raw pixels), got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise EngineError(f"images must be NHWC [N,32,32,3], got {list(images.shape)}")
    return images
