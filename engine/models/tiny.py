"""A very small CNN for tests and smoke runs."""
import keras

from engine.models.layers import MaxPool2


def body(x, num_classes, opts=None, name="tiny"):
    L = keras.layers
    for width in (16, 32):
        x = L.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)
        x = L.ReLU()(x)
        x = MaxPool2()(x)
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(num_classes)(x)

