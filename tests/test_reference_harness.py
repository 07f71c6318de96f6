"""bench/reference: the published airbench94 adapted to a CPU, the data it reads, and the table of a
sitting. torch is not installed for the tests: the torch step's own check is that a sitting's data
matched the committed runs' data byte for byte (bench/reference/README.md)."""
import contextlib
import io
import re
import shutil

import numpy as np
import pytest

from bench.reference import adapt, data, summary
from tests.conftest import ROOT, assert_one_line_error, run_cli

# The lines of the published script the adaptation changes, each as often as the script has it, in
# a text of our own (the published script is not part of this repository).
SCRIPT = "\n".join([
    "import torchvision", "import torchvision.transforms as T",
    "class CifarLoader:",
    "        data = torch.load(data_path, map_location=torch.device(gpu))",
    "        self.images = (self.images.half() / 255)",
    "        self.normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)",
    "    net = net.half().cuda()",
    "def main(run):",
    "    model = make_net()",
    "    starter = torch.cuda.Event(enable_timing=True)", "    ender = torch.cuda.Event(enable_timing=True)",
    "    torch.cuda.synchronize()",
    "    for epoch in range(ceil(epochs)):",
    "        torch.cuda.synchronize()",
    "        val_acc = evaluate(model, test_loader, tta_level=0)",
    "    torch.cuda.synchronize()",
    "    epoch = 'eval'",
    "    accs = torch.tensor([main(run) for run in range(25)])",
]) + "\n"


def test_adapt_changes_every_gpu_line_and_sets_seed_and_runs():
    out = adapt.adapt(SCRIPT, seed=7, runs=3)
    for gone in ("torchvision", "torch.cuda", ".half()", "range(25)", "T.Normalize"):
        assert gone not in out
    assert "map_location='cpu'" in out and "net = net.float()" in out and "self.images.float()" in out
    assert "    torch.manual_seed(7)\n    model = make_net()\n" in out
    assert "range(3)" in out
    assert out.count("CpuEvent()") == 2 and "class CpuEvent:" in out


def test_adapted_timer_line_is_what_the_summary_reads():
    """The print the adaptation adds, run as the script would run it, gives the line summary parses."""
    out = adapt.adapt(SCRIPT)
    start = out.index("    print(f\"timer:")
    statement = out[start:out.index("flush=True)\n", start) + len("flush=True)")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(statement.strip().replace("\n          ", " "),
             {"times": {"training": 1146.84, "per-epoch eval": 93.93}, "total_time_seconds": 1202.08})
    m = summary.TIMER.search(printed.getvalue())
    assert m and m.groups() == ("1146.8", "93.9", "55.2")


@pytest.mark.parametrize("change", ["torch.cuda.synchronize()\n", "range(25)"])
def test_adapt_refuses_another_version_of_the_script(change, tmp_path):
    src = tmp_path / "airbench94.py"
    src.write_text(SCRIPT.replace(change, "", 1))  # one occurrence fewer than the adaptation expects
    with pytest.raises(adapt.AdaptError, match=re.escape(change.strip())):
        adapt.adapt(src.read_text())
    p = run_cli("bench.reference.adapt", src, tmp_path / "out.py")
    assert_one_line_error(p, "not the legacy/airbench94.py")
    assert not (tmp_path / "out.py").exists()


def test_training_order_is_fixed_and_mixes_classes():
    y = np.repeat(np.arange(10), 5000)  # class-sorted, as a folder of classes decodes
    x = np.arange(50_000)
    xo, yo = data.ordered(x, y)
    assert np.array_equal(yo, y[xo])  # images and labels move together
    assert sorted(xo.tolist()) == list(range(50_000))
    assert np.array_equal(xo, data.ordered(x, y)[0])
    counts = np.bincount(yo[:5000], minlength=10)  # what the reference whitens from
    assert counts.min() > 400 and counts.max() < 600


def test_export_writes_the_decoded_data_in_that_order(tree, tmp_path):
    root, truth = tree
    p = run_cli("bench.reference.data", "export", tmp_path / "ref", "--data", root)
    assert p.returncode == 0, p.stderr
    arrays = np.load(tmp_path / "ref" / "cifar10.npz")
    classes = sorted({c for _, c in truth})
    x_sorted = np.concatenate([truth[("train", c)] for c in classes])
    y_sorted = np.repeat(np.arange(len(classes)), 4)
    x, y = data.ordered(x_sorted, y_sorted)
    assert np.array_equal(arrays["x_train"], x) and np.array_equal(arrays["y_train"], y)
    assert np.array_equal(arrays["x_test"], np.concatenate([truth[("test", c)] for c in classes]))
    assert arrays["classes"].tolist() == classes


def test_data_steps_fail_in_one_line(tmp_path):
    assert_one_line_error(run_cli("bench.reference.data", "export", tmp_path / "r", "--data", tmp_path / "none"))
    # without the export step's file: one line, whether or not torch is installed
    assert_one_line_error(run_cli("bench.reference.data", "pt", tmp_path / "r"))


SITTING = ROOT / "bench" / "results" / "2026-12-05-amd-avx512" / "default-vs-reference-matmul"


def test_summary_of_a_committed_sitting(tmp_path):
    shutil.copy(SITTING / "reference-seed-1.log", tmp_path)
    for s in (0, 1, 2):
        (tmp_path / f"seed-{s}").mkdir()
        shutil.copy(SITTING / "bfloat16" / f"seed-{s}-metrics.json", tmp_path / f"seed-{s}" / "metrics.json")
    refs, runs = summary.collect(str(tmp_path))
    assert refs[1]["training"] == 1146.8 and refs[1]["tta"] == 0.9075 and refs[1]["top1"] == 0.8971
    assert refs[1]["wall"] == pytest.approx(21 * 60 + 39.16)
    # the engine's training counts its first call: 368.39 s of steps + 21.64 s
    assert runs[0]["training"] == pytest.approx(390.03, abs=0.01)
    text = summary.table(refs, runs)
    assert "| **engine, mean of 3** | 89.63% | **90.62%** |" in text
    assert "0.35x the reference's" in text


def test_summary_errors_in_one_line(tmp_path):
    assert_one_line_error(run_cli("bench.reference.summary", tmp_path), "no reference-seed-N.log")
    (tmp_path / "reference-seed-1.log").write_text("|  run  |  epoch  |\n")  # stopped before its end
    assert_one_line_error(run_cli("bench.reference.summary", tmp_path), "no 'timer:' line")


def _sitting(*args, **env):
    import os
    import subprocess
    return subprocess.run(["bash", "bench/reference/sitting.sh", *map(str, args)], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_sitting_refuses_bad_arguments_before_running_anything(tmp_path):
    script = tmp_path / "airbench94.py"
    script.write_text(SCRIPT)
    assert_one_line_error(_sitting(), "usage")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "seed-0.log").write_text("an earlier sitting")
    assert_one_line_error(_sitting(kept, script), "exists")  # never writes into an earlier sitting
    assert (kept / "seed-0.log").read_text() == "an earlier sitting"
    assert_one_line_error(_sitting(tmp_path / "new", tmp_path / "missing.py"), "not found")
    assert_one_line_error(_sitting(tmp_path / "new", script, REF_PYTHON=str(tmp_path / "no-python")),
                          "cannot import torch")
    assert not (tmp_path / "new").exists()
