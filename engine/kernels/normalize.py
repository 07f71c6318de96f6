"""Pixel normalisation: uint8 (or float 0..255) RGB or grayscale in, float32 model input out.

A grayscale (1-channel) image takes each mode's statistics averaged over the three channels (caffe:
no channel reversal), so a model that keeps one channel sees values on the scale an RGB model does.

Each mode is one model family's convention, written once here and used by training and export:
- `cifar10`: scale to [0,1], subtract the CIFAR-10 channel mean, divide by its std.
- `torch`:   the same with ImageNet statistics (keras.applications densenet, `mode="torch"`).
- `tf`:      scale to [-1, 1] (keras.applications inception_v3, `mode="tf"`).
- `caffe`:   RGB->BGR, subtract the ImageNet BGR mean pixel, no scaling (vgg16/19, resnet50).
- `unit`:    scale to [0,1].
- `raw`:     float32 0..255, for a model that scales its inputs itself (e.g. a preprocess_input layer).
"""
import tensorflow as tf

from engine.contract import NORMALIZATIONS

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _stats(values, channels):
    """Per-channel constants for `channels` channels: as given for 3, their mean for 1."""
    return tf.constant(values if channels == 3 else (sum(values) / len(values),) * channels)


def normalize(images, mode="cifar10"):
    x = tf.cast(images, tf.float32)
    c = x.shape[-1]
    if mode == "cifar10":
        return (x / 255.0 - _stats(CIFAR10_MEAN, c)) / _stats(CIFAR10_STD, c)
    if mode == "torch":
        return (x / 255.0 - _stats(IMAGENET_MEAN, c)) / _stats(IMAGENET_STD, c)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return (tf.reverse(x, axis=[-1]) if c == 3 else x) - _stats(CAFFE_MEAN_BGR, c)
    if mode == "unit":
        return x / 255.0
    if mode == "raw":
        return x
    raise ValueError(f"unknown normalization {mode!r}; choose from {NORMALIZATIONS}")
