"""ResNet-9: the DAWNBench CIFAR-10 net of David Page (Myrtle.ai), 94% in 24 epochs.

prep conv64 -> [conv128, pool, residual(2 x conv128)] -> [conv256, pool] ->
[conv512, pool, residual(2 x conv512)] -> global max pool -> dense -> x0.125. About 6.6M parameters.
"""
import keras

from engine.models.layers import MaxPool2

L = keras.layers


def conv_bn(x, width, pool=False):
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(x)
    if pool:
        x = MaxPool2()(x)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return L.ReLU()(x)


def residual(x, width):
    return L.Add()([x, conv_bn(conv_bn(x, width), width)])


def body(x, num_classes, opts=None, name="resnet9"):
    x = conv_bn(x, 64)
    x = residual(conv_bn(x, 128, pool=True), 128)
    x = conv_bn(x, 256, pool=True)
    x = residual(conv_bn(x, 512, pool=True), 512)
    x = L.GlobalMaxPooling2D()(x)
    x = L.Dense(num_classes, use_bias=False)(x)
    return L.Rescaling(0.125)(x)  # Page's output scale: keeps early logits small

