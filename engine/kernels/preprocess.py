"""The inference preprocessing of a model: uint8 [H,W,C] images -> the float32 input the model takes
(normalised, upsampled to its input side; a grayscale image's channel repeated for a model taking RGB,
e.g. a keras.applications backbone). One object, shared by the train step, the export graph,
the linear probe and data-dependent inits, so that all of them see the same pixels.

Normalising comes first: it is per-pixel and per-channel affine, so it commutes with both upsampling
methods (nearest repeats pixels, bilinear takes weighted means whose weights sum to 1), and the
upsampling then works on float32. On uint8 it would be a uint8 Gather, which TensorFlow has no GPU
kernel for and TensorRT does not take (UINT8 only as a network input or output)."""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from engine.kernels.normalize import normalize
from engine.kernels.upsample import sides, upsample


@dataclass(frozen=True)
class Preprocess:
    size: int | tuple              # the model's input side, or (height, width) when not square (the image's: no upsampling)
    normalization: str = "cifar10"  # a kernels.normalize mode
    method: str = "nearest"        # a kernels.upsample method
    channels: int = 3              # the model's input channels: 3 repeats a 1-channel image's (gray -> RGB)

    @property
    def hw(self) -> tuple[int, int]:
        """The model's input (height, width)."""
        return sides(self.size)

    @property
    def side(self) -> int:
        """The model's longer input side (what inference batches are sized by)."""
        return max(self.hw)

    def __call__(self, images):
        if images.shape[-1] == 1 and self.channels == 3:
            # Repeated before normalising: an RGB model's per-channel statistics apply to each copy.
            images = tf.concat([images] * 3, axis=-1)
        return upsample(normalize(images, self.normalization), self.size, self.method)
