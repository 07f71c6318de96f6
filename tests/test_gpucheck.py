"""`python -m engine.gpucheck` as a user runs it, and what each of its GPU steps asks of the engine,
checked on this CPU: the steps' commands, environments and pass rules (the GPU itself is not here)."""
import json
import os
import subprocess
import sys
import types

import pytest

from engine import gpucheck, models
from tests.conftest import ROOT
from tests.stand_in_tensorrt import StandInTensorRT

USER_ENV = {k: v for k, v in os.environ.items() if k not in ("ENGINE_AMP", "ENGINE_XLA")}


def user_env(**extra):
    """A user's environment: none of the suite's ENGINE_AMP / ENGINE_XLA, this checkout importable."""
    return {**USER_ENV, "PYTHONPATH": str(ROOT), **extra}


def test_gpucheck_on_a_machine_without_a_gpu_says_so_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "engine.gpucheck"], cwd=tmp_path, env=user_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == gpucheck.EXIT_SKIPPED, p.stderr  # skipped, as before
    assert p.stdout.strip().splitlines() == [p.stdout.strip()] and "no NVIDIA GPU" in p.stdout, p.stdout
    assert "Traceback" not in p.stderr


def test_the_docstring_counts_the_registered_models():
    assert f"({len(models.names())} models;" in gpucheck.__doc__


KERNEL_STEP = """
import tensorflow as tf
from engine import gpucheck
ok, detail = gpucheck.check_kernels(["tiny", "airbench-muon"])
assert ok, detail
print("STEP", detail)
# TensorFlow's runtime in this process never started: on a GPU, it holds none of the GPU's memory
# (the same rule as set_memory_growth: settable only before the runtime starts)
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
print("RUNTIME UNTOUCHED")
gpucheck.missing_gpu_kernels("tiny")  # the same sweep in this process ...
try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 3)
except RuntimeError:
    print("RUNTIME STARTED BY AN IN-PROCESS SWEEP")  # ... would have started it
"""


