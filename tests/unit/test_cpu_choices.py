"""Choices made from the CPU's feature flags (no TensorFlow): the feature rules of engine.devices, the
only module that names a feature flag, and what reads them: onnxruntime's int8 weight range and
OpenVINO's inference precision."""
import pathlib
import re

import pytest

from engine import devices
from engine.errors import EngineError
from engine.export import cpu_int8_weights
from engine.runtime import openvino_precision

AVX2 = {"sse4_2", "avx", "avx2", "fma"}                         # e.g. AMD EPYC (Zen 3)
AVX512_VNNI = AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}      # e.g. Xeon (Cascade Lake)
AVX512_BF16 = AVX512_VNNI | {"avx512_bf16"}                      # e.g. Xeon (Cooper Lake), AMD EPYC (Zen 4)
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}         # e.g. Xeon (Sapphire Rapids)


@pytest.mark.parametrize("flags,weights", [(AVX2, "7-bit"), (AVX2 | {"avx_vnni"}, "8-bit"),
                                           (AVX512_VNNI, "8-bit"), (AMX, "8-bit"), (set(), "7-bit")])
def test_onnxruntime_int8_weights_are_full_range_only_with_vnni_or_amx(flags, weights):
    assert cpu_int8_weights(flags) == weights


@pytest.mark.parametrize("flags,precision", [(AVX2, "f32"), (AVX512_VNNI, "f32"), (AVX512_BF16, "bf16"),
                                             (AMX, "bf16")])
def test_openvino_runs_bf16_where_the_cpu_computes_it(flags, precision):
    assert openvino_precision("auto", flags) == precision
    assert openvino_precision("f32", AMX) == "f32" and openvino_precision("bf16", AVX2) == "bf16"  # as asked
    with pytest.raises(EngineError, match="unknown OpenVINO precision 'fp8'"):
        openvino_precision("fp8", flags)


@pytest.mark.parametrize("flags,fast_bf16,without_amx,int8_dot", [
    (AVX2, False, False, False), (AVX2 | {"avx_vnni"}, False, False, True), (AVX512_VNNI, False, False, True),
    (AVX512_BF16, True, True, True), (AMX, True, False, True), (set(), False, False, False)])
def test_the_cpu_feature_rules(flags, fast_bf16, without_amx, int8_dot):
    assert devices.fast_bf16(flags) == fast_bf16            # bfloat16 in hardware (else emulated)
    assert devices.bf16_without_amx(flags) == without_amx   # the matmul weight gradient's CPUs
    assert devices.int8_dot(flags) == int8_dot              # full-range int8 weights for onnxruntime
    assert devices.cpu_has_amx(flags) == ("amx_bf16" in flags)
    assert devices.cpu_features(flags) == [f for f in devices.SPEED_FLAGS if f in flags]


def test_the_speed_choice_cache_key_keeps_its_flags_and_order():
    """The speed choice's cache key names the CPU's features in SPEED_FLAGS' order: an entry measured
    before the flags moved into engine.devices keeps its key (avx_vnni, added last, is in no old key)."""
    old = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile", "fma")
    assert devices.SPEED_FLAGS[:len(old)] == old
    assert devices.cpu_features(AMX) == [f for f in old if f in AMX]


ROOT = pathlib.Path(__file__).resolve().parents[2]
FLAG = re.compile(r"[\"'](amx_[a-z0-9]+|avx512_?[a-z0-9]+|avx_vnni|avx2|fma)[\"']")


def test_no_module_but_engine_devices_names_a_cpu_feature_flag():
    """A CPU rule is written once, as a predicate of engine.devices: the engine and the benchmarks
    call it rather than test a flag themselves."""
    sources = [*(ROOT / "engine").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    named = {str(p.relative_to(ROOT)): FLAG.findall(p.read_text()) for p in sources
             if p != ROOT / "engine" / "devices.py"}
    assert {p: f for p, f in named.items() if f} == {}
