"""Every bad input the engine's CLIs meet -- train, export, evaluate, probe, launch -- through their real
`main` (in process: the same code path without seconds of start-up per case). For each: a non-zero
exit, one line on stderr naming the problem, no traceback, and no file in the case's folder created,
changed or removed. README "Errors" lists them."""
import io
import os
import pickle
import tarfile

import pytest

from tests.conftest import assert_one_line_error, make_images, make_tar, png_bytes, run_in_process
from tests.test_training import config, train


def _bad_tree(t, name, payload):
    good = png_bytes(make_images(1, 0)[0])
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = t / "tree" / split / c
            d.mkdir(parents=True, exist_ok=True)
            (d / "0.png").write_bytes(good)
    (t / "tree" / name).write_bytes(payload)
    return t / "tree"


def _evil_tar(t):
    path = t / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("../../escape.png")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _evil_pickle(t):
    return make_tar(t / "cifar-10-python.tar.gz", [("cifar-10-batches-py/data_batch_1",
                                                    pickle.dumps({b"data": _Evil()}))])


def _file(t, name, text="mine"):
    (t / name).write_text(text)
    return t / name


def _keras_file(t):
    import keras
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10)])
    model.save(t / "m.keras")
    return t / "m.keras"


def _no_tensorrt():
    try:
        import tensorrt  # noqa: F401
        return False
    except ImportError:
        return True


