"""What the engine reads of the NVIDIA driver without TensorFlow (nvidia-smi, through a fake nvidia-smi on
PATH: the same subprocess a GPU machine runs) and what it concludes against the installed TensorFlow's
CUDA build: a driver too old to JIT-compile the PTX an H100 gets, or too old for the CUDA major at all."""
import os
import subprocess
import sys

import pytest

from engine import devices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tf.sysconfig.get_build_info() of TensorFlow 2.21's CUDA wheel: native code up to sm_89, sm_90 as PTX only.
TF_2_21 = {"cuda_version": "12.5.1", "cuda_compute_capabilities": ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"]}


def fake_nvidia_smi(folder, rows: list[str], old_driver=False) -> str:
    """An nvidia-smi that answers --query-gpu with `rows` ("name, driver, compute capability"); an
    `old_driver` one refuses the compute_cap field as drivers before R510 do. Returns a PATH with it first."""
    with open(os.path.join(folder, "with-cc.csv"), "w") as f:
        f.write("".join(r + "\n" for r in rows))
    with open(os.path.join(folder, "without-cc.csv"), "w") as f:
        f.write("".join(r.rsplit(",", 1)[0] + "\n" for r in rows))
    refuse = 'echo "Field \\"compute_cap\\" is not a valid field to query." >&2; exit 2'
    script = (f'#!/bin/sh\ncase "$*" in\n  *compute_cap*) {refuse if old_driver else f"cat {folder}/with-cc.csv"};;\n'
              f'  *) cat {folder}/without-cc.csv;;\nesac\n')
    path = os.path.join(folder, "nvidia-smi")
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)
    return folder + os.pathsep + os.environ["PATH"]


def gpu(name, driver, cc):
    return {"name": name, "driver": driver, "compute_capability": cc}


def test_nvidia_smis_gpus_are_read_through_the_subprocess(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(str(tmp_path), ["NVIDIA H100 80GB HBM3, 535.104.05, 9.0",
                                                               "NVIDIA H100 80GB HBM3, 535.104.05, 9.0"]))
    assert devices.nvidia_gpus() == [gpu("NVIDIA H100 80GB HBM3", "535.104.05", (9, 0))] * 2
    assert devices.nvidia_gpu_models() == ["NVIDIA H100 80GB HBM3"] * 2
    assert devices.driver_summary().startswith("NVIDIA driver 535.104.05: NVIDIA H100 80GB HBM3 (compute capability 9.0)")


def test_a_driver_without_the_compute_cap_field_still_gives_its_gpus_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(str(tmp_path), ["Tesla V100-SXM2-16GB, 470.82.01, 7.0"], old_driver=True))
    assert devices.nvidia_gpus() == [gpu("Tesla V100-SXM2-16GB", "470.82.01", None)]


def test_no_nvidia_smi_and_no_driver_means_no_gpus_and_nothing_to_say(tmp_path, monkeypatch):
    if os.path.exists("/proc/driver/nvidia"):
        pytest.skip("this machine has an NVIDIA driver")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvidia-smi
    assert devices.nvidia_gpus() == [] and devices.driver_summary() is None
    assert devices.gpu_setup_problems() == []


@pytest.mark.parametrize("driver, api, told", [
    ("535.104.05", None, True),    # R535 (long-term support): CUDA 12.2's PTX ISA, not 12.5's
    ("550.54.14", None, True),     # R550: CUDA 12.4
    ("555.42.02", None, False),    # CUDA 12.5's own driver
    ("570.86.15", None, False),
    ("535.104.05", (12, 5), False),  # NVIDIA's forward-compatibility libcuda, 12.5, in the container
    ("535.104.05", (12, 2), True),
])
def test_an_h100_needs_the_driver_of_tensorflows_cuda_version_to_jit_its_ptx(driver, api, told):
    problem = devices.ptx_driver_too_old([gpu("NVIDIA H100 80GB HBM3", driver, (9, 0))], TF_2_21, api)
    assert (problem is not None) == told, problem
    if told:
        assert problem == (f"NVIDIA H100 80GB HBM3 (compute capability 9.0) runs TensorFlow's CUDA 12.5 kernels as "
                           f"PTX, which needs NVIDIA driver 555.42.02 or newer; this machine has {driver}: upgrade "
                           f"the driver")


