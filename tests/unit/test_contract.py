"""The exported contract's input checks and the inference batch rule."""
import numpy as np
import pytest

from engine.contract import check_images, inference_batch
from engine.errors import EngineError


@pytest.mark.parametrize("images,message", [
    ([[0]], "must be a numpy array"),
    (np.zeros((2, 32, 32, 3), np.float32), "must be uint8"),
    (np.zeros((2, 32, 32), np.uint8), "NHWC [N,32,32,3]"),
    (np.zeros((2, 64, 64, 3), np.uint8), "NHWC [N,32,32,3]"),
])
def test_bad_images_are_refused_in_one_line(images, message):
    with pytest.raises(EngineError, match=message.replace("[", r"\[")):
        check_images(images)


def test_good_images_pass_through():
    x = np.zeros((0, 32, 32, 3), np.uint8)
    assert check_images(x) is x


def test_inference_batches_shrink_with_the_input_side():
    assert inference_batch(32) == inference_batch(64) == 256
    assert inference_batch(224) == 20 and inference_batch(4096) == 1


def test_images_are_checked_against_a_given_shape():
    from engine.contract import contract_text, export_shape, parse_shape, shape_text
    x = np.zeros((2, 28, 28, 1), np.uint8)
    assert check_images(x, (28, 28, 1)) is x
    with pytest.raises(EngineError, match=r"images must be NHWC \[N,28,28,1\], got \[2, 32, 32, 3\]"):
        check_images(np.zeros((2, 32, 32, 3), np.uint8), (28, 28, 1))
    assert contract_text((64, 64, 3)) == "uint8 NHWC [N,64,64,3] images -> float32 [N,classes] logits"
    assert parse_shape("") == (32, 32, 3) and parse_shape("28x28x1") == (28, 28, 1) and shape_text((8, 8, 1)) == "8x8x1"
    for bad in ("28x28", "28x28x4", "0x28x1", "axbxc"):
        with pytest.raises(ValueError):
            parse_shape(bad)
    assert export_shape(["N", 28, 28, 1]) == (28, 28, 1) and export_shape(["N", "h", "w", 3]) == (32, 32, 3)
    assert export_shape(["N", 28, 28, 2]) is None and export_shape(["N", 28, 28]) is None
