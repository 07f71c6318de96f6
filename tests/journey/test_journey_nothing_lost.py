"""Nothing a user has is lost: each test points a command at the user's files the way a slip of the
hand would, then checks that every byte is still there."""
import json
import re

from tests.conftest import assert_one_line_error
from tests.journey.conftest import TINY, copy_run, snapshot, stderr_lines


def _runs_folder(tmp_path, base_run):
    """./runs holding two runs and a note of the user's."""
    copy_run(base_run, tmp_path / "runs" / "a")
    copy_run(base_run, tmp_path / "runs" / "b")
    (tmp_path / "runs" / "notes.txt").write_text("lr 0.4 diverged on my model; try adam\n")
    return tmp_path / "runs"


def test_export_onto_a_folder_of_runs_is_refused(engine, tmp_path, base_run):
    runs = _runs_folder(tmp_path, base_run)
    before = snapshot(runs)
    p = engine.run("export", "onnx", "runs/a", "--out", "runs", "--overwrite", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert_one_line_error(p)
    assert snapshot(runs) == before


def test_evaluate_never_writes_its_report_over_a_run_or_its_files(engine, tmp_path, base_run):
    runs = _runs_folder(tmp_path, base_run)
    before = snapshot(runs)
    for target in ("runs/a/config.json", "runs/b"):
        for extra in ([], ["--overwrite"]):
            p = engine.run("evaluate", "runs/a/model.onnx", "--limit-test", "256", "--out", target, *extra,
                           cwd=tmp_path)
            assert p.returncode == 2, f"--out {target} {extra}: {p.stdout}{p.stderr}"
            assert_one_line_error(p, target)
    assert snapshot(runs) == before

    first = engine.run("evaluate", "runs/a/model.onnx", "--limit-test", "256", "--out", "r.json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = (tmp_path / "r.json").read_bytes()
    again = engine.run("evaluate", "runs/b/model.onnx", "--limit-test", "256", "--out", "r.json", cwd=tmp_path)
    assert again.returncode == 2, again.stdout + again.stderr
    assert_one_line_error(again, "r.json")
    assert (tmp_path / "r.json").read_bytes() == report
    replaced = engine.run("evaluate", "runs/b/model.onnx", "--limit-test", "256", "--out", "r.json", "--overwrite",
                          cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((tmp_path / "r.json").read_text())["model"].endswith("runs/b/model.onnx")


def test_two_evaluations_in_one_folder_keep_both_reports(engine, tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "runs" / "a")
    p = engine.run("export", "onnx", "runs/a", "--precision", "fp16", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    before = set(run.rglob("*.json"))
    for model in ("model.onnx", "model-fp16.onnx"):
        p = engine.run("evaluate", f"runs/a/{model}", "--limit-test", "256", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    reports = {x.name: json.loads(x.read_text()) for x in set(run.rglob("*.json")) - before}
    assert sorted(r["model"].rsplit("/", 1)[1] for r in reports.values()) == ["model-fp16.onnx", "model.onnx"], \
        sorted(reports)


def test_train_overwrite_with_a_typo_in_data_keeps_the_run(engine, tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "runs" / "a")
    before = snapshot(run)
    p = engine.run("train", "--data", "typo", "--out", "runs/a", "--overwrite", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert_one_line_error(p, "typo")
    assert snapshot(run) == before


def test_rerunning_a_runs_config_with_overwrite_keeps_that_run(engine, tmp_path, base_run):
    config = json.loads((base_run / "config.json").read_text())
    assert config["run"]["out"] == "runs/base"  # as it was trained: relative to its own working directory
    run = copy_run(base_run, tmp_path / "runs" / "base")  # the same layout here
    before = snapshot(run)
    p = engine.run("train", "--config", "runs/base/config.json", "--overwrite", cwd=tmp_path)
    assert "Traceback" not in p.stderr, p.stderr
    assert snapshot(run) == before, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


def test_two_trainings_into_one_folder_at_once(engine, tmp_path):
    runs = [engine.start("train", *TINY, "--epochs", "2", "--seed", seed, "--out", "runs/c", cwd=tmp_path)
            for seed in (1, 2)]
    with runs[0], runs[1]:
        done = [r.finish() for r in runs]
    codes = sorted(p.returncode for p in done)
    assert codes == [0, 2], "\n\n".join(f"exit {p.returncode}\n{p.stdout[-1500:]}{p.stderr[-1500:]}" for p in done)
    winner, loser = (done[0], done[1]) if done[0].returncode == 0 else (done[1], done[0])
    (line,) = stderr_lines(loser)
    assert line.startswith("error: ") and "runs/c" in line and "in use" in line, loser.stderr
    seed = 1 if winner is done[0] else 2
    run = tmp_path / "runs" / "c"
    assert json.loads((run / "config.json").read_text())["run"]["seed"] == seed
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in winner.stdout
    history = json.loads((run / "history.json").read_text())
    printed = re.findall(r"^epoch (\d+)/2: loss ([\d.]+)", winner.stdout, re.M)
    assert [(str(h["epoch"]), f"{h['loss']:.4f}") for h in history] == printed


def test_export_trt_without_tensorrt_keeps_the_onnx_export(engine, tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "runs" / "a")
    onnx = (run / "model.onnx").read_bytes()
    p = engine.run("export", "trt", "runs/a", "--overwrite", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert_one_line_error(p)
    assert (run / "model.onnx").read_bytes() == onnx
    assert not (run / "model.engine").exists()


def test_train_overwrite_leaves_no_export_of_the_old_model(engine, tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "runs" / "a")
    assert (run / "model.onnx").is_file()
    p = engine.run("train", *TINY, "--epochs", "1", "--seed", "7", "--overwrite", "--out", "runs/a", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "config.json").read_text())["run"]["seed"] == 7
    assert not (run / "model.onnx").exists(), "model.onnx of the replaced run is still there"
