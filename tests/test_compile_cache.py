"""--compile-cache (the default): XLA's compiled train steps are kept under the cache directory, a second
run loads them instead of compiling (its entries are not rewritten), and the numbers it computes are
the same, bit for bit, as those of the run that compiled them."""
import json
import os

from engine.train import compile_cache
from tests.conftest import run_cli
from tests.test_faults import assert_same_checkpoint

TINY_XLA = ["--model", "tiny", "--data", "digits", "--batch-size", 64, "--epochs", 1, "--xla", "--no-amp",
            "--quiet"]


def _entries(path) -> dict:
    """file name -> (inode, mtime in ns) of each stored compiled function."""
    stats = {f: os.stat(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".pb")}
    return {f: (st.st_ino, st.st_mtime_ns) for f, st in stats.items()}


def test_a_second_run_loads_the_compiled_step_and_computes_the_same(tmp_path):
    env = {"ENGINE_CACHE": str(tmp_path / "cache"), "TF_XLA_FLAGS": ""}
    p = run_cli("engine", "train", *TINY_XLA, "--out", tmp_path / "a", env=env)
    assert p.returncode == 0, p.stderr
    cache = json.loads((tmp_path / "a" / "metrics.json").read_text())["compile_cache"]
    where = cache["directory"]
    assert where.startswith(str(tmp_path / "cache" / "xla")) and f"XLA compile cache: {where} (0 " in p.stdout
    first = _entries(where)
    assert len(first) >= 2 and cache["entries"] == len(first)  # the train step and the evaluation

    p = run_cli("engine", "train", *TINY_XLA, "--out", tmp_path / "b", env=env)
    assert p.returncode == 0, p.stderr
    assert f"({len(first)} compiled functions stored)" in p.stdout
    assert _entries(where) == first  # loaded, not compiled and written again
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")  # the loaded step computes what the compiled one did


def test_the_directory_depends_on_the_cpu_and_tensorflow(monkeypatch):
    import tensorflow as tf
    here = compile_cache.machine_key()
    assert here.startswith(tf.__version__ + "-")
    monkeypatch.setattr(compile_cache.devices, "cpu_flags", lambda: {"avx2", "fma", "amx_bf16"})
    assert compile_cache.machine_key() != here  # code compiled for one CPU is never loaded on another
    cpu_only = compile_cache.machine_key()
    monkeypatch.setattr(compile_cache.devices, "nvidia_gpu_models", lambda: ["NVIDIA A100-SXM4-40GB"])
    assert compile_cache.machine_key() != cpu_only  # nor code for one GPU on another
    monkeypatch.setattr(tf, "__version__", "9.99.0")
    assert compile_cache.machine_key().startswith("9.99.0-")


def test_a_given_tf_xla_flags_directory_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_persistent_cache_directory=/mine --tf_xla_auto_jit=0")
    path, said = compile_cache.enable(str(tmp_path))
    assert path == "/mine" and said == "XLA compile cache: /mine (from TF_XLA_FLAGS)"
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_persistent_cache_directory=/mine --tf_xla_auto_jit=0"
    assert not (tmp_path / "xla").exists()


def test_a_cache_path_that_is_a_file_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    (tmp_path / "file").write_text("")
    path, said = compile_cache.enable(str(tmp_path / "file"))
    assert path is None and said.startswith("XLA compile cache off: cannot write")
    assert os.environ["TF_XLA_FLAGS"] == ""
