"""Progress display and pre-run advice: the progress bar's figures, plain progress lines off a
terminal, the learning rate shown at a schedule's end, the speed advice from this machine's timed trials
figures, the frozen-random-backbone warning."""
import io
import json

import pytest

from engine.config import Config
from engine.train import advice, speed
from engine.train.clock import Clock, Rate, Ticker, progress_bar


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_shows_img_s_with_one_decimal(capsys):
    import keras
    bar = keras.utils.Progbar(2, stateful_metrics=["img/s"])
    bar.update(2, values=[("img/s", Rate(3159.1234))])
    out = capsys.readouterr().out
    assert "img/s: 3159.1" in out and "3159.1234" not in out and "3159.1000" not in out


def test_progress_bar_only_on_a_terminal_with_an_epoch_header():
    assert progress_bar(10, quiet=False, stream=io.StringIO()) is None  # piped: no bar frames in the log
    assert progress_bar(10, quiet=True, stream=Tty()) is None
    tty = Tty()
    assert progress_bar(10, quiet=False, header="Epoch 3/8", stream=tty) is not None
    assert tty.getvalue() == "Epoch 3/8\n"


def test_ticker_prints_plain_lines_off_a_terminal():
    lines = []
    t = Ticker(300, "feature cache", quiet=True, log=lines.append, every=0.0)
    t.update(100)
    t.update(300)  # done: the caller says so
    assert lines == [lines[0]] and lines[0].startswith("feature cache: 100/300 images, ")


def test_clock_counts_a_phase_that_ran_before_it():
    c = Clock()
    c.earlier("feature cache", 100.0)
    wall, parts = c.breakdown()
    assert wall >= 100.0 and parts["feature cache"] == 100.0


def test_learning_rate_at_the_end_of_a_one_cycle_is_zero_not_rounding_noise():
    import keras

    from engine.train.optim import PiecewiseLinear, current_lr
    schedule = PiecewiseLinear([0, 1, 4], [0.0, 0.4, 0.0])  # float32 gives -2.98e-08 at step 4
    opt = keras.optimizers.SGD(learning_rate=schedule)
    opt.iterations.assign(4)
    assert current_lr(opt) == 0.0
    opt.iterations.assign(2)
    assert current_lr(opt) == pytest.approx(0.4 * 2 / 3)


def test_speed_advice_says_this_machines_measurement(tmp_path, monkeypatch):
    import tensorflow as tf
    monkeypatch.setattr(advice.devices, "gpus", lambda: [])
    monkeypatch.setattr(advice.devices, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    cfg = Config().replace("model", model="tiny").replace("data", cache_dir=str(tmp_path))
    cfg = cfg.replace("run", amp=True, xla=True)
    key = speed.cache_key(speed.machine_setting(cfg, 32, 256, tf.__version__))
    rates = {"bfloat16": 5771.9, "float32": 3224.1, "float32 + XLA": 2156.2, "bfloat16 + XLA": 1064.0}
    (tmp_path / speed.CACHE_FILE).write_text(json.dumps({key: {"img_s": rates}}))
    (said,) = advice.run_warnings(cfg)
    assert "--xla --amp (bfloat16 + XLA) trained tiny at 1064 img/s on this CPU, 5.4x slower than bfloat16" in said
    assert advice.run_warnings(cfg.replace("run", amp=True, xla=False)) == []  # the fastest: nothing to say
    # not measured here: said so, and what --amp/--xla auto would do
    (tmp_path / speed.CACHE_FILE).write_text("{}")
    (unmeasured,) = advice.run_warnings(cfg)
    assert "--xla --amp was not measured against the other settings on this CPU for tiny" in unmeasured
    assert "`--amp auto --xla auto`" in unmeasured


def test_frozen_random_backbone_is_warned_once():
    cfg = Config().replace("model", model="vgg16", weights="none", freeze="all")
    (w,) = advice.config_warnings(cfg)
    assert "random, untrained vgg16" in w
    assert advice.config_warnings(cfg.replace("model", weights="imagenet")) == []
    assert advice.config_warnings(cfg.replace("model", freeze="none")) == []
    assert advice.config_warnings(Config().replace("model", model="tiny")) == []
