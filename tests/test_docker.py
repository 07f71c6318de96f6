"""Dockerfile.gpu, checked without a Docker daemon or a GPU (neither exists on our machines): it lints
clean, its CUDA base matches what this TensorFlow was built against, and it ships what the README's
`docker run` lines use."""
import json
import os
import re
import shutil
import subprocess
import sys
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
    assert ("ENTRYPOINT", '["engine-entrypoint"]') in ins  # docker/entrypoint.sh: checks /runs, runs python -m
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
            *sources, _ = [a for a in rest.split() if not a.startswith("--")]
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


def image_env() -> dict:
    env = {}
    for word, rest in instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def test_the_cuda_jit_cache_lives_on_the_runs_volume():
    """No sm_90 kernels in TensorFlow 2.21: Hopper GPUs JIT-compile its PTX at start. The cache must
    outlive a --rm container, and be large enough to hold TensorFlow's kernels."""
    env = image_env()
    volumes = [json.loads(rest) for word, rest in instructions() if word == "VOLUME"][0]
    assert any(env["CUDA_CACHE_PATH"].startswith(v + "/") for v in volumes), env["CUDA_CACHE_PATH"]
    assert int(env["CUDA_CACHE_MAXSIZE"]) >= 2 ** 31
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # TensorFlow leaves GPU memory to TensorRT


# --- the image as any uid (docker run --user "$(id -u):$(id -g)" -v "$PWD/runs:/runs"), without a Docker daemon.
# A bind mount shows the host folder with its host owner. Another uid is simulated as the audit's repro does:
# as root, uid 0 without the capabilities that override file permissions (the project's interpreter may sit
# in root's private home, which another uid cannot read); otherwise this user with a read-only folder.
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
NOT_ROOT = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def as_image(cmd, runs, tmp, extra_env=None):
    """Run the image's start script with the image's ENV, /runs and /tmp mapped to host folders, the
    installed engine on PYTHONPATH, as a user without root's file-permission overrides."""
    env = {"PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "ENGINE_AMP": "off", "ENGINE_XLA": "off", **(extra_env or {})}
    for key, value in image_env().items():
        if value.startswith(("/runs", "/tmp")):
            env[key] = str(runs) + value[len("/runs"):] if value.startswith("/runs") else str(tmp) + value[len("/tmp"):]
        elif key != "PATH" and "$" not in value:
            env[key] = value
    prefix = NOT_ROOT if os.geteuid() == 0 else []
    return subprocess.run([*prefix, "sh", str(ENTRYPOINT), *cmd], env=env, cwd=runs, capture_output=True, text=True,
                          timeout=600)


def host_folder(path, writable: bool):
    """A bind-mounted host folder: the container user's own, or another uid's (mode 755) that it cannot write."""
    path.mkdir(mode=0o755)
    if not writable:
        if os.geteuid() == 0:
            os.chown(path, 1000, 1000)
        else:
            path.chmod(0o555)
    return path


def test_the_image_runs_as_any_uid():
    """--user with a uid the image does not know: HOME and every cache must be writable by it, so HOME is
    in /tmp and the caches on the runs volume (its owner's, as the docs say to run)."""
    env = image_env()
    assert env["HOME"] == "/tmp" or env["HOME"].startswith("/tmp/"), env.get("HOME")
    runs = env["ENGINE_RUNS"]
    volumes = [json.loads(rest) for word, rest in instructions() if word == "VOLUME"][0]
    assert runs in volumes and [rest for word, rest in instructions() if word == "WORKDIR"][-1] == runs
    for key in ("ENGINE_CACHE", "CUDA_CACHE_PATH"):
        assert env[key].startswith(runs + "/"), (key, env[key])
    made = [cmd for word, rest in instructions() if word == "RUN" for cmd in rest.split("&&") if runs in cmd]
    assert any(re.search(rf"chmod 1777 {runs}\b", cmd) for cmd in made), made  # a volume Docker makes from it
    assert ("COPY", "--chmod=755 docker/entrypoint.sh /usr/local/bin/engine-entrypoint") in instructions()


def test_the_start_says_in_one_line_when_runs_is_not_writable_and_still_runs_the_command(tmp_path):
    runs, tmp = host_folder(tmp_path / "runs", writable=False), tmp_path / "tmp"
    tmp.mkdir(mode=0o1777)
    p = as_image(["platform"], runs, tmp)  # `docker run ... engine:gpu platform`: python -m platform
    assert p.returncode == 0 and p.stdout.strip(), p.stderr
    owner = os.stat(runs).st_uid
    assert p.stderr.splitlines() == [
        f"warning: {runs} is not writable by uid {os.geteuid()} (it belongs to uid {owner}): create the folder first "
        f"(mkdir -p runs) and run the container as its owner, docker run --user \"$(id -u):$(id -g)\" ..."], p.stderr


def test_the_engine_trains_into_runs_as_the_folders_owner_with_the_images_environment(tmp_path):
    """docs' command with --user: the run, the data cache and HOME's settings are written; nothing is said."""
    runs, tmp = host_folder(tmp_path / "runs", writable=True), tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    p = as_image(["engine.train", "--model", "tiny", "--data", "digits", "--epochs", "1", "--quiet", "--out",
                  "airbench"], runs, tmp)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "", p.stderr
    assert (runs / "airbench" / "metrics.json").is_file() and (tmp / ".keras" / "keras.json").is_file()
