"""The digits' names against a run's saved config, and the input side each registered model takes for
8x8 images (no TensorFlow)."""
import json

import pytest

from engine import models
from engine.config import Config
from engine.errors import EngineError


def _saved(tmp_path, data: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": data, "model": {"model": "tiny"}}))
    return Config.load(str(path))


def test_a_run_saved_without_an_image_shape_on_digits_reads_digits32(tmp_path):
    cfg = _saved(tmp_path, {"data": "digits"})
    assert (cfg.data.data, cfg.image_shape) == ("digits32", (32, 32, 3))


@pytest.mark.parametrize("data,shape", [({"data": "digits", "image_shape": "8x8x1"}, (8, 8, 1)),
                                        ({"data": "digits32", "image_shape": "32x32x3"}, (32, 32, 3)),
                                        ({"data": "mnist"}, (32, 32, 3))])
def test_a_run_that_stored_its_shape_or_another_source_keeps_its_data(tmp_path, data, shape):
    cfg = _saved(tmp_path, data)
    assert (cfg.data.data, cfg.image_shape) == (data["data"], shape)


@pytest.mark.parametrize("model,side", [("tiny", 8), ("resnet9", 8), ("airbench", 16), ("airbench-muon", 16),
                                        ("vgg16", 64), ("vgg19", 224), ("inception_v3", 75), ("densenet121", 64),
                                        ("resnet50", 64)])
def test_every_registered_model_takes_8x8_images_at_a_side_it_can_pool(model, side):
    """Below a model's smallest side the images are enlarged by the least whole factor that reaches it
    (airbench: 9 -> 16, each pixel repeated); a backbone's default side is larger anyway."""
    spec = models.get(model)
    assert models.input_size(spec, 0, (8, 8, 1)) == side >= spec.min_size
    assert models.input_size(spec, 0, (28, 28, 1)) == max(28, spec.default_size)  # unchanged above the floor


def test_an_upsample_below_the_smallest_side_says_the_side_and_how_to_reach_it():
    with pytest.raises(EngineError, match=r"airbench needs inputs of at least 9x9 \(its smallest side\), got "
                                          r"--upsample 8; give --upsample 9 or more or leave it out"):
        models.input_size(models.get("airbench"), 8, (8, 8, 1))