# case: (module, args(t, run, data) -> list, fragments). `run` is a real tiny run directory, `data` the
# shared CIFAR-10 archive. Train cases get --model tiny, --data, --limit and --out unless they set them.
CASES = {
    # train
    "train: missing data": ("engine.train", lambda t, r, d: ["--data", t / "nowhere"], ["data not found", "nowhere"]),
    "train: empty folder": ("engine.train", lambda t, r, d: ["--data", (t / "e").mkdir() or t / "e"],
                            ["no training images"]),
    "train: corrupt jpeg": ("engine.train", lambda t, r, d: [
        "--data", _bad_tree(t, "train/a/bad.jpg", b"\xff\xd8\xff\xe0garbage")], ["cannot decode image", "bad.jpg"]),
    "train: wrong shape": ("engine.train", lambda t, r, d: [
        "--data", _bad_tree(t, "test/b/big.png", png_bytes(make_images(1, 0)[0][:, :31]))], ["big.png is 32x31 but the first image"]),
    "train: hostile tar": ("engine.train", lambda t, r, d: ["--data", _evil_tar(t)],
                           ["refusing tar member", "leaves the archive"]),
    "train: hostile pickle": ("engine.train", lambda t, r, d: ["--data", _evil_pickle(t)],
                              ["refusing pickle", "system"]),
    "train: unknown model": ("engine.train", lambda t, r, d: ["--model", "vgg99"], ["unknown model 'vgg99'", "resnet9"]),
    "train: non-numeric": ("engine.train", lambda t, r, d: ["--epochs", "ten"], ["invalid number value: 'ten'"]),
    "train: negative": ("engine.train", lambda t, r, d: ["--batch-size", "-4"], ["--batch-size", "must be at least 1, got -4"]),
    "train: bad choice": ("engine.train", lambda t, r, d: ["--optimizer", "lion"], ["invalid choice: 'lion'"]),
    "train: unknown flag": ("engine.train", lambda t, r, d: ["--learning-rate", "0.1"], ["unrecognized arguments"]),
    "train: too small input": ("engine.train", lambda t, r, d: ["--upsample", "16"], ["smaller than the images (32x32)"]),
    "train: xla + deterministic": ("engine.train", lambda t, r, d: ["--xla", "--deterministic"], ["cannot be combined"]),
    "train: option of another model": ("engine.train", lambda t, r, d: ["--width", "2"],
                                       ["--width does not apply to model tiny"]),
    "train: unknown recipe": ("engine.train", lambda t, r, d: ["--recipe", "seed-alexnet"],
                              ["unknown recipe 'seed-alexnet'"]),
    "train: recipe + resume": ("engine.train", lambda t, r, d: ["--recipe", "seed-vgg16-frozen", "--resume"],
                               ["--recipe starts a new run"]),
    "train: bias lr + adam": ("engine.train", lambda t, r, d: ["--optimizer", "adam", "--bias-lr-scale", "8"],
                              ["--bias-lr-scale has no effect"]),
    "train: bad freeze layer": ("engine.train", lambda t, r, d: [
        "--model", "vgg16", "--weights", "none", "--freeze", "block9_pool"], ["vgg16 has no such layer"]),
    "train: missing weights file": ("engine.train", lambda t, r, d: ["--model", "vgg16", "--weights", t / "nope.h5"],
                                    ["no such file"]),
    "train: nothing to resume": ("engine.train", lambda t, r, d: ["--resume"], ["nothing to resume"]),
    "train: out is a file": ("engine.train", lambda t, r, d: ["--out", _file(t, "f")], ["is a file"]),
    "train: out holds other files": ("engine.train", lambda t, r, d: [
        "--out", _file(t, "f").parent], ["is not empty and holds no engine run"]),
    "train: unwritable out": ("engine.train", lambda t, r, d: ["--out", "/proc/engine-run"],
                              ["cannot write to --out /proc/engine-run"]),
    "train: zero batch": ("engine.train", lambda t, r, d: ["--batch-size", "0"], ["--batch-size", "at least 1"]),
    "train: multiworker without TF_CONFIG": ("engine.train", lambda t, r, d: ["--strategy", "multiworker"],
                                             ["needs TF_CONFIG"]),
    # export
    "export: not a run": ("engine.export", lambda t, r, d: ["onnx", t, "--out", t / "m.onnx"], ["not a run directory"]),
    "export: no such run, no --out": ("engine.export", lambda t, r, d: ["onnx", t / "nope"], ["nope does not exist"]),
    "export: missing out folder": ("engine.export", lambda t, r, d: ["savedmodel", r, "--out", t / "no" / "m"],
                                   ["folder of --out does not exist"]),
    "export: out exists": ("engine.export", lambda t, r, d: ["onnx", r, "--out", _file(t, "m.onnx")],
                           ["already exists", "--overwrite"]),
    "export: unknown format": ("engine.export", lambda t, r, d: ["tflite", r, "--out", t / "m"],
                               ["invalid choice: 'tflite'"]),
    "export: bad batch range": ("engine.export", lambda t, r, d: [
        "trt", r, "--out", t / "m.engine", "--min-batch", "8", "--max-batch", "4"], ["--min-batch"]),
    "export: bad calibration count": ("engine.export", lambda t, r, d: [
        "onnx", r, "--out", t / "m.onnx", "--precision", "int8", "--calib-images", "zero"], ["invalid int value"]),
    "export: .keras without --normalization": ("engine.export", lambda t, r, d: [
        "onnx", _keras_file(t), "--out", t / "m.onnx"], ["needs --normalization"]),
    "export: corrupt .keras": ("engine.export", lambda t, r, d: [
        "onnx", _file(t, "m.keras", "not a zip"), "--normalization", "unit", "--out", t / "m.onnx"],
        ["cannot load", "m.keras"]),
    "export: --normalization for a run": ("engine.export", lambda t, r, d: [
        "onnx", r, "--normalization", "unit", "--out", t / "m.onnx"], ["are for a .keras model"]),
    # evaluate
    "evaluate: missing model": ("engine.evaluate", lambda t, r, d: ["--backend", "onnx", "--model", t / "x.onnx"],
                                ["model not found"]),
    "evaluate: corrupt model": ("engine.evaluate", lambda t, r, d: [
        "--backend", "onnx", "--model", _file(t, "x.onnx", "not onnx"), "--data", d], ["x.onnx"]),
    "evaluate: bad --against": ("engine.evaluate", lambda t, r, d: ["--backend", "tf", "--model", r, "--against", "torch:x"],
                                ["--against torch:x: no such model", "[BACKEND:]PATH"]),
    "evaluate: no model": ("engine.evaluate", lambda t, r, d: ["--data", d], ["which model?"]),
    "evaluate: two different models": ("engine.evaluate", lambda t, r, d: [r, "--model", t], ["give the model once"]),
    "evaluate: path without a backend": ("engine.evaluate", lambda t, r, d: [_file(t, "m.tflite")],
                                         ["not a run directory, SavedModel folder, .onnx, OpenVINO .xml or .engine file"]),
    "evaluate: unknown backend": ("engine.evaluate", lambda t, r, d: ["--backend", "tflite", "--model", r],
                                  ["invalid choice: 'tflite'"]),
    # probe
    "probe: unknown class": ("engine.probe", lambda t, r, d: ["--data", "digits", "--classes", "3,x"],
                             ["--class-subset: no class 'x'"]),
    "probe: one class": ("engine.probe", lambda t, r, d: ["--data", "digits", "--class-subset", "3"], ["at least two"]),
    "probe: unknown backbone": ("engine.probe", lambda t, r, d: ["--data", "digits", "--backbone", "alexnet"],
                                ["--model 'alexnet'"]),
    "probe: too many folds": ("engine.probe", lambda t, r, d: ["--data", "digits", "--folds", "1000",
                                                               "--model", "pixels"], ["--folds 1000"]),
    # launch
    "launch: no workers": ("engine.launch", lambda t, r, d: ["--workers", "0"], ["--workers must be at least 1"]),
    "launch: its own --strategy": ("engine.launch", lambda t, r, d: ["--", "--strategy", "default"],
                                   ["sets --strategy multiworker itself"]),
    "launch: non-numeric workers": ("engine.launch", lambda t, r, d: ["--workers", "two"], ["invalid int value: 'two'"]),
}
if _no_tensorrt():
    CASES["export: trt without TensorRT"] = ("engine.export", lambda t, r, d: ["trt", r, "--out", t / "m.engine"],
                                             ["TensorRT is not installed"])
    CASES["evaluate: trt without TensorRT"] = ("engine.evaluate", lambda t, r, d: ["--backend", "trt", "--model", t],
                                               ["TensorRT"])


# What a failing case may leave, by design: trt export checks its ONNX input before it needs TensorRT.
LEAVES = {"export: trt without TensorRT": {"case/m.trt-fp32.onnx"}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("bad-input") / "run"
    train(config(out, shared_data, limit=256))
    return out


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_touches_nothing(case, tmp_path, tiny_run, shared_data, capsys, monkeypatch):
    module, make_args, fragments = CASES[case]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # anything a case wrongly writes to the working directory is seen
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    args = make_args(case_dir, tiny_run, shared_data)
    if module == "engine.train":
        base = ["--model", "tiny", "--quiet", "--epochs", 1]
        if "--data" not in args:
            base += ["--data", shared_data, "--limit", 256]
        if "--out" not in args:
            base += ["--out", case_dir / "out"]
        args = base + args
    before, run_before = _snapshot(tmp_path), _snapshot(tiny_run)
    assert_one_line_error(run_in_process(capsys, module, *args), *fragments)
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k not in LEAVES.get(case, ())} == before
    assert _snapshot(tiny_run) == run_before
