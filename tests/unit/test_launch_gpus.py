"""engine.launch on a GPU machine: every local worker gets its own GPUs (CUDA_VISIBLE_DEVICES)."""
import json

from engine import launch


def test_gpus_are_split_between_workers():
    assert launch.gpu_shares(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
    assert launch.gpu_shares(["0", "1", "2"], 3) == [["0"], ["1"], ["2"]]
    assert launch.gpu_shares(["0", "1"], 4) == [["0"], ["1"], ["0"], ["1"]]  # fewer GPUs: shared round-robin
    assert launch.gpu_shares([], 2) == [[], []]


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
