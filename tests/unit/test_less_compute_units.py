"""The pieces of the less-compute features that need no training: the FLOP count against a hand
count, the validation schedule, the train calls cut at a freeze step, the refusals, the hiverge
recipe in engine units."""
import pytest

from engine import recipes
from engine.errors import EngineError
from engine.train import resolve
from engine.train.trainer import steps_in_call, validates


def test_flops_of_a_tiny_model_are_the_hand_count():
    import keras

    from engine.models import flops
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    conv = 2 * (8 * 8) * (3 * 3 * 3 * 4)   # multiply-adds x 2 at each of 64 output pixels: 13,824
    head = 2 * 4 * 2                       # 16
    assert flops.forward_flops(model) == conv + head == 13840
    assert flops.train_flops(model) == 3 * (conv + head)
    model.get_layer("conv").trainable = False  # a frozen first layer: its forward pass only
    assert flops.train_flops(model) == conv + 3 * head
    assert flops.TTA_VIEWS == {0: 1, 1: 2, 2: 6}


def test_bench_counts_flops_with_the_engines_code():
    import bench.flops
    from engine.models import flops
    assert bench.flops.train_flops is flops.train_flops and bench.flops.forward_flops is flops.forward_flops


@pytest.mark.parametrize("every,validated", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (3, [3, 5]), (0, [])])
def test_eval_every_validates_every_nth_epoch_and_the_last(every, validated):
    assert [e for e in range(1, 6) if validates(e, every, last=e == 5)] == validated


def test_a_train_call_ends_at_the_step_a_variable_freezes():
    assert steps_in_call(0, 32, 10, 0, [7]) == 7      # the call stops before step 7, where the bias freezes
    assert steps_in_call(7, 25, 10, 0, [7]) == 10     # after it: calls as before
    assert steps_in_call(5, 27, 10, 4, [7]) == 2      # and still at the checkpoint steps (--checkpoint-every)
    assert steps_in_call(30, 2, 10, 0, [75]) == 2     # and at the epoch's end


def test_combinations_that_cannot_work_are_refused():
    cfg = resolve.defaults("tiny").replace("optim", early_stop=3).replace("data", eval_every=2)
    with pytest.raises(EngineError, match=r"--early-stop .* needs every epoch validated \(--eval-every 1\)"):
        resolve.check(cfg)
    cfg = resolve.defaults("tiny").replace("model", tta=0, tta_fraction=0.5)
    with pytest.raises(EngineError, match="--tta-fraction .*: give --tta 1 or 2"):
        resolve.check(cfg)
    cfg = resolve.defaults("tiny").replace("model", whiten_bias_epochs=0.5)
    with pytest.raises(EngineError, match="--whiten-bias-epochs does not apply to model tiny"):
        resolve.check(cfg)
    resolve.check(resolve.defaults("airbench-muon").replace("data", eval_every=0).replace("model", tta_fraction=0.25))


def test_the_hiverge_recipe_in_engine_units():
    """hiverge sums its loss over a batch of 1536: its SGD LRs per image are 1536x ours per step of
    the mean loss; Muon's LR and momentum do not depend on the loss's scale."""
    cfg = resolve.resolve({("run", "recipe"): "airbench-muon-hiverge"})
    o, m = cfg.optim, cfg.model
    assert cfg.run.recipe == "airbench-muon-hiverge@v1" and m.model == "airbench-muon"
    assert (o.optimizer, o.batch_size, o.epochs, o.label_smoothing) == ("muon", 1536, 7.59, 0.09)
    assert (o.lr, o.momentum, o.aux_momentum) == (0.205, 0.655, 0.825)
    assert o.aux_lr == pytest.approx(0.5415 * 1536)                    # head LR 0.5415 per image
    assert o.aux_lr * o.bias_lr_scale == pytest.approx(0.0573 * 1536)  # bias LR 0.0573 per image
    assert o.weight_decay == pytest.approx(1.0418e-6 * 1536)
    assert (m.bn_momentum, m.brightness, m.contrast) == (0.5566, 0.1399, 0.1308)
    assert (m.whiten_bias_epochs, m.tta, m.tta_fraction, cfg.data.eval_every) == (0.19, 2, 0.25, 0)
    from engine.train.optim import total_steps
    assert total_steps(o, 50000 // 1536) == 243  # hiverge's ceil(7.59 * 32)
    resolve.check(cfg)
    # the default model's recipe is untouched by it
    assert recipes.AIRBENCH_MUON["optim.batch_size"] == 2000 and "model.tta_fraction" not in recipes.AIRBENCH_MUON


def test_colour_jitter_is_per_image_in_range_and_follows_the_image_not_its_batch_position():
    import numpy as np
    import tensorflow as tf

    from engine import kernels
    x = tf.ones([6, 4, 4, 3])
    seed = tf.constant([3, 7], tf.int64)
    index = tf.constant([0, 1, 2, 3, 4, 5])
    out = kernels.color_jitter(x, seed, 0.14, 0.13, index, 10).numpy()
    factors = out[:, 0, 0, 0]  # (1 + shift) * scale, constant over each image
    assert np.all(out == factors[:, None, None, None])
    assert np.all((factors >= 0.86 * 0.87) & (factors <= 1.14 * 1.13)) and len(set(factors)) == 6
    swapped = kernels.color_jitter(x, seed, 0.14, 0.13, tf.reverse(index, [0]), 10).numpy()
    np.testing.assert_array_equal(swapped[::-1], out)  # an image's jitter is its own, wherever it sits
    assert kernels.color_jitter(x, seed, 0.0, 0.0, index, 10) is x  # off: the batch untouched


def test_a_refused_combination_is_one_line_on_the_command_line(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--model", "tiny", "--data", "digits",
                        "--early-stop", "2", "--eval-every", "0", "--out", "run"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["error: --early-stop counts epochs without a better validation accuracy: "
                                             "it needs every epoch validated (--eval-every 1), not --eval-every 0"]
    assert not (tmp_path / "run").exists()
