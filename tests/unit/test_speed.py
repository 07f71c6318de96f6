"""--amp auto / --xla auto: the decision from injected timings, its cache, and the GPU rules (no
TensorFlow, no training: the real timed trials run in tests/test_speed_choice.py)."""
import pytest

from engine.train import speed
from engine.train.speed import AUTO, decide, pick

FP32, XLA, BF16, BF16_XLA = (False, False), (False, True), (True, False), (True, True)
SETTING = {"tensorflow": "2.21.0", "cpu": "Some CPU", "cpu_flags": ["avx2"], "model": "airbench", "batch": 256}


class Timer:
    """An injected measure(amp, xla, floor): the given img/s, and a record of what was timed."""

    def __init__(self, rates):
        self.rates, self.calls = rates, []

    def __call__(self, amp, xla, floor):
        self.calls.append((amp, xla))
        return self.rates[(amp, xla)]


@pytest.mark.parametrize("rates,expected", [
    ({FP32: 100, XLA: 130, BF16: 190, BF16_XLA: 170}, BF16),   # the fastest wins
    ({FP32: 100, XLA: 80, BF16: 10, BF16_XLA: 9}, FP32),       # slower than float32: never picked
    ({FP32: 100, XLA: 103, BF16: 60, BF16_XLA: 50}, FP32),     # within the margin: float32 stays
    ({FP32: 100, XLA: 140, BF16: 90, BF16_XLA: 95}, XLA),
])
def test_the_fastest_candidate_wins_and_none_slower_than_float32(rates, expected):
    assert pick(rates, AUTO, AUTO) == expected


def test_a_forced_setting_is_the_reference_of_the_other():
    assert pick({BF16: 100, BF16_XLA: 90}, True, AUTO) == BF16     # --amp forced; XLA slower there
    assert pick({XLA: 100, BF16_XLA: 150}, AUTO, True) == BF16_XLA
    assert speed.candidates(True, False) == [BF16]
    assert speed.candidates(AUTO, AUTO, deterministic=True) == [FP32, BF16]  # no XLA under --deterministic


def test_the_cache_is_used_the_second_time_and_invalidated_by_another_tf_or_cpu(tmp_path):
    cache = str(tmp_path / speed.CACHE_FILE)
    timer = Timer({FP32: 100, XLA: 150, BF16: 120, BF16_XLA: 200})
    first = decide(AUTO, AUTO, False, SETTING, timer, cache)
    assert (first.amp, first.xla, first.source) == (True, True, "measured") and len(timer.calls) == 4
    again = decide(AUTO, AUTO, False, SETTING, timer, cache)
    assert (again.amp, again.xla, again.source, again.trial_seconds) == (True, True, "cached", 0.0)
    assert len(timer.calls) == 4  # nothing timed
    assert again.img_s == first.img_s == {"float32": 100, "float32 + XLA": 150, "bfloat16": 120, "bfloat16 + XLA": 200}
    for change in ({"tensorflow": "2.22.0"}, {"cpu": "Another CPU"}, {"cpu_flags": ["avx2", "amx_bf16"]},
                   {"batch": 128}, {"model": "resnet9"}):
        before = len(timer.calls)
        d = decide(AUTO, AUTO, False, {**SETTING, **change}, timer, cache)
        assert d.source == "measured" and len(timer.calls) == before + 4, change


