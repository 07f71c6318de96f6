"""The inference preprocessing of a model: uint8 32x32 images -> upsample -> normalise -> the
float32 input the model takes. One object, shared by the train step, the export graph, the linear
probe and data-dependent inits, so that all of them see the same pixels."""
from __future__ import annotations

from dataclasses import dataclass

from engine.kernels.normalize import normalize
from engine.kernels.upsample import upsample


@dataclass(frozen=True)
class Preprocess:
    size: int                      # the model's input side (32: no upsampling)
    normalization: str = "cifar10"  # a kernels.normalize mode
    method: str = "nearest"        # a kernels.upsample method

    def __call__(self, images):
        return normalize(upsample(images, self.size, self.method), self.normalization)
