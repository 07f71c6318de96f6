"""engine report on damaged run folders: one line saying which file is unreadable, or a cell marked
so; never a traceback, and never "not finished" for a run whose metrics.json is there but damaged."""
import json

import pytest

from engine import report
from tests.conftest import assert_one_line_error, run_in_process

CONFIG = {"run": {"seed": 0, "out": "x"}, "model": {"model": "tiny"}}
METRICS = {"test_accuracy": 0.5, "test_accuracy_tta": None, "best_epoch": 1, "train_img_s": 100.0,
           "train_seconds": 60.0, "policy": "float32", "xla": False, "device": "CPU"}


def _run(root, name, metrics=METRICS, config=CONFIG, seed=0):
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(config if isinstance(config, str) else
                                   json.dumps({**config, "run": {"seed": seed, "out": name}}
                                              if isinstance(config, dict) else config))
    if metrics is not None:
        (d / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return str(d)


@pytest.mark.parametrize("metrics,fragments", [
    ('{"test_accuracy": 0.5, "best_ep', ["metrics.json is unreadable"]),   # truncated
    ("", ["metrics.json is unreadable"]),                                   # empty
    ("null", ["metrics.json is unreadable", "not a JSON object"]),
    ("[]", ["metrics.json is unreadable", "not a JSON object"]),
    ('"finished"', ["metrics.json is unreadable"]),
    (b"\xff\xfe{", ["metrics.json is unreadable"]),                         # not UTF-8
])
def test_a_damaged_metrics_json_is_one_line_saying_it_is_unreadable(tmp_path, capsys, metrics, fragments):
    good = _run(tmp_path, "good")
    bad = tmp_path / "bad"
    _run(tmp_path, "bad", metrics=None)
    (bad / "metrics.json").write_bytes(metrics if isinstance(metrics, bytes) else metrics.encode())
    p = run_in_process(capsys, "engine.report", good, str(bad))
    assert_one_line_error(p, *fragments)
    assert "not finished" not in p.stderr


def test_a_missing_metrics_json_still_says_the_run_has_not_finished(tmp_path, capsys):
    p = run_in_process(capsys, "engine.report", _run(tmp_path, "r", metrics=None))
    assert_one_line_error(p, "has no metrics.json: it has not finished")


@pytest.mark.parametrize("config", ["[]", "null", "{", "5"])
def test_a_damaged_config_json_is_one_line(tmp_path, capsys, config):
    p = run_in_process(capsys, "engine.report", _run(tmp_path, "r", config=config))
    assert_one_line_error(p, "config.json is unreadable")


def test_metrics_of_the_wrong_type_or_not_finite_are_cells_not_tracebacks(tmp_path, capsys):
    runs = [_run(tmp_path, "a", {**METRICS, "test_accuracy": "high", "train_seconds": "x", "train_img_s": [1]}),
            _run(tmp_path, "b", {**METRICS, "test_accuracy": float("nan")}, seed=1),
            _run(tmp_path, "c", {**METRICS, "test_accuracy": 0.7, "best_epoch": {"x": 1}}, seed=2)]
    with pytest.raises(SystemExit) as e:  # main returns normally: wrap to use run_in_process's capture
        report.main(runs)
        raise SystemExit(0)
    assert e.value.code == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and out.err == ""
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.out.splitlines() if line.startswith("| ")}
    assert "| unreadable |" in rows[runs[0]] and "| nan |" in rows[runs[1]]
    assert "seeds 0, 1, 2 (3 runs): test top-1 0.7000 ± 0.0000" in out.out  # only the readable, finite value
    with pytest.raises(SystemExit):
        report.main([*runs, "--json"])
        raise SystemExit(0)
    assert json.loads(capsys.readouterr().out.replace("NaN", "null"))["runs"][0]["test_accuracy"] == "high"


def test_flops_columns_show_each_runs_pflops_and_the_seed_groups_mean(tmp_path, capsys):
    def flops(train, ev):
        return {**METRICS, "flops": {"training_flops": train, "evaluation_flops": ev, "train_flops_per_image": 1}}
    runs = [_run(tmp_path, "a", flops(2.5e14, 6e12)), _run(tmp_path, "b", flops(2.7e14, 6e12), seed=1),
            _run(tmp_path, "c", METRICS, seed=2), _run(tmp_path, "d", {**METRICS, "flops": [1]}, seed=3)]
    table = report.table([report.load(r) for r in runs])
    header = table.splitlines()[0].split(" | ")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")}
    train, ev = header.index("train PFLOPs"), header.index("eval PFLOPs")
    assert (rows[runs[0]][train], rows[runs[0]][ev]) == ("0.2500", "0.0060")
    assert rows[runs[1]][train] == "0.2700"
    assert rows[runs[2]][train] == "-"            # a run from before FLOPs were recorded
    assert rows[runs[3]][train] == "unreadable"   # flops of the wrong type: a cell, not a traceback
    assert "training PFLOPs 0.2600 ± 0.0141" in table  # the mean over the seeds that have it
