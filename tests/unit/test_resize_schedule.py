"""--resize-schedule (progressive resizing) without training: the flag's parsing and refusals, the
phases in steps, the train calls cut at a phase's end, the FLOPs of a model at a smaller side."""
import subprocess
import sys

import pytest

from engine import config as C
from engine.errors import EngineError
from engine.train import resize, resolve
from engine.train.trainer import steps_in_call


@pytest.mark.parametrize("text,phases,stored", [
    ("", (), ""),
    ("24:0.4", ((24, 0.4),), "24:0.4"),
    (" 20:.25, 24:0.5 ", ((20, 0.25), (24, 0.5)), "20:0.25,24:0.5"),
])
def test_a_schedule_parses_to_its_phases_and_is_stored_in_one_spelling(text, phases, stored):
    assert C.parse_resize(text) == phases
    assert C.coerce("model", "resize_schedule", text) == stored


@pytest.mark.parametrize("text,message", [
    ("24", "expected SIDE:UNTIL"),
    ("24:x", "expected SIDE:UNTIL"),
    ("24.5:0.4", "expected SIDE:UNTIL"),
    ("0:0.4", "a side must be a positive number of pixels, not 0"),
    ("24:1", r"each UNTIL is a fraction of the steps in \(0, 1\)"),
    ("24:0", r"each UNTIL is a fraction of the steps in \(0, 1\)"),
    ("20:0.5,24:0.25", r"the fractions must grow from phase to phase \(0.5, then 0.25\)"),
    ("20:0.5,24:0.5", r"the fractions must grow"),
    ("24:0.25,20:0.5", r"the sides must grow from phase to phase \(24, then 20\)"),
])
def test_bad_schedules_are_refused_saying_why(text, message):
    with pytest.raises(ValueError, match=message):
        C.parse_resize(text)
    with pytest.raises(EngineError, match="--resize-schedule .*" + message):  # however the value got in
        resolve.check(resolve.defaults("tiny").replace("model", resize_schedule=text))
    with pytest.raises(EngineError, match="model.resize_schedule is .*" + message):
        C.Config.from_dict({"model": {"resize_schedule": text}}, source="config.json")


def test_the_flag_is_parsed_into_the_config_and_config_files_take_it(tmp_path):
    parser = resolve.build_parser("engine train", "")
    ns = parser.parse_args(["--resize-schedule", "16:.3,24:0.6"])
    assert resolve.resolve(resolve.overrides_from(ns)).model.resize_schedule == "16:0.3,24:0.6"
    path = tmp_path / "c.yaml"
    path.write_text("resize-schedule: '24:0.4'\n")
    assert resolve.read_config_file(str(path)) == {("model", "resize_schedule"): "24:0.4"}
    assert "SIDE:UNTIL[,...]" in parser.format_help()


def test_sides_the_model_cannot_take_are_refused():
    # airbench's valid 2x2 stem and three pools need 9 pixels (engine.models.catalog.AIRBENCH_MIN)
    with pytest.raises(EngineError, match=r"model airbench-muon takes inputs of at least 9x9"):
        resolve.check(resolve.defaults("airbench-muon").replace("model", resize_schedule="8:0.5"))
    resolve.check(resolve.defaults("airbench-muon").replace("model", resize_schedule="9:0.5"))
    # not below the input side: known with --upsample, or from a resumed run's image shape
    with pytest.raises(EngineError, match=r"the side 40 is not below the model's input side \(40x40\)"):
        resolve.check(resolve.defaults("tiny").replace("model", upsample=40, resize_schedule="40:0.5"))
    resumed = resolve.defaults("tiny").replace("data", image_shape="32x32x3")
    with pytest.raises(EngineError, match=r"the side 32 is not below the model's input side \(32x32\)"):
        resolve.check(resumed.replace("model", resize_schedule="24:0.2,32:0.5"))
    resolve.check(resumed.replace("model", resize_schedule="24:0.2,31:0.5"))


