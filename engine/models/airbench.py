"""airbench94 (Keller Jordan, 2024) in Keras: the fastest known CIFAR-10 recipe, 94% in 3.8 s on an A100.

    2x2 conv C->8C (24 for RGB, 8 for grayscale), frozen, initialised by patch whitening (bias trains 3 epochs) -> GELU
    3 groups (widths 64, 256, 256): conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU
    maxpool 3 -> dense 256->10 (no bias) -> x 1/9

BatchNorm has no trainable scale (fixed at 1), a trainable bias, epsilon 1e-12 and running-stat
momentum 0.6. Convs have no bias and the first `in_channels` filters are identity (Dirac) kernels;
the rest and the dense layer use PyTorch's default uniform(+-1/sqrt(fan_in)) init, as the reference
does. About 2.0M parameters. The training recipe (the engine's alternating
flip, lookahead, BN-bias LR scale and TTA) is the reference's, in engine units: engine.recipes.AIRBENCH.
"""
import numpy as np

import keras

from engine.models.layers import GELU, MaxPool2

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


def norm(x, momentum=0.6):
    return L.BatchNormalization(momentum=momentum, epsilon=1e-12, scale=False, center=True)(x)


def group(x, width, bn_momentum=0.6):
    x = GELU()(norm(MaxPool2()(conv(x, width)), bn_momentum))
    return GELU()(norm(conv(x, width), bn_momentum))


WIDTHS = (64, 256, 256)


def _unit_std():
    """airbench94_muon's head init: PyTorch's default rescaled to standard deviation 1."""
    return keras.initializers.RandomUniform(-3.0 ** 0.5, 3.0 ** 0.5)


def body(x, num_classes, opts=None, name="airbench"):
    """airbench94's net; as `airbench-muon`, airbench94_muon's: the head initialised at standard deviation
    1 and its logits scaled by 1/width instead of 1/9 (the same logits at init, a different effective
    head LR)."""
    scale = opts.width if opts is not None else 1.0
    bn_momentum = opts.bn_momentum if opts is not None else 0.6
    # The stem computes in float32 under every precision policy (under 0.1% of a step's FLOPs). In
    # bfloat16 its bias's gradient came out wrong (relative error 2.0 against float32's after 8
    # airbench-muon steps; 0.02 with the stem in float32), and airbench-muon trains that bias at a
    # large LR: its bfloat16 runs scored far below float32's.
    # One filter pair per component of a k x k patch: 24 for RGB, 8 for grayscale.
    whiten = L.Conv2D(2 * x.shape[-1] * WHITEN_KERNEL ** 2, WHITEN_KERNEL, padding="valid", use_bias=True, name="whiten",
                      dtype="float32")
    x = GELU(dtype="float32")(whiten(x))
    whiten.kernel.trainable = False  # set from the data by data_init; only its bias trains
    for width in WIDTHS:
        x = group(x, max(1, int(round(width * scale))), bn_momentum)
    x = L.GlobalMaxPooling2D()(x)  # the reference's MaxPool2d(3) over the final 3x3 map
    muon = name == "airbench-muon"
    x = L.Dense(num_classes, use_bias=False, kernel_initializer=_unit_std() if muon else _torch_default())(x)
    return L.Rescaling(1.0 / (max(1, int(round(WIDTHS[-1] * scale))) if muon else 9.0))(x)


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
    sample of the whole set, in index order (the reference takes the first 5,000 of CIFAR-10's
    mixed-class batches; a class-folder copy loads sorted by class, so its first 5,000 would be one
    class)."""
    return np.sort(np.random.default_rng(0).permutation(num_images)[:size])


def data_init(model, images, preprocess):
    """Set the frozen whitening conv from a fixed random sample of 5,000 training images."""
    layer = model.get_layer("whiten")
    x = preprocess(images[whitening_sample(len(images))]).numpy()
    layer.kernel.assign(whitening_filters(x, layer.kernel.shape[0]))
    layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
