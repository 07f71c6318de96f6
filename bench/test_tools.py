"""Each bench tool in its quick mode, in this process, so that CI notices when a rename in the engine
breaks one: it runs, and its output says the command, the engine commit and the machine. The figures
mean nothing here."""
import json

import pytest

from bench import ab, deploy_forms, onednn_log, ort_profile
from bench.micro import gelu, weight_gradient


@pytest.fixture(autouse=True)
def _quiet_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_ab_undoes_a_rewrite_in_arm_b_and_records_what_it_measured(tmp_path):
    result = ab.main(["--quick", "--undo", "fused-bn", "--out", "ab.json"])
    assert json.loads((tmp_path / "ab.json").read_text()) == result
    assert result["command"].endswith("-m bench.ab --quick --undo fused-bn --out ab.json")
    assert result["machine"]["engine_commit"] and result["machine"]["device"]
    a, b = result["rows"]
    assert (a["arm"], a["layers_undone"], b["arm"], b["step"]) == ("A", 0, "B", "undo fused-bn")
    assert "fused-bn" in a["rewrites"] and b["layers_undone"] > 0  # the tiny model's BatchNorms


def test_ab_refuses_an_unknown_rewrite(capsys):
    with pytest.raises(SystemExit):
        ab.main(["--quick", "--undo", "fused-gelu"])
    assert "choose from fused-bn, compiled-gelu, matmul-dw" in capsys.readouterr().err


@pytest.mark.parametrize("tool", [gelu, weight_gradient, ort_profile])
def test_micro_benchmarks_and_the_onnx_runtime_profile_run(tool, capsys):
    assert tool.main(["--quick"])
    out = capsys.readouterr().out
    assert "# command: " in out and f"-m {tool.__name__} --quick" in out and "# engine commit: " in out


def test_onednn_log_sums_primitives_by_kind(tmp_path, capsys):
    line = ("onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,backward_weights,"
            "src:bf16::blocked:acdb::f0 wei:bf16::blocked:abcd::f0 dst:bf16::blocked:acdb::f0,,alg:convolution_direct,"
            "mb1024_ic256oc256_ih7oh7kh3sh1dh0ph1_iw7ow7kw3sw1dw0pw1,{}\n")
    log = tmp_path / "step.log"
    log.write_text("unrelated line\n" + line.format(150.0) + line.format(146.0)
                   + "onednn_verbose,v1,primitive,exec,cpu,reorder,simple:any,undef,src:f32 dst:bf16,,,1x2,4.0\n")
    out = onednn_log.main([str(log)])
    assert out[0] == "total 300 ms: convolution 98.7%, reorder 1.3%"
    assert "n=   2" in out[1] and "backward_weights" in out[1] and " 400 GFLOP/s" in out[1]


def test_deploy_forms_evaluates_a_form_against_its_run(tmp_path):
    from engine.commands import main as engine
    assert engine(["train", "--model", "tiny", "--data", "digits", "--epochs", "1", "--no-amp", "--no-xla",
                   "--quiet", "--out", "run"]) in (0, None)
    reports = deploy_forms.main(["run", "forms", "--quick", "--data", "digits"])
    assert list(reports) == ["onnx-fp32"]
    report = json.loads((tmp_path / reports["onnx-fp32"]).read_text())
    assert report["images"] == 64 and report["against"]  # the evaluate command's report, with agreement
    assert json.loads((tmp_path / "forms" / "command.json").read_text())["machine"]["engine_commit"]
    assert not (tmp_path / "forms" / "exports").exists()
