"""Device-side image ops: plain TensorFlow functions, XLA-compilable, with no Python state. They
import nothing of the engine but its contract (the image format and the names of the modes).

The training step and the export graph both call these, so that what a model saw while training is
what it sees when deployed (TF, ONNX and TensorRT agree by construction).
"""
from engine.kernels.augment import alternating_flip, color_jitter, flip_left_right, random_crop, random_flip, translate
from engine.kernels.normalize import NORMALIZATIONS, normalize
from engine.kernels.preprocess import Preprocess
from engine.kernels.upsample import METHODS, downsample, upsample

__all__ = ["METHODS", "NORMALIZATIONS", "Preprocess", "alternating_flip", "color_jitter", "downsample", "flip_left_right", "normalize", "random_crop", "random_flip",
           "translate", "upsample"]
