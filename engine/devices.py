"""What this machine has: GPUs (through TensorFlow, imported when asked, and the NVIDIA driver's own
list and version, without it), the CPU's model and feature flags (from /proc/cpuinfo)."""
from __future__ import annotations

import csv
import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys


def _tensorflow():
    """TensorFlow, imported without its C++ start-up logs (engine.cli.import_tensorflow_quietly): a
    command that asks only what the machine has (evaluate's report, gpucheck) must not print them."""
    from engine.cli import import_tensorflow_quietly
    import_tensorflow_quietly()
    import tensorflow as tf
    return tf


def gpus() -> list:
    return _tensorflow().config.list_physical_devices("GPU")


BF16_CAPABILITY = (8, 0)  # GPUs from Ampere on (A100, A10, L4, H100, ...) compute in bfloat16 natively


def compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) CUDA compute capability of each visible GPU."""
    tf = _tensorflow()
    out = []
    for gpu in gpus():
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        out.append(tuple(cc) if cc else (0, 0))
    return out


# NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions" (Linux x86_64, each
# minor version's GA row): the oldest driver that knows that CUDA's PTX ISA, so can JIT-compile a build's
# PTX for a GPU it carries no native code (SASS) for. A version missing here takes the nearest older one.
CUDA_DRIVERS = {(12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03", (12, 3): "545.23.06",
                (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03", (12, 8): "570.26",
                (12, 9): "575.51.03", (13, 0): "580.65.06"}
# The same notes, "Minimum Required Driver Version for CUDA Minor Version Compatibility": the oldest driver
# that runs a CUDA major version's native code at all (not newer PTX).
CUDA_MINOR_COMPAT_DRIVERS = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
GPU_PIP_HINT = "pip install -e '.[gpu]'"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


SMI_TIMEOUT = 10  # seconds nvidia-smi may take to answer (it answers in well under one where it works)
_SMI_ANSWERS: dict = {}  # (fields, PATH) -> rows: asked once per process


def _nvidia_smi(fields: str) -> list[list[str]] | None:
    """nvidia-smi's CSV rows for `fields`, one per GPU; [] where it is missing or hangs (said once), None
    where it refuses the query (an unknown field, or no driver to talk to). Asked once per process."""
    key = (fields, os.environ.get("PATH"))
    if key not in _SMI_ANSWERS:
        _SMI_ANSWERS[key] = _ask_nvidia_smi(fields)
    rows = _SMI_ANSWERS[key]
    return None if rows is None else [list(row) for row in rows]


def _ask_nvidia_smi(fields: str) -> list[list[str]] | None:
    try:
        p = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, errors="replace", timeout=SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        if not any(v == [] and k[1] == os.environ.get("PATH") for k, v in _SMI_ANSWERS.items()):
            print(f"warning: nvidia-smi did not answer in {SMI_TIMEOUT} s: the NVIDIA GPUs and their driver are "
                  f"not checked", file=sys.stderr)
        return []
    except (OSError, subprocess.SubprocessError):
        return []
    if p.returncode != 0:
        return None
    return [[c.strip() for c in row] for row in csv.reader(p.stdout.splitlines()) if row]


def _gpu_row(row: list[str]) -> bool:
    """A row nvidia-smi prints for a GPU: a name and a driver version (not a message such as "Failed to
    initialize NVML: ...", which it may print with exit code 0)."""
    return len(row) >= 2 and bool(row[0]) and re.fullmatch(r"\d+\.\d+(\.\d+)*", row[1]) is not None


def nvidia_gpus() -> list[dict]:
    """The GPUs the NVIDIA driver lists, without TensorFlow: [{"name", "driver", "compute_capability"}]
    (the driver version as a string, the capability as (major, minor) or None where the driver is too old
    to say). From nvidia-smi, else /proc/driver/nvidia (no capability there); empty without the driver."""
    rows = _nvidia_smi("name,driver_version,compute_cap")
    if rows is None:  # drivers before R510 have no compute_cap field
        rows = [row + [""] for row in _nvidia_smi("name,driver_version") or []]
    rows = [row for row in rows if _gpu_row(row)]
    out = [{"name": name, "driver": driver, "compute_capability": _version(cc)[:2] if _version(cc) else None}
           for name, driver, cc, *_ in (row + ["", ""] for row in rows)]
    if out:
        return out
    driver = ""
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", f.read())
            driver = m.group(1) if m else ""
    except OSError:
        pass
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(info) as f:
                out += [{"name": line.split(":", 1)[1].strip(), "driver": driver, "compute_capability": None}
                        for line in f if line.startswith("Model:")]
        except OSError:
            pass
    return out


def nvidia_gpu_indices() -> list[str]:
    """The driver's index of each GPU (CUDA_VISIBLE_DEVICES names), without TensorFlow; empty without it."""
    return [row[0] for row in _nvidia_smi("index") or [] if row and row[0].isdigit()]


def nvidia_gpu_models() -> list[str]:
    """The NVIDIA driver's model name of each GPU, without starting TensorFlow's runtime; empty without
    the driver."""
    return [g["name"] for g in nvidia_gpus()]


def tensorflow_build() -> dict:
    """The installed TensorFlow's build info (tf.sysconfig.get_build_info(): cuda_version,
    cuda_compute_capabilities, ...), read without importing TensorFlow where it is not loaded yet;
    empty where TensorFlow or the file is missing."""
    if "tensorflow" in sys.modules:
        return dict(sys.modules["tensorflow"].sysconfig.get_build_info())
    try:
        spec = importlib.util.find_spec("tensorflow")
        path = os.path.join(os.path.dirname(spec.origin), "python", "platform", "build_info.py")
        module_spec = importlib.util.spec_from_file_location("_engine_tf_build_info", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return dict(module.build_info)
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError):
        return {}


def cuda_driver_api_version() -> tuple[int, int] | None:
    """The CUDA version the loaded user-mode driver (libcuda) supports, (12, 5) say: in a container with
    NVIDIA's forward-compatibility libraries it is newer than the kernel driver nvidia-smi reports. None
    without libcuda."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return version.value // 1000, version.value % 1000 // 10


def _needs_ptx(capability: tuple[int, int], build_targets: list[str]) -> bool:
    """Whether a GPU runs the build's PTX, JIT-compiled by its driver: no sm_XY (native code) of its major
    version and a minor version no newer than its own. sm_89 runs on 8.9 only; sm_80 on 8.x."""
    for target in build_targets:
        m = re.fullmatch(r"sm_(\d+)(\d)[a-z]?", target)
        if m and int(m.group(1)) == capability[0] and int(m.group(2)) <= capability[1]:
            return False
    return True


def _table(table: dict, key):
    older = [k for k in table if k <= key]
    return table[max(older)] if older else None


def _driver_and_cuda(gpus: list[dict], build: dict):
    cuda = _version(build.get("cuda_version", ""))[:2]
    drivers = [g["driver"] for g in gpus if g.get("driver")]
    return (min(drivers, key=_version) if drivers else None), (cuda if len(cuda) == 2 else None)


def driver_too_old(gpus: list[dict], build: dict, api_version: tuple[int, int] | None = None) -> str | None:
    """Why the NVIDIA driver cannot run this TensorFlow's CUDA at all (older than the CUDA major version's
    minimum), or None. `api_version`: the CUDA version the loaded libcuda supports (cuda_driver_api_version;
    with forward compatibility it is newer than the driver's own)."""
    driver, cuda = _driver_and_cuda(gpus, build)
    needed = _table(CUDA_MINOR_COMPAT_DRIVERS, cuda[0]) if driver and cuda else None
    if not needed or _version(driver) >= _version(needed) or (api_version and api_version >= cuda):
        return None
    return f"TensorFlow's CUDA {cuda[0]}.{cuda[1]} needs NVIDIA driver {needed} or newer, this machine has {driver}"


def ptx_driver_too_old(gpus: list[dict], build: dict, api_version: tuple[int, int] | None = None) -> str | None:
    """Why a GPU cannot run this TensorFlow's kernels, or None: it gets only the build's PTX (no native code
    for its architecture: H100/H200 on TensorFlow 2.21, whose sm_90 code is CUDA 12.5 PTX), and the driver
    is older than the one that CUDA version needs to JIT-compile it. `api_version` as for driver_too_old."""
    driver, cuda = _driver_and_cuda(gpus, build)
    needed = _table(CUDA_DRIVERS, cuda) if driver and cuda else None
    if not needed or _version(driver) >= _version(needed) or (api_version and api_version >= cuda):
        return None
    targets = build.get("cuda_compute_capabilities", [])
    jit = [g for g in gpus if g.get("compute_capability") and _needs_ptx(g["compute_capability"], targets)]
    if not jit:
        return None
    cc = ".".join(map(str, jit[0]["compute_capability"]))
    return (f"{jit[0]['name']} (compute capability {cc}) runs TensorFlow's CUDA {cuda[0]}.{cuda[1]} kernels as "
            f"PTX, which needs NVIDIA driver {needed} or newer; this machine has {driver}: upgrade the driver")


def driver_summary() -> str | None:
    """One line: the NVIDIA driver's version and GPUs, and the CUDA version TensorFlow was built for; None
    without the driver."""
    found = nvidia_gpus()
    if not found:
        return None
    models = ", ".join(f"{g['name']}" + (f" (compute capability {'.'.join(map(str, g['compute_capability']))})"
                                         if g["compute_capability"] else "") for g in found)
    cuda = tensorflow_build().get("cuda_version")
    return f"NVIDIA driver {found[0]['driver'] or 'of unknown version'}: {models}" + (
        f"; TensorFlow built for CUDA {cuda}" if cuda else "; TensorFlow built without CUDA")


def gpus_hidden() -> bool:
    """CUDA_VISIBLE_DEVICES set to none ("" or -1): the user asked for no GPU."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return listed is not None and not [d for d in listed.split(",") if d.strip() and d.strip() != "-1"]


def gpu_setup_problems() -> list[str]:
    """One line for each reason the GPUs the NVIDIA driver lists will not work with this TensorFlow (whose
    own logs would say so, but the engine keeps them quiet): a driver too old for the GPU's PTX, or
    TensorFlow cannot use the GPU at all (a driver too old for its CUDA, or TensorFlow installed without
    CUDA: no [gpu] extra) and will run on the CPU. Empty without an NVIDIA GPU, or with CUDA_VISIBLE_DEVICES
    hiding them. Imports TensorFlow only where the driver lists GPUs."""
    found = nvidia_gpus()
    if not found or gpus_hidden():
        return []
    ptx = ptx_driver_too_old(found, tensorflow_build(), cuda_driver_api_version())
    unusable = unusable_gpu(found)
    return ([ptx] if ptx else []) + ([f"NVIDIA GPU found ({unusable[0]}) but TensorFlow cannot use it: "
                                      f"{unusable[1]}; running on the CPU"] if unusable else [])


def unusable_gpu(found: list[dict] | None = None) -> tuple[str, str] | None:
    """(model, why) where the NVIDIA driver lists a GPU (`found`: nvidia_gpus()) but TensorFlow lists none:
    a driver too old for its CUDA, or TensorFlow installed without CUDA (no [gpu] extra). None otherwise,
    and where CUDA_VISIBLE_DEVICES hides the GPUs."""
    found = nvidia_gpus() if found is None else found
    if not found or gpus_hidden() or gpus():
        return None
    why = driver_too_old(found, tensorflow_build(), cuda_driver_api_version())
    if not why and not tensorflow_cuda_missing():
        why = ("its CUDA libraries are installed but did not load (TF_CPP_MIN_LOG_LEVEL=0 ENGINE_TF_VERBOSE=1 "
               "shows TensorFlow's reason)")
    return found[0]["name"], why or GPU_PIP_HINT


def tensorflow_cuda_missing() -> list[str]:
    """The pip packages of TensorFlow's CUDA libraries (its [and-cuda] extra, which [gpu] installs) that are
    not installed."""
    missing = []
    try:
        requires = importlib.metadata.requires("tensorflow") or []
    except importlib.metadata.PackageNotFoundError:
        return ["tensorflow"]
    for r in requires:
        if re.search(r"extra\s*==\s*[\"']and-cuda[\"']", r):
            name = re.match(r"[A-Za-z0-9_.-]+", r).group(0)
            try:
                importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(name)
    return missing


_said: set = set()


def warn_gpu_setup() -> list[str]:
    """Print gpu_setup_problems() on stderr as warnings, each once per process; returns them."""
    problems = gpu_setup_problems()
    for p in problems:
        if p not in _said:
            _said.add(p)
            print(f"warning: {p}", file=sys.stderr)
    return problems


def allow_memory_growth() -> None:
    """TensorFlow takes nearly all of a GPU's memory when it first uses it; a process that also
    builds or runs TensorRT engines (export trt, evaluate) must leave it the rest. Call before
    TensorFlow touches the GPUs (it cannot be changed after); a no-op without GPUs."""
    tf = _tensorflow()
    for gpu in gpus():
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: too late to change, nothing else to do
            pass


def _cpuinfo(key: str) -> str:
    """The first `key: value` line's value in /proc/cpuinfo ("" where there is none); the key whole ("model"
    is not "model name")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, colon, value = line.partition(":")
                if colon and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing)."""
    return set(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name ("" where /proc/cpuinfo does not say)."""
    return _cpuinfo("model name")


