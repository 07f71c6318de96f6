"""Sample pruning (--prune-fraction, --prune-until) without training: the selection on known scores,
the epochs that prune, a pruned epoch's step positions and train calls, the flags' refusals (one
line, exit 2, before TensorFlow loads)."""
import subprocess
import sys

import numpy as np
import pytest

from engine import config as C
from engine.errors import EngineError
from engine.train import prune, resolve

INF = float("inf")


def test_selection_prunes_a_fraction_of_the_below_mean_images_and_rescales_exactly_the_kept_ones():
    # finite mean = (0.1 + 0.2 + 0.3 + 5 + 6 + 0.15 + 0.25 + 0.05) / 8 = 1.506: six images below it
    scores = np.array([INF, 0.1, 0.2, 0.3, 5.0, 6.0, 0.15, INF, 0.25, 0.05], np.float32)
    low = {1, 2, 3, 6, 8, 9}
    w = prune.select(scores, 0.5, prune.rng(0, 1))
    assert w.dtype == np.float32 and w.shape == (10,)
    assert np.count_nonzero(w == 0) == 3 and set(np.flatnonzero(w == 0)) <= low  # floor(0.5 x 6), all below
    assert set(np.flatnonzero(w == 2.0)) == low - set(np.flatnonzero(w == 0))     # the kept ones: 1/(1-0.5)
    assert (w[[0, 4, 5, 7]] == 1.0).all()                     # never trained (+inf), above the mean
    w = prune.select(np.array([1.0, 1.0, 4.0, 2.0]), 0.5, prune.rng(0, 1))  # mean 2: the 2.0 is not below it
    assert w[3] == 1.0 and sorted(w[:2]) == [0.0, 2.0] and w[2] == 1.0
    # R = 0.75 of 6: 4 pruned, 2 kept at weight 4
    w = prune.select(scores, 0.75, prune.rng(0, 1))
    assert np.count_nonzero(w == 0) == 4 and np.count_nonzero(w == 4.0) == 2
    # the draw is the run's seed and the epoch's: the same again, another for another epoch or seed
    assert (prune.select(scores, 0.5, prune.rng(0, 1)) == prune.select(scores, 0.5, prune.rng(0, 1))).all()
    draws = {tuple(np.flatnonzero(prune.select(scores, 0.5, prune.rng(s, e)) == 0)) for s in range(4) for e in range(4)}
    assert len(draws) > 1


def test_nothing_is_pruned_before_an_image_is_scored_nor_at_fraction_0_nor_below_a_batch():
    assert (prune.select(np.full(8, INF), 0.5, prune.rng(0, 0)) == 1).all()  # the first epoch: all +inf
    assert (prune.select(np.arange(8.0), 0.0, prune.rng(0, 0)) == 1).all()
    w = prune.select(np.arange(8.0), 0.9, prune.rng(0, 0), min_kept=6)       # 4 below the mean 3.5: 3 would go
    assert np.count_nonzero(w) == 6


def test_the_epochs_that_start_before_until_prune():
    # 8 steps an epoch, 24 in all: until 0.6 = step 14.4 -> epochs 0 and 1; until 0.875 of 8 epochs: 0-6
    assert [prune.prunes(e, 8, 24, 0.6) for e in range(3)] == [True, True, False]
    assert [prune.prunes(e, 25, 200, 0.875) for e in range(8)] == [True] * 7 + [False]
    assert [prune.prunes(e, 8, 24, 1.0) for e in range(3)] == [True] * 3


