"""The default --amp auto --xla auto through the real CLI: the first run times the candidates on this
CPU and trains with the fastest, a second run reads the cached decision (and --profile writes a
trace), and a resume keeps the run's choice. A given choice times nothing: tests/unit/test_speed.py."""
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
    assert m["source"] == "measured" and m["trial_seconds"] > 0 and m["trial_batch"] == 64
    assert {"float32", "float32 + XLA"} <= set(m["img_s"]) and m["bf16_conv_ratio"] > 0
    timed = {k: v for k, v in m["img_s"].items()}
    assert timed[m["choice"]] == max(timed.values()) or m["choice"] == "float32"  # fastest, or float32 kept
    assert all(v < timed["float32"] * 1.05 for k, v in timed.items() if k != m["choice"] and m["choice"] == "float32")
    run = json.loads((tmp_path / "a" / "config.json").read_text())["run"]
    assert (run["amp"], run["xla"]) == (m["amp"], m["xla"])  # config.json holds the decision, not "auto"
    cache = json.loads((tmp_path / "cache" / "speed-choices.json").read_text())
    assert [e["img_s"] for e in cache.values()] == [m["img_s"]]

    out = tmp_path / "b"  # a second run: the cached choice; and --profile writes a trace of calls 2-4
    p = run_cli("engine", "train", *SHORT, "--epochs", 1, "--steps-per-call", 2, "--profile", 3, "--out", out, env=env)
    assert p.returncode == 0 and "speed: timing" not in p.stdout, p.stderr
    again = json.loads((out / "metrics.json").read_text())
    assert again["speed_choice"]["source"] == "cached" and again["speed_choice"]["img_s"] == m["img_s"]
    assert again["speed_choice"]["choice"] == m["choice"]
    assert f"profile of 3 train calls: {out / 'tb'}" in p.stdout
    traces = list((out / "tb" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    assert again["wall_breakdown"]["profiled calls"] > 0 and again["steps"] == 22  # not training time

    p = run_cli("engine", "train", "--resume", "--epochs", 2, "--out", tmp_path / "a", env=env)
    assert p.returncode == 0, p.stderr
    resumed = json.loads((tmp_path / "a" / "metrics.json").read_text())["speed_choice"]
    assert resumed["source"] == "given" and (resumed["amp"], resumed["xla"]) == (m["amp"], m["xla"])