def test_bfloat16_with_slow_convolutions_is_not_timed(tmp_path):
    timer = Timer({FP32: 100, XLA: 90})
    d = decide(AUTO, AUTO, False, SETTING, timer, str(tmp_path / "c.json"), bf16_ratio=lambda: 0.09)
    assert timer.calls == [FP32, XLA] and (d.amp, d.xla) == FP32 and d.bf16_conv_ratio == 0.09
    assert "bfloat16 not timed: its convolutions ran 11.1x slower" in d.describe()
    ratio_calls = []
    d = decide(AUTO, AUTO, False, SETTING, timer, str(tmp_path / "c.json"), bf16_ratio=lambda: ratio_calls.append(1))
    assert d.source == "cached" and not ratio_calls  # the ratio is cached too
    timer = Timer({FP32: 100, XLA: 90, BF16: 300, BF16_XLA: 250})
    d = decide(AUTO, AUTO, False, SETTING, timer, None, bf16_ratio=lambda: 9.0)  # AMX-like: timed, and wins
    assert timer.calls == [FP32, XLA, BF16, BF16_XLA] and (d.amp, d.xla) == BF16
    # a screen near 1 (measured 0.99 on a CPU where bfloat16 trained 1.8x faster): the steps decide
    timer = Timer({FP32: 100, XLA: 90, BF16: 180, BF16_XLA: 95})
    d = decide(AUTO, AUTO, False, SETTING, timer, None, bf16_ratio=lambda: 0.99)
    assert timer.calls == [FP32, XLA, BF16, BF16_XLA] and (d.amp, d.xla) == BF16 and "not timed" not in d.describe()
    timer = Timer({BF16: 10, BF16_XLA: 12})
    d = decide(True, AUTO, False, SETTING, timer, None, bf16_ratio=lambda: 0.1)  # --amp forced: still timed
    assert timer.calls == [BF16, BF16_XLA] and (d.amp, d.xla) == BF16_XLA


def test_bfloat16_with_xla_is_timed_only_if_one_of_them_helped():
    timer = Timer({FP32: 100, XLA: 90, BF16: 95})
    d = decide(AUTO, AUTO, False, SETTING, timer, None)
    assert timer.calls == [FP32, XLA, BF16] and (d.amp, d.xla) == FP32


def test_a_given_choice_is_not_measured():
    timer = Timer({})
    d = decide(False, True, False, SETTING, timer, None)
    assert (d.amp, d.xla, d.source) == (False, True, "given") and not timer.calls


@pytest.mark.parametrize("amp,xla,capabilities,replicas,deterministic,expected,said", [
    (AUTO, AUTO, [(8, 0)], 1, False, (True, True), "bfloat16 + XLA"),     # A100: bfloat16, XLA
    (AUTO, AUTO, [(7, 5)], 1, False, (True, True), "float16 + XLA"),      # T4: float16 + loss scaling, XLA
    (AUTO, AUTO, [(7, 0), (7, 0)], 2, False, (True, False), "float16"),   # float16 over replicas: no XLA (refused)
    (AUTO, AUTO, [(8, 0), (8, 0)], 2, False, (True, True), "bfloat16 + XLA"),
    (AUTO, AUTO, [(9, 0)], 1, True, (True, False), "bfloat16"),           # --deterministic: no XLA
    (False, AUTO, [(7, 0), (7, 0)], 2, False, (False, True), "float32 + XLA"),  # float32 forced: XLA fine over replicas
    (AUTO, False, [(8, 6)], 1, False, (True, False), "bfloat16"),
    (AUTO, AUTO, [(8, 6), (7, 5)], 1, False, (True, True), "float16 + XLA"),  # a T4 among them: what all can run
])
def test_gpu_rules_by_compute_capability(amp, xla, capabilities, replicas, deterministic, expected, said):
    """The choice, and what the log line and metrics.json say it computes in: the policy
    engine.train.precision applies on those GPUs (float16 below compute capability 8.0)."""
    c = speed.gpu_choice(amp, xla, capabilities, replicas, deterministic, tf32=False)
    assert (c.amp, c.xla) == expected and c.source == "GPU rule"
    assert c.to_dict()["choice"] == said and c.describe() == f"speed: {said} (GPU rule)"