def test_a_frozen_backbone_with_a_schedule_trains_through_the_backbone_not_on_cached_features():
    cfg = resolve.defaults("vgg16").replace("model", crop_pad=0, flip="none", tta=0)
    assert resolve.feature_cache_applies(cfg)
    assert not resolve.feature_cache_applies(cfg.replace("model", resize_schedule="48:0.5"))


def test_bad_flag_is_one_line_exit_2_before_tensorflow_loads(tmp_path):
    code = ("import sys, runpy; sys.argv = ['engine', 'train', '--model', 'airbench-muon', '--resize-schedule', "
            "'8:0.5', '--out', 'r']\ntry:\n    runpy.run_module('engine', run_name='__main__')\nexcept SystemExit as e:\n"
            "    print('tensorflow' in sys.modules, file=sys.stderr)\n    raise")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert lines == ["error: --resize-schedule 8:0.5: model airbench-muon takes inputs of at least 9x9 (its pooling "
                     "would shrink 8x8 below 1 pixel)", "False"]
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--resize-schedule", "24:1.5", "--out", "r"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "--resize-schedule" in p.stderr and "fraction of the steps in (0, 1)" in p.stderr
    assert not (tmp_path / "r").exists()


def test_phases_end_at_their_fraction_of_the_steps_rounded_up():
    assert resize.phases("", 100) == ()
    assert resize.phases("24:0.4", 100) == ((24, 40),)
    assert resize.phases("20:0.25,24:0.5", 10) == ((20, 3), (24, 5))  # 2.5 -> 3, 5
    assert resize.phases("20:0.01,24:0.5", 10) == ((20, 1), (24, 5))
    assert resize.phases("20:0.01,24:0.02", 10) == ((20, 1),)  # the second phase rounds to no steps
    assert [resize.side_at(((20, 3), (24, 5)), s) for s in range(7)] == [20, 20, 20, 24, 24, None, None]
    assert resize.steps_by_side(((20, 3), (24, 5)), 10) == {20: 3, 24: 2, None: 5}
    assert resize.steps_by_side(((20, 3), (24, 5)), 4) == {20: 3, 24: 1, None: 0}  # (a run stopped early)


def test_a_train_call_ends_at_a_phase_switch():
    # the loop's horizons hold each phase's end (TrainLoop.horizons); the trainer cuts its calls there
    assert steps_in_call(0, 32, 10, 0, [3, 5]) == 3
    assert steps_in_call(3, 29, 10, 0, [3, 5]) == 2
    assert steps_in_call(5, 27, 10, 0, [3, 5]) == 10


def test_flops_at_a_smaller_side_are_the_hand_count():
    import keras

    from engine.models import flops
    from engine.models.layers import MaxPool2
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = MaxPool2()(x)
    x = keras.layers.Conv2D(5, 3, padding="valid", use_bias=False)(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))

    def by_hand(side):
        first = 2 * side * side * (3 * 3 * 3 * 4)           # 'same': side x side outputs
        second = 2 * (side // 2 - 2) ** 2 * (3 * 3 * 4 * 5)  # pool halves (odd: floor), 'valid' loses 2
        return first + second + 2 * 5 * 2
    assert flops.forward_flops(model, 8) == flops.forward_flops(model) == by_hand(8)
    assert flops.forward_flops(model, 7) == by_hand(7)
    assert flops.train_flops(model, 7) == 3 * by_hand(7)
    with pytest.raises(ValueError):  # 5 -> 2 after the pool: the valid 3x3 conv has nothing left
        flops.forward_flops(model, 5)


def test_a_schedule_on_images_that_are_not_square_is_one_line():
    from engine.errors import EngineError
    from engine.train import resize
    with pytest.raises(EngineError, match="24x40, not square"):
        resize.check("16:0.5", "tiny", 4, (24, 40))
    resize.check("16:0.5", "tiny", 4, (24, 24))  # a square (H, W) is its side
