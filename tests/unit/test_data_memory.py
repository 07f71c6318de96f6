"""The decoded-data memory limit: half the memory available, or what $ENGINE_DATA_MEMORY says (bytes with an
optional K/M/G/T, or none); a bad value and a data set over the limit are one line naming the variable."""
import numpy as np
import pytest

from engine.data import mnist, splits
from engine.errors import EngineError


@pytest.fixture(autouse=True)
def little_memory(monkeypatch):
    monkeypatch.delenv("ENGINE_DATA_MEMORY", raising=False)
    monkeypatch.setattr(splits, "available_memory", lambda: 2 << 20)  # half: 1 MiB


@pytest.mark.parametrize("value,limit", [(None, 1 << 20), ("5000000", 5_000_000), ("500M", 500 << 20),
                                         ("16G", 16 << 30), ("2gib", 2 << 30), ("64 KB", 64 << 10), ("1T", 1 << 40),
                                         ("none", splits.NO_LIMIT), (" None ", splits.NO_LIMIT)])
def test_the_limit_is_half_the_available_memory_unless_engine_data_memory_says(monkeypatch, value, limit):
    if value is not None:
        monkeypatch.setenv("ENGINE_DATA_MEMORY", value)
    assert splits.memory_limit() == limit


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1.5G", "12X", "G"])
def test_a_bad_engine_data_memory_is_one_line(monkeypatch, value):
    monkeypatch.setenv("ENGINE_DATA_MEMORY", value)
    with pytest.raises(EngineError) as e:
        splits.memory_limit()
    assert str(e.value).startswith(f"ENGINE_DATA_MEMORY={value!r}: expected a size in bytes") and "\n" not in str(e.value)


def test_over_the_limit_the_error_names_the_variable_and_where_the_limit_came_from(monkeypatch):
    with pytest.raises(EngineError, match=r"over the limit of 1\.0 MiB \(half the memory available now\); .* set "
                                          r"ENGINE_DATA_MEMORY to a size in bytes \(e\.g\. 16G\) or none"):
        splits.check_fits(3 << 20, "x.npz")
    monkeypatch.setenv("ENGINE_DATA_MEMORY", "2M")
    with pytest.raises(EngineError, match=r"needs 3\.0 MiB .* over the limit of 2\.0 MiB \(ENGINE_DATA_MEMORY\)"):
        splits.check_fits(3 << 20, "x.npz")
    monkeypatch.setenv("ENGINE_DATA_MEMORY", "4M")
    splits.check_fits(3 << 20, "x.npz")  # raised by the variable: fits


def test_engine_data_memory_none_loads_a_data_set_over_half_the_available_memory(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1500, 28, 28), dtype=np.uint8)  # 1.1 MiB of train images + test: over 1 MiB
    y = (np.arange(1500) % 10).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:100], y_test=y[:100])
    with pytest.raises(EngineError, match=r"mnist\.npz needs 1\.2 MiB .* ENGINE_DATA_MEMORY"):
        mnist.load_npz(str(tmp_path / "mnist.npz"))
    monkeypatch.setenv("ENGINE_DATA_MEMORY", "none")
    assert mnist.load_npz(str(tmp_path / "mnist.npz")).x_train.shape == (1500, 28, 28, 1)
