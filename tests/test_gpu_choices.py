"""What the engine decides for a GPU machine, from the devices TensorFlow reports (faked here: no
GPU exists on the machines this runs on): the --amp precision by compute capability, the refusal of
untried combinations, where batches are staged, and GPU memory left to TensorRT."""
import pytest
import tensorflow as tf

from engine import devices
from engine.errors import EngineError
from engine.train import precision, resolve
from engine.train.feeds import staging_device
from tests.conftest import run_with_cpu_devices


def fake_gpus(monkeypatch, *capabilities):
    monkeypatch.setattr(devices, "gpus", lambda: [f"GPU:{i}" for i in range(len(capabilities))])
    monkeypatch.setattr(devices, "compute_capabilities", lambda: list(capabilities))


def test_amp_is_bfloat16_from_compute_capability_8_and_float16_below(monkeypatch):
    fake_gpus(monkeypatch, (8, 0))
    assert precision.policy_name(True) == "mixed_bfloat16"  # A100: no loss scaling
    fake_gpus(monkeypatch, (9, 0), (9, 0))
    assert precision.policy_name(True) == "mixed_bfloat16"  # H100
    fake_gpus(monkeypatch, (7, 5))
    assert precision.policy_name(True) == "mixed_float16"  # T4
    assert precision.needs_loss_scaling(precision.policy_name(True))
    fake_gpus(monkeypatch, (8, 6), (7, 0))
    assert precision.policy_name(True) == "mixed_float16"  # a V100 among them: what all can run
    fake_gpus(monkeypatch)
    assert precision.policy_name(True) == "mixed_bfloat16"  # CPUs
    assert precision.policy_name(False) == "float32"


def test_what_a_run_says_it_computes_in_is_the_policy_it_applies(monkeypatch):
    """The log line's and metrics.json's precision (speed_choice.choice) comes from the policy
    precision.apply sets: float16 on compute capability 7.x, where it used to say bfloat16."""
    fake_gpus(monkeypatch, (7, 5))  # T4
    assert precision.label(True) == "float16" and precision.policy_name(True) == "mixed_float16"
    fake_gpus(monkeypatch, (8, 0))  # A100
    assert precision.label(True) == "bfloat16"
    fake_gpus(monkeypatch)          # CPU
    assert precision.label(True) == "bfloat16" and precision.label(False) == "float32"


def test_float32_on_compute_capability_8_is_said_to_be_tf32_while_tensorflows_switch_is_on(monkeypatch):
    """TensorFlow computes float32 matmuls and convolutions in TF32 on GPUs of compute capability >= 8.0
    by default (tf.config.experimental.tensor_float_32_execution_enabled), never on CPUs: --no-amp says
    which ran, and so does an --amp run for its float32 parts (Muon's Newton-Schulz)."""
    assert tf.config.experimental.tensor_float_32_execution_enabled()  # TensorFlow's default
    fake_gpus(monkeypatch, (8, 6))
    assert precision.label(False) == "float32 (TF32 matmuls)" and precision.tf32_matmuls([(8, 6)])
    try:
        tf.config.experimental.enable_tensor_float_32_execution(False)
        assert precision.label(False) == "float32" and not precision.tf32_matmuls([(8, 6)])
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
    fake_gpus(monkeypatch, (7, 0))
    assert precision.label(False) == "float32"  # V100: no TF32
    fake_gpus(monkeypatch)
    assert precision.label(False) == "float32" and not precision.tf32_matmuls([])  # CPU


@pytest.mark.parametrize("amp,xla,capabilities,choice,line", [
    (True, True, [(7, 5)], "float16 + XLA", "speed: float16 + XLA (given)"),      # --amp --xla on a T4
    (False, False, [(8, 0)], "float32 (TF32 matmuls)", "speed: float32 (TF32 matmuls) (given)"),  # A100, --no-amp
    ("auto", "auto", [(7, 0)], "float16 + XLA", "speed: float16 + XLA (GPU rule)"),  # the default on a V100
    (False, "auto", [(9, 0)], "float32 (TF32 matmuls) + XLA", "speed: float32 (TF32 matmuls) + XLA (GPU rule)"),
    ("auto", "auto", [(9, 0)], "bfloat16 + XLA", "speed: bfloat16 + XLA (GPU rule; float32 parts in TF32)"),
])
def test_the_runs_speed_line_and_metrics_say_what_ran_on_gpus(monkeypatch, amp, xla, capabilities, choice, line):
    """engine.train.speed.choose, as a run calls it: its describe() is the run's log line, its
    to_dict() metrics.json's speed_choice; for given choices (--amp/--no-amp, a resume) as for the
    GPU rule's."""
    from engine.train import speed
    fake_gpus(monkeypatch, *capabilities)
    cfg = resolve.defaults("tiny").replace("run", amp=amp, xla=xla)
    got = speed.choose(cfg, tf.distribute.get_strategy(), 10, "unused")
    assert got.describe() == line and got.to_dict()["choice"] == choice
    assert got.to_dict()["tf32_matmuls"] == (capabilities[0] >= (8, 0))


