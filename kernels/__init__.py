"""Device-side image ops: plain TensorFlow functions, XLA-compilable, with no Python state.

The training step and the export graph both call these, so that what a model saw while training is
what it sees when deployed (TF, ONNX and TensorRT agree by construction).
"""
from kernels.augment import alternating_flip, flip_left_right, random_crop, random_flip, translate
from kernels.normalize import NORMALIZATIONS, normalize
from kernels.upsample import upsample

__all__ = ["NORMALIZATIONS", "alternating_flip", "flip_left_right", "normalize", "random_crop", "random_flip",
           "translate", "upsample"]
