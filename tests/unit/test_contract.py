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
