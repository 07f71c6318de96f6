"""bench.ablation's table: each arm's mean and spread, Welch's 95% interval of its TTA mean minus the
baseline's, FLOPs and training time against the baseline's, from a sitting's files."""
import json

import pytest
from scipy import stats

from bench import ablation


def _metrics(folder, name, seed, tta, train_flops, training):
    m = {"test_accuracy": tta - 0.01, "test_accuracy_tta": tta, "wall_seconds": training + 50,
         "wall_breakdown": {"training steps": training - 10, "first call (tracing, compilation)": 10},
         "flops": {"training_flops": train_flops, "evaluation_flops": 1e13}}
    (folder / f"{name}-seed-{seed}-metrics.json").write_text(json.dumps(m))


def test_the_table_gives_welchs_interval_and_the_ratios_to_the_baseline(tmp_path):
    base, arm = [0.907, 0.909, 0.905], [0.903, 0.906]
    for s, v in enumerate(base):
        _metrics(tmp_path, "default", s, v, 2.8e14, 1000)
    for s, v in enumerate(arm):
        _metrics(tmp_path, "cheap", s, v, 1.4e14, 600)
    (tmp_path / "arms.txt").write_text("default: engine train\ncheap: engine train --x\n")
    assert ablation.main(["summary", str(tmp_path)]) == 0
    diff, lo, hi = ablation._interval(arm, base)
    welch = stats.ttest_ind(arm, base, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(arm) / 2 - sum(base) / 3)
    assert (lo, hi) == (pytest.approx(welch.low), pytest.approx(welch.high))
    table = ablation.table(ablation.collect(str(tmp_path)), ["default", "cheap"], "default")
    row = next(line for line in table.splitlines() if line.startswith("| cheap "))
    assert "| 0,1 |" in row and "90.45% ± 0.21" in row
    assert f"{100 * diff:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})" in row
    assert "0.1400 (0.50x)" in row and "600.0 s (0.60x)" in row


def test_arms_are_name_colon_flags_once_each(tmp_path):
    f = tmp_path / "arms"
    f.write_text("# comment\nbase:\nx: --lr 0.1  # note\n")
    assert ablation.read_arms(str(f)) == [("base", ""), ("x", "--lr 0.1")]
    f.write_text("a: --lr 1\na: --lr 2\n")
    with pytest.raises(ValueError, match="named twice"):
        ablation.read_arms(str(f))


def test_the_machine_file_names_this_cpu_and_the_flags_it_has(monkeypatch, tmp_path):
    from bench import machine
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
                       "flags\t\t: fpu avx2 avx512f avx512_bf16 sse\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(cpuinfo if p == "/proc/cpuinfo" else p, *a, **k))
    text = machine.describe()
    assert "cpu family\t: 25" in text and "model\t\t: 17" in text
    assert "flags: avx2 avx512f avx512_bf16\n" in text  # the speed flags it has (engine.devices), not sse
    assert "tensorflow 2." in text


def test_several_folders_are_tabled_together_and_a_seed_is_taken_from_the_first(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    for s, v in enumerate([0.907, 0.909, 0.905]):
        _metrics(old, "default", s, v, 2.8e14, 1000)
    (old / "arms.txt").write_text("default: engine train\n")
    _metrics(new, "default", 1, 0.5, 2.8e14, 700)  # the same arm and seed again: the first folder's is kept
    _metrics(new, "cheap", 0, 0.903, 1.4e14, 600)
    (new / "arms.txt").write_text("cheap: engine train --x\ndefault: engine train\n")
    assert ablation.main(["summary", str(old), str(new)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| default | 0,1,2 |") and "90.70% ± 0.20" in rows[0]
    assert rows[1].startswith("| cheap | 0 |") and "0.1400 (0.50x)" in rows[1] and "600.0 s (0.60x)" in rows[1]
    assert ablation.main(["summary", str(tmp_path / "none")]) == 2


def test_a_finished_run_tested_again_has_no_training_time(tmp_path):
    """A run resumed after its last step (another --tta-fraction, say) trained nothing in its process:
    its arm's time is "–", not 0.0 s (0.00x)."""
    _metrics(tmp_path, "default", 0, 0.907, 2.8e14, 1000)
    _metrics(tmp_path, "retested", 0, 0.908, 1.4e14, 0)
    table = ablation.table(ablation.collect(str(tmp_path)), ["default", "retested"], "default")
    row = next(line for line in table.splitlines() if line.startswith("| retested "))
    assert row.endswith("| 0.1400 (0.50x) | 0.0100 (1.00x) | – |"), row