def test_a_pruned_epoch_spreads_its_steps_over_the_epoch_positions_and_inverts():
    m = prune.EpochMap(base=8, span=8, steps=5)
    assert [m.position(i) for i in range(6)] == [8, 9, 11, 12, 14, 16]  # 8 + floor(i * 8 / 5); 16: the epoch's end
    assert [m.actual(m.position(i)) for i in range(6)] == list(range(6))
    assert [m.actual(p) for p in range(8, 17)] == [0, 1, 2, 2, 3, 4, 4, 5, 5]  # the first step at or after p
    full = prune.EpochMap(8, 8, 8)
    assert not full.pruned and [full.position(i) for i in range(9)] == list(range(8, 17))
    # 8 of 10 steps an epoch (256 images, batch 25), 150 kept: 6 batches; a last epoch of 4 steps: 2 of them
    assert prune.plan(np.r_[np.ones(150), np.zeros(106)], 10, 10, 10, 25) == prune.EpochMap(10, 10, 6)
    assert prune.plan(np.r_[np.ones(150), np.zeros(106)], 20, 4, 10, 25) == prune.EpochMap(20, 4, 2)
    assert prune.positions([80, 40, 80], 8, 24, 10) == [*range(8), 8, 10, 12, 14, *range(16, 24)]


def test_train_calls_of_a_pruned_epoch_are_cut_at_checkpoints_and_horizons_in_positions():
    m = prune.EpochMap(base=8, span=8, steps=5)                  # positions 8 9 11 12 14
    assert prune.steps_in_call(m, 0, 10, 0) == 5
    assert prune.steps_in_call(m, 0, 2, 0) == 2
    assert prune.steps_in_call(m, 0, 10, 3) == 1                 # next multiple of 3: 9, step 1 sits there
    assert prune.steps_in_call(m, 1, 10, 3) == 2                 # from 9: the next multiple 12 is step 3
    assert prune.steps_in_call(m, 0, 10, 0, horizons=[10]) == 2  # a freeze at 10: the first step at or after it is 11
    assert prune.steps_in_call(m, 2, 10, 0, horizons=[10]) == 3  # (a horizon passed no longer cuts)


@pytest.mark.parametrize("field,value,message", [
    ("prune_fraction", 1.0, r"--prune-fraction must be in \[0, 1\), got 1"),
    ("prune_fraction", -0.1, r"--prune-fraction must be in \[0, 1\)"),
    ("prune_until", 0.0, r"--prune-until must be in \(0, 1\], got 0"),
    ("prune_until", 1.5, r"--prune-until must be in \(0, 1\]"),
])
def test_values_out_of_range_are_refused(field, value, message):
    with pytest.raises(EngineError, match=message):
        resolve.check(resolve.defaults("tiny").replace("data", **{field: value}))


def test_until_without_a_fraction_is_refused_and_the_defaults_are_off():
    d = C.DataConfig()
    assert (d.prune_fraction, d.prune_until) == (0.0, 0.875)
    with pytest.raises(EngineError, match=r"--prune-until 0.5 says when sample pruning ends: give --prune-fraction"):
        resolve.check(resolve.defaults("tiny").replace("data", prune_until=0.5))
    resolve.check(resolve.defaults("tiny").replace("data", prune_until=0.5, prune_fraction=0.3))
    for name in ("airbench", "airbench-muon", "resnet9"):  # no recipe turns it on
        assert resolve.defaults(name).data.prune_fraction == 0.0


@pytest.mark.parametrize("flags,message", [
    (["--prune-fraction", "1"], "error: engine train: argument --prune-fraction: must be in [0, 1), got 1"),
    (["--prune-until", "0.5"], "error: --prune-until 0.5 says when sample pruning ends: give --prune-fraction X"),
])
def test_bad_flags_are_one_line_exit_2_before_tensorflow_loads(tmp_path, flags, message):
    code = ("import sys, runpy; sys.argv = ['engine', 'train', '--model', 'tiny', '--data', 'digits', "
            f"*{flags!r}, '--out', 'r']\ntry:\n    runpy.run_module('engine', run_name='__main__')\n"
            "except SystemExit as e:\n    print('tensorflow' in sys.modules, file=sys.stderr)\n    raise")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert lines[-1] == "False" and len(lines) <= 3, p.stderr  # (argparse prints its usage line first)
    assert message in lines[-2], p.stderr
    assert not (tmp_path / "r").exists()