def test_xla_amp_float16_over_several_replicas_is_refused_in_one_line():
    cfg = resolve.defaults("tiny").replace("run", xla=True, amp=True)
    with pytest.raises(EngineError, match="drop --xla, or train on one GPU"):
        resolve.check_replicas(cfg, "mixed_float16", 2)
    assert resolve.check_replicas(cfg, "mixed_float16", 1) == 512
    assert resolve.check_replicas(cfg, "mixed_bfloat16", 2) == 256
    assert resolve.check_replicas(cfg.replace("run", xla=False), "mixed_float16", 2) == 256


def test_batches_are_staged_on_the_gpu_only_under_the_default_strategy():
    default = tf.distribute.get_strategy()
    assert staging_device(default, have_gpu=True) == "/gpu:0"
    assert staging_device(default, have_gpu=False) is None
    one_replica = tf.distribute.MirroredStrategy(["/cpu:0"])  # --strategy mirrored on a 1-GPU machine
    assert staging_device(one_replica, have_gpu=True) is None


STAGING = """
import numpy as np
from engine.data.pipeline import Pipeline
pipe = Pipeline(np.zeros((8, 32, 32, 3), np.uint8), np.arange(8) % 10)
default = next(iter(pipe.train(4, 0, 0, device="/cpu:1")))[0].device
print("DEFAULT", default)
s = tf.distribute.MirroredStrategy(["/cpu:1"])
try:
    next(iter(s.experimental_distribute_dataset(pipe.train(4, 0, 0, device="/cpu:1"))))
    print("MIRRORED ok")
except Exception as e:
    print("MIRRORED", type(e).__name__)
"""


def test_why_staging_is_left_to_a_strategy():
    """prefetch_to_device works under the default strategy and cannot be wrapped by a
    MirroredStrategy, even one of a single replica (it would have to serialise the dataset). Shown
    with logical CPU devices: the failure does not depend on the device kind."""
    p = run_with_cpu_devices(STAGING)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "DEFAULT /job:localhost/replica:0/task:0/device:CPU:1" in p.stdout
    assert "MIRRORED FailedPreconditionError" in p.stdout


def test_memory_growth_is_set_on_every_gpu(monkeypatch):
    """Config check (no GPU here): the call TensorFlow documents for leaving memory to others."""
    calls = []
    monkeypatch.setattr(devices, "gpus", lambda: ["GPU:0", "GPU:1"])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda gpu, on: calls.append((gpu, on)))
    devices.allow_memory_growth()
    assert calls == [("GPU:0", True), ("GPU:1", True)]


@pytest.mark.parametrize("argv", [["--backend", "trt", "--model", "m.engine"],
                                  ["--backend", "onnx", "--model", "m.onnx", "--against", "trt:m.engine"]])
def test_evaluate_leaves_gpu_memory_to_tensorrt(monkeypatch, tmp_path, argv):
    from engine import evaluate
    calls = []
    monkeypatch.setattr(devices, "allow_memory_growth", lambda: calls.append(True))
    monkeypatch.chdir(tmp_path)
    for name in ("m.engine", "m.onnx"):
        (tmp_path / name).write_bytes(b"not a model")
    with pytest.raises(SystemExit):
        evaluate.main(argv)  # fails at loading the model, after the memory setting
    assert calls == [True]


def test_gpucheck_runs_launch_only_where_two_gpus_exist():
    from engine import gpucheck
    assert "engine.launch --workers 2" not in [name for name, _ in gpucheck.plan(1, [(8, 0)])]
    assert "engine.launch --workers 2" in [name for name, _ in gpucheck.plan(2, [(8, 0), (8, 0)])]


def test_gpucheck_paths_report_a_line_each(tmp_path):
    """The training paths' commands run here on the CPU (so their flags and reports are right); the
    TensorRT path, with no TensorRT installed, fails as one line instead of a crash."""
    from engine import gpucheck
    ok, detail = gpucheck.check_training(str(tmp_path), "mirrored", ["--strategy", "mirrored"])
    assert ok and "1 epoch of tiny" in detail and "policy float32" in detail, detail
    ok, detail = gpucheck.check_trt(str(tmp_path), str(tmp_path / "mirrored"), "fp32")
    assert not ok and "TensorRT is not installed" in detail, detail


def test_a_run_under_nvidia_tf32_override_0_keeps_tensorflow_out_of_tf32(monkeypatch, tmp_path):
    """NVIDIA_TF32_OVERRIDE=0 is NVIDIA's switch for cuBLAS and cuDNN; a run obeys it in TensorFlow too
    (XLA's own kernels), before its speed choice says what it computes in."""
    from engine import train
    from engine.train import cli
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    tf.config.experimental.enable_tensor_float_32_execution(True)
    try:
        cfg = cli.parse(["--model", "tiny", "--data", "digits", "--epochs", "1", "--no-amp",
                         "--no-xla", "--out", str(tmp_path / "r"), "--quiet"])
        metrics = train.run(cfg, log=lambda *a: None)
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
        assert metrics["speed_choice"]["tf32_matmuls"] is False
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
