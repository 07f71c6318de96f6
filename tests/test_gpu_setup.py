"""A GPU machine whose NVIDIA driver or TensorFlow install cannot run the engine on its GPU is told so in one
line, through the CLIs a user runs, although TensorFlow's own logs are kept quiet: a driver too old for the
PTX an H100 gets from TensorFlow 2.21, and a TensorFlow without its CUDA libraries (no [gpu] extra) that
would otherwise train on the CPU without a word. The GPU is a fake nvidia-smi on PATH (this machine has no
GPU, and this TensorFlow has no CUDA libraries installed, as on a pip install without [gpu])."""
import os
import shutil
import subprocess
import sys

import pytest

from engine import devices
from tests.conftest import ROOT, make_images, png_bytes
from tests.unit.test_gpu_driver import fake_nvidia_smi

FIXTURE_RUN = ROOT / "tests" / "fixtures" / "runs-v0.1" / "tiny"  # trained on digits
NO_CUDA = "but TensorFlow cannot use it: pip install -e '.[gpu]'; running on the CPU"


def engine(cwd, *args, path=None, **env):
    e = dict(os.environ, **{"PYTHONPATH": str(ROOT), **env})
    if path:
        e["PATH"] = path
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=600)


def warnings(p) -> list[str]:
    return [line for line in p.stderr.splitlines() if line.startswith("warning:")]


@pytest.fixture
def gpu_machine(tmp_path):
    """A tmp folder to work in, and a PATH whose nvidia-smi lists an A100 on a recent R550 driver."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "cat.png").write_bytes(png_bytes(make_images(1, 0)[0]))
    shutil.copytree(FIXTURE_RUN, tmp_path / "run")
    return tmp_path, fake_nvidia_smi(str(tmp_path / "bin"), ["NVIDIA A100-SXM4-40GB, 550.127.05, 8.0"])


def test_train_on_an_h100_with_an_r535_driver_and_no_cuda_libraries_says_both_before_training(tmp_path):
    path = fake_nvidia_smi(str(tmp_path), ["NVIDIA H100 80GB HBM3, 535.104.05, 9.0"])
    p = engine(tmp_path, "train", "--model", "tiny", "--data", "digits", "--epochs", "1", "--no-amp", "--no-xla",
               "--out", "run", path=path)
    assert p.returncode == 0, p.stderr
    assert warnings(p) == [
        "warning: NVIDIA H100 80GB HBM3 (compute capability 9.0) runs TensorFlow's CUDA 12.5 kernels as PTX, which "
        "needs NVIDIA driver 555.42.02 or newer; this machine has 535.104.05: upgrade the driver",
        f"warning: NVIDIA GPU found (NVIDIA H100 80GB HBM3) {NO_CUDA}"], p.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_predict_and_evaluate_say_once_that_tensorflow_cannot_use_the_gpu(gpu_machine):
    cwd, path = gpu_machine
    line = f"warning: NVIDIA GPU found (NVIDIA A100-SXM4-40GB) {NO_CUDA}"
    p = engine(cwd, "predict", "cat.png", "--model", "run", path=path)
    assert p.returncode == 0 and warnings(p) == [line], p.stderr
    p = engine(cwd, "evaluate", "--backend", "tf", "--model", "run", "--data", "digits", "--cache-dir", "cache",
               "--report", "e.json", path=path)
    assert p.returncode == 0 and warnings(p) == [line], p.stderr


def test_export_trt_names_why_tensorflow_has_no_gpu_in_one_line(gpu_machine):
    """With TensorRT installed (a stand-in package: export checks that it is there, then that TensorFlow
    has the GPU, before it imports it) but TensorFlow without CUDA."""
    cwd, path = gpu_machine
    (cwd / "site" / "tensorrt").mkdir(parents=True)
    (cwd / "site" / "tensorrt" / "__init__.py").write_text("raise ImportError('a stand-in, never imported')\n")
    p = engine(cwd, "export", "trt", "run", "--out", "run/model.engine", path=path,
               PYTHONPATH=f"{ROOT}{os.pathsep}{cwd / 'site'}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: NVIDIA GPU found (NVIDIA A100-SXM4-40GB) but TensorFlow cannot use it: pip install -e '.[gpu]'; "
        "TensorRT engines are built on the GPU they run on; nothing was exported"], p.stderr


def test_gpus_hidden_on_purpose_are_not_reported(gpu_machine):
    cwd, path = gpu_machine
    p = engine(cwd, "predict", "cat.png", "--model", "run", path=path, CUDA_VISIBLE_DEVICES="-1")
    assert p.returncode == 0 and warnings(p) == [], p.stderr


def test_the_build_info_read_without_tensorflow_is_tensorflows_own():
    import tensorflow as tf

    assert devices.tensorflow_build() == dict(tf.sysconfig.get_build_info())
    code = "from engine import devices; print(devices.tensorflow_build())"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.stdout.strip() == str(dict(tf.sysconfig.get_build_info())), p.stderr


def test_gpucheck_prints_the_driver_and_stops_at_once_on_an_h100_with_an_r535_driver(tmp_path):
    path = fake_nvidia_smi(str(tmp_path), ["NVIDIA H100 80GB HBM3, 535.104.05, 9.0"])
    e = dict(os.environ, PYTHONPATH=str(ROOT), PATH=path)
    p = subprocess.run([sys.executable, "-m", "engine.gpucheck"], cwd=tmp_path, env=e, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0] == ("NVIDIA driver 535.104.05: NVIDIA H100 80GB HBM3 (compute capability 9.0); TensorFlow built "
                        f"for CUDA {devices.tensorflow_build()['cuda_version']}")
    assert lines[1] == ("FAIL  GPU setup  NVIDIA H100 80GB HBM3 (compute capability 9.0) runs TensorFlow's CUDA 12.5 "
                        "kernels as PTX, which needs NVIDIA driver 555.42.02 or newer; this machine has 535.104.05: "
                        "upgrade the driver")
    # This TensorFlow has no CUDA libraries: no check could pass either, and none ran.
    assert lines[2:] == ["FAIL  GPU setup  NVIDIA GPU found (NVIDIA H100 80GB HBM3) but TensorFlow cannot use it: "
                         "pip install -e '.[gpu]'"], p.stdout