def test_the_kernel_step_runs_as_for_a_user_in_a_child_and_leaves_this_process_off_the_gpu(tmp_path):
    p = subprocess.run([sys.executable, "-c", KERNEL_STEP], cwd=tmp_path, env=user_env(TF_CPP_MIN_LOG_LEVEL="3"),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "STEP every (op, dtype) has a GPU kernel (2 models; mixed_bfloat16, mixed_float16)" in p.stdout
    assert "RUNTIME UNTOUCHED" in p.stdout and "RUNTIME STARTED BY AN IN-PROCESS SWEEP" in p.stdout, p.stdout


def test_the_plans_kernel_step_sweeps_every_registered_model(monkeypatch):
    monkeypatch.setattr(gpucheck, "check_kernels", lambda names=None: (True, names or models.names()))
    name, step = gpucheck.plan(1, [(8, 0)])[0]
    assert name == "kernel placement" and step("work") == (True, models.names())


def names(num_gpus, capabilities):
    return [name for name, _ in gpucheck.plan(num_gpus, capabilities)]


def test_the_plan_runs_the_default_command_and_float16_on_bfloat16_gpus():
    a100 = names(1, [(8, 0)])
    assert a100 == ["kernel placement", "--amp --xla", "--amp", "default command", "default command, float16",
                    "--strategy mirrored", "TensorRT fp32", "TensorRT fp16", "TensorRT int8"]
    assert "default command, float16" not in names(1, [(7, 5)])  # a T4 trains every --amp step in float16
    assert "engine.launch --workers 2" in names(2, [(8, 6), (8, 6)])


@pytest.fixture
def runs(monkeypatch, tmp_path):
    """gpucheck's child processes, recorded; a train child writes the metrics.json `metrics` holds."""
    calls, metrics = [], {}

    def run(module, *args, env=None):
        calls.append((module, [str(a) for a in args], env or {}))
        if module == "engine.train":
            out = args[list(args).index("--out") + 1]
            os.makedirs(out)
            with open(os.path.join(out, "config.json"), "w") as f:  # a run folder, as engine train leaves it
                json.dump({}, f)
            with open(os.path.join(out, "metrics.json"), "w") as f:
                json.dump({"steps": 8, "train_img_s": 1000.0, "test_accuracy": 0.9, "test_accuracy_tta": 0.91,
                           **metrics}, f)
        if module == "engine.evaluate":
            report = args[list(args).index("--report") + 1]
            with open(report, "w") as f:
                json.dump({"img_s": 5000.0, "tensorflow_tf32": (env or {}).get("NVIDIA_TF32_OVERRIDE") != "0",
                           "against": {"top1_agreement": 1.0, "max_abs_logit_diff": 1e-5}}, f)
        return subprocess.CompletedProcess(module, 0, "", "")
    monkeypatch.setattr(gpucheck, "_run", run)
    monkeypatch.setattr(gpucheck, "digits_with_shifts", lambda folder: os.makedirs(folder))
    return types.SimpleNamespace(calls=calls, metrics=metrics, work=str(tmp_path))


def test_the_default_step_runs_the_default_command_as_a_user_and_holds_it_to_the_gpu_rule(runs):
    runs.metrics.update(policy="mixed_bfloat16", xla=True)
    ok, detail = gpucheck.check_default(runs.work, "default", [(8, 0)])
    assert ok, detail
    module, argv, env = runs.calls[-1]
    # nothing but the data (and where its decoded copy and the run go): the default model and recipe
    assert module == "engine.train"
    assert [a for a in argv if a.startswith("--")] == ["--data", "--cache-dir", "--quiet", "--out"]
    assert env == {"ENGINE_AMP": None, "ENGINE_XLA": None, "ENGINE_AMP_FLOAT16": None}  # --amp, --xla auto

    runs.metrics.update(policy="mixed_float16", xla=True)  # not what an A100 must get
    ok, detail = gpucheck.check_default(runs.work, "default-2", [(8, 0)])
    assert not ok and "the GPU rule gives mixed_bfloat16, xla True" in detail, detail

    runs.metrics.update(policy="mixed_bfloat16", xla=True, test_accuracy=0.1)  # the right choice, but no learning
    assert not gpucheck.check_default(runs.work, "default-3", [(8, 0)])[0]


def test_the_float16_step_asks_for_float16_and_expects_it(runs):
    runs.metrics.update(policy="mixed_float16", xla=True)
    ok, detail = gpucheck.check_default(runs.work, "default-float16", [(8, 0)], float16=True)
    assert ok, detail
    assert runs.calls[-1][2]["ENGINE_AMP_FLOAT16"] == "1"


@pytest.mark.parametrize("capabilities,float16,expected", [
    ([(8, 0)], False, ("mixed_bfloat16", True)), ([(9, 0), (9, 0)], False, ("mixed_bfloat16", True)),
    ([(7, 5)], False, ("mixed_float16", True)), ([(7, 0), (7, 0)], False, ("mixed_float16", False)),
    ([(8, 0)], True, ("mixed_float16", True)), ([(8, 6), (8, 6)], True, ("mixed_float16", False))])
def test_the_expected_choice_is_what_the_engines_gpu_rule_picks(monkeypatch, capabilities, float16, expected):
    """gpucheck's expectation, from first principles, against the engine's own rule and policy."""
    from engine import devices
    from engine.config import AUTO
    from engine.train import precision
    monkeypatch.setenv("ENGINE_AMP_FLOAT16", "1" if float16 else "0")
    monkeypatch.setattr(devices, "gpus", lambda: ["fake GPU"] * len(capabilities))
    monkeypatch.setattr(devices, "compute_capabilities", lambda: capabilities)
    amp, xla = precision.gpu_rule(AUTO, AUTO, capabilities, len(capabilities), False)
    assert gpucheck.expected_rule(capabilities, float16) == expected == (precision.policy_name(amp), xla)


def test_tensorrt_fp32_is_compared_with_tf32_off_on_both_sides(runs):
    for precision in ("fp32", "fp16"):
        ok, detail = gpucheck.check_trt(runs.work, os.path.join(runs.work, "amp"), precision)
        assert ok, detail
    (export32, _, env_export), (eval32, _, env_eval) = [c for c in runs.calls[:2]]
    assert (export32, eval32) == ("engine.export", "engine.evaluate")
    assert env_export == env_eval == {"NVIDIA_TF32_OVERRIDE": "0"}
    assert all(env == {} for _, _, env in runs.calls[2:])  # fp16 and int8 compare with TensorFlow's default


def test_the_fp32_step_fails_where_tensorflow_still_ran_tf32(runs, monkeypatch):
    run = gpucheck._run
    monkeypatch.setattr(gpucheck, "_run", lambda module, *args, env=None: run(module, *args, env=None))
    ok, detail = gpucheck.check_trt(runs.work, os.path.join(runs.work, "amp"), "fp32")
    assert not ok and "TF32 on" in detail, detail


def test_digits_with_shifts_hold_the_default_batch(tmp_path):
    from engine import data
    from engine.train import resolve
    splits = data.load(gpucheck.digits_with_shifts(str(tmp_path / "d")), str(tmp_path / "cache"), log=lambda *a: None)
    assert len(splits.x_train) >= resolve.defaults("airbench-muon").optim.batch_size == 2000
    assert splits.num_classes == 10 and len(splits.x_test) > 0
    assert splits.image_shape == (32, 32, 3) and gpucheck.DATA == "digits32"  # the default command's CIFAR shape



@pytest.mark.parametrize("override,tf32", [("0", False), ("1", True), (None, True)])
def test_the_tensorrt_build_clears_tf32_under_nvidia_tf32_override_0(monkeypatch, tmp_path, override, tf32):
    from engine.export import trt
    fake = StandInTensorRT(input_shape=(-1, 32, 32, 3))  # the file is no ONNX
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt, "gpus", lambda: ["fake GPU"])
    if override is None:
        monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    else:
        monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", override)
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    trt.build_trt_engine(str(tmp_path / "m.onnx"), str(tmp_path / "m.engine"), 1, 8, 8, None)
    assert ("TF32" in fake.flags) == tf32
    assert (tmp_path / "m.engine").read_bytes() == b"plan"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf32") / "run"
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--model", "tiny", "--data", "digits", "--epochs", "1",
                        "--batch-size", "64", "--no-amp", "--no-xla", "--quiet", "--out", str(out)],
                       env=user_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return out