@pytest.mark.parametrize("name, cc", [("NVIDIA A100-SXM4-40GB", (8, 0)), ("NVIDIA A10G", (8, 6)), ("NVIDIA L4", (8, 9)),
                                      ("Tesla T4", (7, 5)), ("Tesla V100-SXM2-16GB", (7, 0))])
def test_gpus_with_native_code_in_the_build_run_on_any_cuda_12_driver(name, cc):
    assert devices.ptx_driver_too_old([gpu(name, "525.60.13", cc)], TF_2_21) is None
    assert devices.driver_too_old([gpu(name, "525.60.13", cc)], TF_2_21) is None


def test_the_required_driver_follows_the_builds_cuda_version_not_a_constant():
    h100 = [gpu("NVIDIA H100 80GB HBM3", "550.54.14", (9, 0))]
    assert devices.ptx_driver_too_old(h100, dict(TF_2_21, cuda_version="12.4.1")) is None  # 12.4's PTX: R550 is enough
    assert "560.28.03" in devices.ptx_driver_too_old(h100, dict(TF_2_21, cuda_version="12.6.3"))
    assert "555.42.02" in devices.ptx_driver_too_old(h100, dict(TF_2_21, cuda_version="12.5.1"))
    hopper_native = dict(TF_2_21, cuda_compute_capabilities=TF_2_21["cuda_compute_capabilities"] + ["sm_90"])
    assert devices.ptx_driver_too_old(h100, hopper_native) is None  # a build with sm_90 code needs no JIT


def test_a_driver_older_than_the_cuda_majors_minimum_is_named():
    v100 = [gpu("Tesla V100-SXM2-16GB", "470.82.01", None)]
    assert devices.driver_too_old(v100, TF_2_21) == ("TensorFlow's CUDA 12.5 needs NVIDIA driver 525.60.13 or newer, "
                                                     "this machine has 470.82.01")
    assert devices.driver_too_old(v100, TF_2_21, (12, 5)) is None  # forward compatibility
    assert devices.driver_too_old(v100, {}) is None  # a TensorFlow without CUDA: nothing to compare


def test_tensorflows_build_info_is_read_without_importing_tensorflow():
    code = ("import sys; from engine import devices; b = devices.tensorflow_build(); "
            "print(b['cuda_version'], 'tensorflow' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    version, imported = p.stdout.split()
    assert p.returncode == 0 and imported == "False", p.stderr
    assert version.startswith("12.")


@pytest.mark.parametrize("value, hidden", [("", True), ("-1", True), ("0", False), ("GPU-5f3e", False)])
def test_cuda_visible_devices_can_hide_the_gpus(monkeypatch, value, hidden):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert devices.gpus_hidden() == hidden


def _script(folder, body: str) -> str:
    path = os.path.join(folder, "nvidia-smi")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return folder + os.pathsep + os.environ["PATH"]


@pytest.mark.parametrize("body", [
    r"printf '\377\376garbage\n'",                                      # not UTF-8
    "echo 'Failed to initialize NVML: Driver/library version mismatch'",  # a message, with exit code 0
    "echo 'garbage, unterminated\"NVIDIA, x.y, abc'",
])
def test_what_nvidia_smi_prints_that_is_not_a_gpu_is_no_gpu_and_no_traceback(tmp_path, monkeypatch, body):
    monkeypatch.setenv("PATH", _script(str(tmp_path), body))
    assert devices.nvidia_gpus() == [] and devices.gpu_setup_problems() == []
    from engine import launch
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert launch.visible_gpus() == []


def test_an_nvidia_smi_that_hangs_is_waited_for_once_and_said_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(devices, "SMI_TIMEOUT", 1)
    monkeypatch.setenv("PATH", _script(str(tmp_path), "exec sleep 30"))
    assert devices.nvidia_gpus() == [] and devices.nvidia_gpus() == []
    err = capsys.readouterr().err
    assert err.count("nvidia-smi did not answer in 1 s") == 1, err
