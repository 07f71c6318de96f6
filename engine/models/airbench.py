"""airbench94 (Keller Jordan, 2024) in Keras: the fastest known CIFAR-10 recipe, 94% in 3.8 s on an A100.

    2x2 conv 3->24, frozen, initialised by patch whitening (bias trains 3 epochs) -> GELU
    3 groups (widths 64, 256, 256): conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU
    maxpool 3 -> dense 256->10 (no bias) -> x 1/9

BatchNorm has no trainable scale (fixed at 1), a trainable bias, epsilon 1e-12 and running-stat
momentum 0.6. Convs have no bias and the first `in_channels` filters are identity (Dirac) kernels;
the rest and the dense layer use PyTorch's default uniform(+-1/sqrt(fan_in)) init, as the reference
does. About 2.0M parameters. The training recipe (the `RECIPE` below and the engine's alternating
flip, lookahead, BN-bias LR scale and TTA) is the reference's, expressed in engine flags.
"""
import numpy as np

import keras

from engine.models import ModelSpec, register
from engine.models.layers import MaxPool2, gelu_erf

L = keras.layers
WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4
WHITEN_IMAGES = 5000


def _torch_default():
    """PyTorch's default conv/linear init: kaiming_uniform(a=sqrt(5)) = uniform(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="engine")
class DiracInit(keras.initializers.Initializer):
    """The first `in_channels` output filters are identity kernels (a centred 1 on their own input
    channel), the rest PyTorch's default init: at init each conv passes its input through."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        dirac = np.zeros((kh, kw, cin, n), np.float32)
        dirac[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        rest = keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform",
                                                  seed=self.seed)((kh, kw, cin, cout - n), dtype)
        return keras.ops.concatenate([keras.ops.cast(dirac, rest.dtype), rest], axis=-1)

    def get_config(self):
        return {"seed": self.seed}


def conv(x, width):
    return L.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=DiracInit())(x)


def norm(x):
    return L.BatchNormalization(momentum=0.6, epsilon=1e-12, scale=False, center=True)(x)


def group(x, width):
    x = L.Activation(gelu_erf)(norm(MaxPool2()(conv(x, width))))
    return L.Activation(gelu_erf)(norm(conv(x, width)))


def make_body(widths=(64, 256, 256)):
    def body(x, num_classes, opts=None):
        scale = opts.width if opts is not None else 1.0
        whiten = L.Conv2D(2 * 3 * WHITEN_KERNEL ** 2, WHITEN_KERNEL, padding="valid", use_bias=True,
                          name="whiten")
        x = L.Activation(gelu_erf)(whiten(x))
        whiten.kernel.trainable = False  # set from the data by whiten_init; only its bias trains
        for width in widths:
            x = group(x, max(1, int(round(width * scale))))
        x = L.GlobalMaxPooling2D()(x)  # the reference's MaxPool2d(3) over the final 3x3 map
        x = L.Dense(num_classes, use_bias=False, kernel_initializer=_torch_default())(x)
        return L.Rescaling(1.0 / 9.0)(x)
    return body


def whitening_filters(images: np.ndarray, kernel: int = WHITEN_KERNEL, eps: float = WHITEN_EPS) -> np.ndarray:
    """Patch-whitening conv kernels [k, k, C, 2*k*k*C] from normalised NHWC float images.

    The eigenvectors of the (uncentred) covariance of all k x k patches, largest eigenvalue first,
    each divided by sqrt(eigenvalue + eps), followed by the same filters negated (the GELU after the
    layer then sees both signs of every whitened component)."""
    x = np.asarray(images, np.float32)
    n, h, w, c = x.shape
    cols = [x[:, i:h - kernel + 1 + i, j:w - kernel + 1 + j, :] for i in range(kernel) for j in range(kernel)]
    patches = np.stack(cols, axis=3).reshape(-1, kernel * kernel * c)  # (i, j, c) order = Keras kernel order
    cov = (patches.T.astype(np.float64) @ patches.astype(np.float64)) / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns are filters
    filters = np.concatenate([filters, -filters], axis=1)
    return filters.reshape(kernel, kernel, c, -1).astype(np.float32)


def whitening_sample(num_images: int, size: int = WHITEN_IMAGES) -> np.ndarray:
    """Indices of the (up to) `size` training images the whitening is computed from: a fixed random
    sample of the whole set, in index order. The reference takes the first 5,000 of CIFAR-10's
    shuffled-by-nature batches; a class-folder copy is loaded sorted by class, where the first 5,000
    are all airplanes (whitening from those left the components' variance at 0.6-1.4 on the whole
    set instead of ~1)."""
    return np.sort(np.random.default_rng(0).permutation(num_images)[:size])


def whiten_init(model, images, preprocess):
    """Set the frozen whitening conv from a fixed random sample of 5,000 training images."""
    layer = model.get_layer("whiten")
    x = preprocess(images[whitening_sample(len(images))]).numpy()
    layer.kernel.assign(whitening_filters(x, layer.kernel.shape[0]))
    layer.bias.assign(np.zeros(layer.bias.shape, np.float32))


# The reference's hyperparameters in engine units. The engine's loss is the batch MEAN; the
# reference sums over a batch of 1024 with lr 11.5 / (1024 * (1 + 1/(1 - 0.85))) per step, which is
# lr 1.5 here. Its weight decay 0.0153 * 1024 / (1024 * (1 + 1/0.15)) enters the gradient divided by
# the lr (PyTorch SGD's coupled L2): a coefficient of 0.0153 / 11.5 on the mean-loss gradient.
RECIPE = {
    "model.crop_pad": 2, "model.pad_mode": "reflect", "model.flip": "alternate", "model.tta": 2,
    "optim.optimizer": "sgd", "optim.lr": 1.5, "optim.momentum": 0.85, "optim.nesterov": True,
    "optim.sgd_momentum": "pytorch", "optim.weight_decay": 0.0153 / 11.5, "optim.weight_decay_mode": "l2",
    "optim.bias_lr_scale": 64.0,
    "optim.schedule": "onecycle", "optim.warmup": 0.23, "optim.lr_start": 0.2, "optim.lr_end": 0.07,
    "optim.label_smoothing": 0.2, "optim.epochs": 9.9, "optim.batch_size": 1024, "optim.lookahead": True,
}

register(ModelSpec("airbench", make_body(), normalization="cifar10",
                   description="airbench94 (Keller Jordan): whitened 2x2 stem + 3 conv groups, ~2.0M params; "
                               "the default recipe",
                   recipe=RECIPE, data_init=whiten_init, data_init_frozen=("whiten/kernel",),
                   train_epochs={"whiten/bias": 3}, options=("width",), cpu_xla_speedups=(1.48, 0.79, 0.84)))