@pytest.mark.parametrize("override,tf32", [("0", False), (None, True)])
def test_evaluate_runs_tensorflow_without_tf32_under_nvidia_tf32_override_0(tiny_run, tmp_path, override, tf32):
    env = user_env()
    env.pop("NVIDIA_TF32_OVERRIDE", None)
    if override is not None:
        env["NVIDIA_TF32_OVERRIDE"] = override
    p = subprocess.run([sys.executable, "-m", "engine", "evaluate", str(tiny_run), "--against", f"tf:{tiny_run}",
                        "--data", "digits", "--limit-test", "50", "--out", "r.json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["tensorflow_tf32"] is tf32


def test_engine_amp_float16_trains_float16_with_loss_scaling_where_bfloat16_is_native(tmp_path):
    """The float16 step's mechanism, on this CPU (where --amp is otherwise bfloat16)."""
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--model", "tiny", "--data", "digits", "--epochs", "1",
                        "--batch-size", "64", "--amp", "--no-xla", "--quiet", "--out", "run"], cwd=tmp_path,
                       env=user_env(ENGINE_AMP_FLOAT16="1"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["policy"] == "mixed_float16"


def test_a_bad_engine_amp_float16_is_one_line(tmp_path):
    from tests.conftest import assert_one_line_error
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--model", "tiny", "--data", "digits", "--epochs", "1",
                        "--amp", "--out", "run"], cwd=tmp_path, env=user_env(ENGINE_AMP_FLOAT16="yes"),
                       capture_output=True, text=True, timeout=600)
    assert_one_line_error(p, "ENGINE_AMP_FLOAT16=yes")
