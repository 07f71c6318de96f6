"""Deploy choices made from the CPU's feature flags (no TensorFlow): onnxruntime's int8 weight range
and OpenVINO's inference precision."""
import pytest

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