def cpu_family_model() -> tuple[str, str]:
    """The CPU's family and model numbers, which tell its generation (AMD's family 25 model 17: Zen 4);
    "" where /proc/cpuinfo does not say."""
    return _cpuinfo("cpu family"), _cpuinfo("model")


# The CPU feature rules: each a named predicate of the /proc/cpuinfo flags (`flags`: the flags of another
# CPU; None: this one's), so that every rule reads the flags in one place.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")                   # bfloat16 arithmetic in hardware
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")     # u8 x s8 dot products into int32
# Every flag a CPU rule of the engine reads or a speed depends on, in one order: what the speed choice's
# cache key and the benchmarks' records name (cpu_features).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile", "fma",
               "avx_vnni")


def _flags(flags) -> set:
    return cpu_flags() if flags is None else set(flags)


def cpu_features(flags=None) -> list[str]:
    """The SPEED_FLAGS the CPU has, in SPEED_FLAGS' order."""
    have = _flags(flags)
    return [f for f in SPEED_FLAGS if f in have]


def cpu_has_amx(flags=None) -> bool:
    """AMX tiles for bfloat16 (Intel Xeon from Sapphire Rapids on)."""
    return "amx_bf16" in _flags(flags)


def fast_bf16(flags=None) -> bool:
    """bfloat16 arithmetic in hardware: AMX tiles or AVX-512 BF16 (elsewhere it is emulated)."""
    return bool(set(BF16_FLAGS) & _flags(flags))


