"""The default --amp auto --xla auto through the real CLI: the first run times the candidates on this
CPU and trains with the fastest, a second run reads the cached decision, a resume keeps the run's
choice, and a forced choice times nothing."""
import json

from tests.conftest import run_cli

AUTO_ENV = {"ENGINE_AMP": "", "ENGINE_XLA": ""}  # the suite's float32 default off: the product's default
SHORT = ["--model", "tiny", "--data", "digits", "--batch-size", 64, "--quiet"]


def test_auto_times_once_caches_and_a_resume_keeps_the_choice(tmp_path):
    env = {**AUTO_ENV, "ENGINE_CACHE": str(tmp_path / "cache")}
    p = run_cli("engine", "train", *SHORT, "--epochs", 1, "--out", tmp_path / "a", env=env)
    assert p.returncode == 0, p.stderr
    assert "speed: timing float32 / bfloat16" in p.stdout
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())["speed_choice"]
    assert m["source"] == "measured" and m["probe_seconds"] > 0 and m["probe_batch"] == 64
    assert {"float32", "float32 + XLA"} <= set(m["img_s"]) and m["bf16_conv_ratio"] > 0
    timed = {k: v for k, v in m["img_s"].items()}
    assert timed[m["choice"]] == max(timed.values()) or m["choice"] == "float32"  # fastest, or float32 kept
    assert all(v < timed["float32"] * 1.05 for k, v in timed.items() if k != m["choice"] and m["choice"] == "float32")
    run = json.loads((tmp_path / "a" / "config.json").read_text())["run"]
    assert (run["amp"], run["xla"]) == (m["amp"], m["xla"])  # config.json holds the decision, not "auto"
    cache = json.loads((tmp_path / "cache" / "speed-choices.json").read_text())
    assert [e["img_s"] for e in cache.values()] == [m["img_s"]]

    p = run_cli("engine", "train", *SHORT, "--epochs", 1, "--out", tmp_path / "b", env=env)
    assert p.returncode == 0 and "speed: timing" not in p.stdout, p.stderr
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())["speed_choice"]
    assert again["source"] == "cached" and again["img_s"] == m["img_s"] and again["choice"] == m["choice"]

    p = run_cli("engine", "train", "--resume", "--epochs", 2, "--out", tmp_path / "a", env=env)
    assert p.returncode == 0, p.stderr
    resumed = json.loads((tmp_path / "a" / "metrics.json").read_text())["speed_choice"]
    assert resumed["source"] == "given" and (resumed["amp"], resumed["xla"]) == (m["amp"], m["xla"])

    p = run_cli("engine", "train", *SHORT, "--epochs", 1, "--no-amp", "--xla", "--out", tmp_path / "c",
                env={**AUTO_ENV, "ENGINE_CACHE": str(tmp_path / "other-cache")})
    assert p.returncode == 0 and "speed: timing" not in p.stdout, p.stderr
    forced = json.loads((tmp_path / "c" / "metrics.json").read_text())["speed_choice"]
    assert (forced["source"], forced["choice"]) == ("given", "float32 + XLA")
    assert not (tmp_path / "other-cache" / "speed-choices.json").exists()


def test_profile_writes_a_trace_of_the_calls_after_the_first(tmp_path):
    out = tmp_path / "p"
    p = run_cli("engine", "train", *SHORT, "--epochs", 1, "--steps-per-call", 2, "--profile", 3, "--out", out)
    assert p.returncode == 0, p.stderr
    assert f"profile of 3 train calls: {out / 'tb'}" in p.stdout
    traces = list((out / "tb" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    m = json.loads((out / "metrics.json").read_text())
    assert m["wall_breakdown"]["profiled calls"] > 0  # not counted as training time
    assert m["steps"] == 22 and m["train_seconds"] > 0
