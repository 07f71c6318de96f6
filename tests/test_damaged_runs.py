"""A run folder damaged after training, and exports outside the contract: export, predict and evaluate
say in one line which file is damaged or what the engine expects, never a traceback."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, png_bytes, run_cli, run_in_process
from tests.test_training import config, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("damaged") / "run"
    train(config(out, "digits32", limit=512).replace("data", limit_test=0))
    return out


@pytest.fixture
def copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "r")
    (tmp_path / "x.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    return tmp_path / "r"


def _best(run, ending):
    best = run / "checkpoints" / "best"
    return next(best / f for f in os.listdir(best) if ending in f)


def _succeeds(capsys, module, *args):
    """`module.main(args)` in this process, expected to return normally: (stdout, stderr)."""
    import importlib
    mod = importlib.import_module(module)
    main = getattr(mod, "main", None) or importlib.import_module(module + ".cli").main
    capsys.readouterr()
    main([str(a) for a in args])
    out = capsys.readouterr()
    return out.out, out.err


def _commands(r):
    return [("engine.export", ["onnx", r, "--out", r.parent / "m.onnx"]),
            ("engine.predict", [r.parent / "x.png", "--model", r]),
            ("engine.evaluate", [r, "--data", "digits32", "--out", r.parent / "e.json"])]


def test_a_truncated_checkpoint_is_one_line_naming_its_data_file(copy, capsys):
    data = _best(copy, ".data-")
    os.truncate(data, 1000)
    for module, args in _commands(copy):
        p = run_in_process(capsys, module, *args)
        assert_one_line_error(p, f"its data file {data} is unreadable or truncated")
    assert not (copy.parent / "m.onnx").exists() and not (copy.parent / "e.json").exists()


def test_a_truncated_checkpoint_index_is_one_line_naming_it(copy, capsys):
    index = _best(copy, ".index")
    os.truncate(index, 10)
    p = run_in_process(capsys, "engine.export", "onnx", copy, "--out", copy.parent / "m.onnx")
    assert_one_line_error(p, f"its index file {index} is unreadable or truncated")


@pytest.mark.parametrize("names,fragments", [
    (["a", "b"], ["its model has 10 outputs but classes.json names 2 classes"]),
    (5, ["classes.json is damaged: expected a JSON list of class names"]),
    ([], ["classes.json is damaged"]),
])
def test_class_names_that_do_not_fit_the_checkpoint_are_one_line(copy, capsys, names, fragments):
    (copy / "classes.json").write_text(json.dumps(names))
    p = run_in_process(capsys, "engine.export", "onnx", copy, "--out", copy.parent / "m.onnx")
    assert_one_line_error(p, *fragments)


def test_a_damaged_checkpoint_state_file_falls_back_to_the_checkpoint_beside_it(copy, capsys):
    state = copy / "checkpoints" / "best" / "checkpoint"
    state.write_text("garbage{")
    _, err = _succeeds(capsys, "engine.export", "onnx", copy, "--out", copy.parent / "m.onnx")
    ckpt = str(_best(copy, ".index")).removesuffix(".index")
    assert err.strip().splitlines() == [
        f"warning: the checkpoint state file {state} is unreadable; using {ckpt}, the newest checkpoint beside it"]
    assert (copy.parent / "m.onnx").exists()


def test_another_models_config_is_one_line_without_tensorflow_warnings(copy):
    """In a fresh process: TensorFlow warns about a failed restore's unread values when they are
    collected, which is at exit."""
    cfg = json.loads((copy / "config.json").read_text())
    cfg["model"]["model"] = "resnet9"
    (copy / "config.json").write_text(json.dumps(cfg))
    p = run_cli("engine", "export", "onnx", copy, "--out", copy.parent / "m.onnx")
    assert_one_line_error(p, "its weights do not fit the model config.json describes (resnet9:",
                          "config.json does not belong to this run")


# Off-contract ONNX files: a Cast -> Reshape -> MatMul graph with the given input and output.
def _onnx(path, in_name="images", in_type="UINT8", in_shape=("N", 32, 32, 3), out_name="logits", meta=None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    n = int(np.prod(in_shape[1:]))
    nodes = [helper.make_node("Cast", [in_name], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["f", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], [out_name])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(in_name, getattr(TensorProto, in_type), list(in_shape))],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(np.zeros((n, 10), np.float32), "W"),
                           numpy_helper.from_array(np.array([-1, n], np.int64), "shape")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("kw,fragments", [
    (dict(in_type="FLOAT", in_shape=("N", 3, 32, 32)), ["its inputs are 'images' float ['N', 3, 32, 32]"]),
    (dict(in_shape=("N", 64, 64, 2)), ["its inputs are 'images' uint8 ['N', 64, 64, 2]"]),  # C is 1 or 3
    (dict(in_name="x"), ["its inputs are 'x' uint8"]),
    (dict(out_name="probs"), ["its outputs are 'probs' float"]),
    (dict(meta={"class_names": json.dumps(["a", "b", "c"])}), ["class_names metadata should be a JSON list of 10 names",
                                                               "it is 3 names"]),
    (dict(meta={"class_names": "not json ["}), ["class_names metadata", "not a JSON list"]),
    (dict(meta={"class_names": "7"}), ["class_names metadata", "not a JSON list"]),
])
@pytest.mark.parametrize("command", ["predict", "evaluate", "evaluate --against", "predict openvino"])
def test_an_onnx_file_outside_the_contract_is_one_line(tmp_path, capsys, kw, fragments, command):
    path = _onnx(tmp_path / "m.onnx", **kw)
    good = _onnx(tmp_path / "good.onnx")
    (tmp_path / "x.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    if command == "predict":
        p = run_in_process(capsys, "engine.predict", tmp_path / "x.png", "--model", path)
    elif command == "predict openvino":
        pytest.importorskip("openvino")
        if "in_name" in kw or "out_name" in kw:
            pytest.skip("OpenVINO feeds inputs and reads outputs by position, not by name")
        from engine.errors import EngineError
        from engine.runtime import open_predictor
        with pytest.raises(EngineError, match="class_names metadata" if "meta" in kw else "export contract"):
            open_predictor("openvino", str(path))
        return
    elif command == "evaluate":
        p = run_in_process(capsys, "engine.evaluate", path, "--data", "digits32", "--out", tmp_path / "e.json")
    else:
        p = run_in_process(capsys, "engine.evaluate", good, "--against", path, "--data", "digits32",
                           "--out", tmp_path / "e.json")
    assert_one_line_error(p, str(path), *fragments)
    assert "expects" not in p.stderr or "export contract" in p.stderr


def test_our_own_onnx_export_keeps_the_contract_checks(copy, capsys, tmp_path):
    _succeeds(capsys, "engine.export", "onnx", copy, "--out", tmp_path / "m.onnx")
    out, _ = _succeeds(capsys, "engine.predict", tmp_path / "x.png", "--model", tmp_path / "m.onnx")
    assert out.startswith(str(tmp_path / "x.png"))


@pytest.fixture
def full_disk(tmp_path):
    """A 3 MB tmpfs with 8 KB free (needs root to mount)."""
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(full)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        st = os.statvfs(full)
        (full / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 8 * 1024))
        yield full
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


@pytest.mark.parametrize("fmt,name", [("onnx", "m.onnx"), ("savedmodel", "m.savedmodel"), ("openvino", "m.xml")])
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(run, full_disk, capsys, fmt, name):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    out = full_disk / name
    p = run_in_process(capsys, "engine.export", fmt, run, "--out", out)
    assert_one_line_error(p, f"no space left on device writing {out}")
    assert sorted(os.listdir(full_disk)) == ["filler"]
