"""engine.launch on a GPU machine: every local worker gets its own GPUs (CUDA_VISIBLE_DEVICES), the
same number each, and no GPU is shared by two workers. nvidia-smi is faked: no GPU exists here."""
import json
import os
import stat
import subprocess
import sys

import pytest

from engine import launch
from engine.errors import EngineError


def test_gpus_are_split_between_workers():
    assert launch.gpu_shares(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
    assert launch.gpu_shares(["0", "1", "2"], 3) == [["0"], ["1"], ["2"]]
    assert launch.gpu_shares([], 2, cores=2) == [[], []]


def test_every_worker_gets_as_many_gpus_and_those_left_over_are_named():
    # MultiWorkerMirroredStrategy: "All workers need to use the same number of devices"
    gpus = ["0", "1", "2", "3", "4"]
    shares = launch.gpu_shares(gpus, 2)
    assert shares == [["0", "1"], ["2", "3"]]
    assert launch.unused_gpus(gpus, shares) == ["4"]
    assert launch.gpu_shares(["0", "1", "2"], 2) == [["0"], ["1"]]


@pytest.mark.parametrize("gpus, workers", [(["0"], 2), (["0", "1"], 3), (["0", "1", "2"], 8)])
def test_no_gpu_is_shared_by_two_workers(gpus, workers):
    with pytest.raises(EngineError, match=f"--workers {workers} needs a GPU per worker.*has {len(gpus)} GPU"):
        launch.gpu_shares(gpus, workers)


def _fake_nvidia_smi(folder, gpus: int) -> str:
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(gpus)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_launch_on_a_one_gpu_machine_refuses_two_workers_in_one_line_before_any_starts(tmp_path):
    """The documented example, `engine launch --workers 2 -- --model tiny ...`, on a 1-GPU machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = _fake_nvidia_smi(bin_dir, 1) + os.pathsep + env["PATH"]
    p = subprocess.run([sys.executable, "-m", "engine", "launch", "--workers", "2", "--", "--model", "tiny",
                        "--data", "digits", "--epochs", "1", "--out", "runs/mw"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --workers 2 needs a GPU per worker"), err
    assert "this machine has 1 GPU" in err and "--workers 1" in err and "CUDA_VISIBLE_DEVICES=-1" in err
    assert "[worker" not in p.stdout and not (tmp_path / "runs").exists()  # nothing started


def test_each_worker_sees_only_its_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert launch.visible_gpus() == ["4", "6"]
    configs = launch.tf_configs([1111, 2222])
    envs = [launch.worker_env(c, 1, g) for c, g in zip(configs, launch.gpu_shares(launch.visible_gpus(), 2))]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "6"]
    assert [json.loads(e["TF_CONFIG"])["task"]["index"] for e in envs] == [0, 1]


def test_without_gpus_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert launch.visible_gpus() == []
    env = launch.worker_env(launch.tf_configs([1111])[0], 2, [])
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["TF_NUM_INTRAOP_THREADS"] == "2"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError()))
    assert launch.visible_gpus() == []  # no nvidia-smi: no GPUs


def test_more_cpu_workers_than_cores_is_one_line_before_any_starts(monkeypatch, capsys):
    from tests.conftest import assert_one_line_error, run_in_process
    monkeypatch.setattr(launch, "visible_gpus", lambda: [])
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 2)
    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: started.append(a))
    p = run_in_process(capsys, "engine.launch", "--workers", "3", "--", "--model", "tiny", "--out", "x")
    assert_one_line_error(p, "--workers 3 on the CPU needs a core per worker, and this machine has 2; "
                             "use --workers 2 or fewer")
    assert started == []


def test_a_warning_every_worker_gives_is_shown_once(capsys):
    import threading
    import types
    lines = ["warning: --xla was not measured on this CPU\n", "epoch 1/1: loss 2.3\n", "note: cached data\n"]
    lock, errors, said = threading.Lock(), {}, set()
    for i in range(2):
        launch._stream(i, types.SimpleNamespace(stdout=list(lines)), lock, errors, said)
    out = capsys.readouterr().out.splitlines()
    assert out == ["[worker 0] warning: --xla was not measured on this CPU", "[worker 0] epoch 1/1: loss 2.3",
                   "[worker 0] note: cached data", "[worker 1] epoch 1/1: loss 2.3"]
