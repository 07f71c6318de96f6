"""Dockerfile.gpu, checked without a Docker daemon or a GPU (neither exists on our machines): it lints
clean, its CUDA base matches what this TensorFlow was built against, and it ships what the README's
`docker run` lines use."""
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.gpu"


def instructions():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_image_matches_tensorflows_cuda_build():
    (base,) = [rest for word, rest in instructions() if word == "FROM"]
    m = re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-cudnn(\d*)-runtime-ubuntu(\d+\.\d+)", base)
    assert m, base
    info = tf.sysconfig.get_build_info()
    assert m.group(1) == info["cuda_version"]
    assert str(info["cudnn_version"]).split(".")[0] == (m.group(2) or "9")  # CUDA 12.4+ tags: cudnn = 9
    # The distribution's python3 must satisfy requires-python (22.04's 3.10 has no onnxruntime 1.32).
    python = {"20.04": (3, 8), "22.04": (3, 10), "24.04": (3, 12)}[m.group(3)]
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    bounds = [int(v) for v in re.fullmatch(r">=(\d+)\.(\d+),<(\d+)\.(\d+)", spec).groups()]
    assert tuple(bounds[:2]) <= python < tuple(bounds[2:]), (python, spec)


def test_image_runs_the_engine_as_a_plain_user():
    ins = instructions()
    assert ("ENTRYPOINT", '["python", "-m"]') in ins
    assert ("CMD", '["engine.train", "--help"]') in ins
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # The image's Python dependencies are pyproject's: its one pip install is the project with extras.
    installs = [cmd.split("pip install", 1)[1].split() for word, rest in ins if word == "RUN"
                for cmd in rest.split("&&") if "pip install" in cmd]
    assert len(installs) == 1
    packages = [a for a in installs[0] if not a.startswith("-") and "://" not in a]
    assert packages == ['".[gpu,trt]"'], packages
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"gpu", "trt"} <= set(extras)
    # Every COPY source exists and survives .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in ins:
        if word == "COPY":
            *sources, _ = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), src
                assert src.rstrip("/") in kept, f"{src} is excluded by .dockerignore"
    assert "tests" not in kept and "*" in ignore  # the image gets the package, not the repo


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (it comes with the [dev] extra)")
    p = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True)
    assert p.returncode == 0, json.loads(p.stdout or "[]")


def test_the_trt_extra_is_tensorrts_build_for_tensorflows_cuda_major():
    """The bare `tensorrt` package now installs TensorRT's CUDA 13 build; TensorFlow 2.21 is CUDA 12."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0): r for r in extras["trt"]}
    major = tf.sysconfig.get_build_info()["cuda_version"].split(".")[0]
    assert "tensorrt" not in names
    assert re.fullmatch(rf"tensorrt-cu{major}==\d+\.\d+\.\d+", names[f"tensorrt-cu{major}"])  # one tested version
    # 0.53 finds libcudart in pip's nvidia-cuda-runtime wheel as well as in a system CUDA (/usr/local/cuda
    # in the image); 0.49 searched only LD_LIBRARY_PATH and system folders (its polygraphy/cuda/cuda.py).
    assert re.fullmatch(r"polygraphy==0\.(\d+)\.\*", names["polygraphy"]) and int(names["polygraphy"].split(".")[1]) >= 53


def test_the_cuda_jit_cache_lives_on_the_runs_volume():
    """No sm_90 kernels in TensorFlow 2.21: Hopper GPUs JIT-compile its PTX at start. The cache must
    outlive a --rm container, and be large enough to hold TensorFlow's kernels."""
    env = {}
    for word, rest in instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    volumes = [json.loads(rest) for word, rest in instructions() if word == "VOLUME"][0]
    assert any(env["CUDA_CACHE_PATH"].startswith(v + "/") for v in volumes), env["CUDA_CACHE_PATH"]
    assert int(env["CUDA_CACHE_MAXSIZE"]) >= 2 ** 31
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # TensorFlow leaves GPU memory to TensorRT