@pytest.mark.parametrize("capabilities,tf32,said,line", [
    ([(8, 0)], True, "float32 (TF32 matmuls) + XLA", "speed: float32 (TF32 matmuls) + XLA (GPU rule)"),  # A100
    ([(9, 0), (9, 0)], True, "float32 (TF32 matmuls) + XLA", None),          # H100s
    ([(8, 0)], False, "float32 + XLA", "speed: float32 + XLA (GPU rule)"),  # TF32 switched off
    ([(7, 5)], True, "float32 + XLA", None),                                  # T4: no TF32 units
])
def test_float32_on_gpus_of_compute_capability_8_says_its_matmuls_are_tf32(capabilities, tf32, said, line):
    """TensorFlow runs float32 matmuls and convolutions in TF32 on compute capability >= 8.0 while its
    switch is on (its default): --no-amp says so, and an --amp run records it for its float32 parts."""
    c = speed.gpu_choice(False, AUTO, capabilities, 1, False, tf32=tf32)
    assert c.to_dict()["choice"] == said and c.to_dict()["tf32_matmuls"] == ("TF32" in said)
    assert line is None or c.describe() == line
    amp = speed.gpu_choice(AUTO, AUTO, capabilities, 1, False, tf32=tf32)
    assert amp.to_dict()["tf32_matmuls"] == ("TF32" in said)
    assert amp.describe().endswith("; float32 parts in TF32)") == ("TF32" in said)


def test_a_cpu_choice_says_float32_or_bfloat16():
    d = decide(AUTO, AUTO, False, SETTING, Timer({FP32: 100, XLA: 80, BF16: 190, BF16_XLA: 170}), None)
    assert d.to_dict()["choice"] == "bfloat16" and not d.to_dict()["tf32_matmuls"]
    assert decide(False, True, False, SETTING, Timer({}), None).to_dict()["choice"] == "float32 + XLA"


@pytest.mark.parametrize("text", ["null", "[1, 2]", '"x"', "7"])
def test_a_cache_file_that_is_not_an_object_is_measured_again_with_one_warning(tmp_path, capsys, text):
    cache = tmp_path / speed.CACHE_FILE
    cache.write_text(text)
    timer = Timer({FP32: 100, XLA: 150, BF16: 120, BF16_XLA: 200})
    d = decide(AUTO, AUTO, False, SETTING, timer, str(cache))
    assert (d.amp, d.xla, d.source) == (True, True, "measured") and len(timer.calls) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ignoring ") and "measuring again" in err[0]
    again = decide(AUTO, AUTO, False, SETTING, timer, str(cache))  # replaced by a good cache
    assert again.source == "cached" and capsys.readouterr().err == ""


def test_a_cache_entry_of_the_wrong_shape_is_measured_again(tmp_path):
    import json
    cache = tmp_path / speed.CACHE_FILE
    key = speed.cache_key(SETTING)
    for entry in ([1], {"img_s": None}, {"img_s": {"float32": "fast", "float32 + XLA": None}},
                  {"img_s": {}, "bf16_conv_ratio": "x"}):
        cache.write_text(json.dumps({key: entry}))
        timer = Timer({FP32: 100, XLA: 150, BF16: 120, BF16_XLA: 200})
        d = decide(AUTO, AUTO, False, SETTING, timer, str(cache), bf16_ratio=lambda: 1.2)
        assert (d.amp, d.xla, d.source) == (True, True, "measured") and len(timer.calls) == 4, entry


def test_float16_forced_on_a_cpu_is_called_float16_and_timed_apart_from_bfloat16(monkeypatch):
    """ENGINE_AMP_FLOAT16=1 makes --amp float16: the run says so, and its timed trials are kept under
    their own key, so that a later run without it does not take float16's rate for bfloat16's."""
    from engine.config import Config
    cfg = Config()
    plain = speed.machine_setting(cfg, 32, 256, "2.21.0")
    monkeypatch.setenv("ENGINE_AMP_FLOAT16", "1")
    assert speed.label(True, False) == "float16" and speed.label(False, True) == "float32 + XLA"
    assert speed.cache_key(speed.machine_setting(cfg, 32, 256, "2.21.0")) != speed.cache_key(plain)
    d = decide(True, False, False, SETTING, Timer({}), None)
    assert d.to_dict()["choice"] == "float16" and d.describe().startswith("speed: float16 (given")