def bf16_without_amx(flags=None) -> bool:
    """bfloat16 in AVX-512 instructions but not in AMX tiles: where oneDNN computes a bfloat16
    convolution's weight gradient with its older, slower kernel (engine.models.cpu_step)."""
    have = _flags(flags)
    return "avx512_bf16" in have and "amx_bf16" not in have


def int8_dot(flags=None) -> bool:
    """int8 dot products without int16 saturation: VNNI (AVX-512 or AVX) or AMX int8 tiles."""
    return bool(set(INT8_DOT_FLAGS) & _flags(flags))


def device_name() -> str:
    """What a run trained on, for metrics.json and bench reports: '1x NVIDIA A100...' or the CPU model."""
    found = gpus()
    if found:
        details = _tensorflow().config.experimental.get_device_details(found[0])
        return f"{len(found)}x {details.get('device_name', 'GPU')}"
    return f"{_cpuinfo('model name') or 'CPU'}, {os.cpu_count()} cores"


TF32_ENV = "NVIDIA_TF32_OVERRIDE"  # NVIDIA's switch: 0 keeps cuBLAS and cuDNN from TF32


def tf32_allowed() -> bool:
    """False under NVIDIA_TF32_OVERRIDE=0. On GPUs of compute capability >= 8.0, float32 convolutions
    and matrix products run in TF32 (10-bit mantissas) by default, in TensorFlow and in TensorRT; under
    that variable the engine keeps TensorFlow (XLA's own kernels too: tf32_override) and TensorRT's
    builder (engine.export.trt) from TF32 as well, so that float32 is float32."""
    return os.environ.get(TF32_ENV) != "0"


def tf32_override() -> bool:
    """Apply NVIDIA_TF32_OVERRIDE=0 to TensorFlow (before it runs anything); returns whether
    TensorFlow may use TF32."""
    tf = _tensorflow()
    if not tf32_allowed():
        tf.config.experimental.enable_tensor_float_32_execution(False)
    return tf.config.experimental.tensor_float_32_execution_enabled()
