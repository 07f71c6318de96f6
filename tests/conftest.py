"""Fixtures: the real shared CIFAR-10 (through ENGINE_DATA) and small data sets the tests make."""
import io
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# The long tier (`-m slow`), left out of the README's command: each repeats, at more cost, what a test that stays
# there already checks (another parameter of the same journey or parity, a second backbone, a real-data or replica
# variant). Run it with `python -m pytest tests/ -n 2 --dist loadfile -m slow` (about 10 minutes on 2 cores).
LONG_TIER = {
    "tests/journey/test_journey_image_shapes.py::test_a_data_set_of_another_shape_trains_exports_evaluates_and_predicts[tree-64x64x3]",
    "tests/test_export.py::test_parity_of_an_upsampling_backbone",
    "tests/test_export.py::test_parity_tf_savedmodel_onnx_on_full_test_set[upsample]",
    "tests/test_your_model.py::test_your_model_trains_resumes_exports_and_evaluates[up.keras-extra1]",
    "tests/test_your_model.py::test_a_two_phase_fine_tune_through_init_from",
    "tests/test_derived_shapes.py::test_airbench_learns_64x64_rgb_real_images",
    "tests/test_transfer.py::test_probe_on_cifar10_classes",
    "tests/test_transfer.py::test_probe_on_digits",
    "tests/test_transfer.py::test_backbone_builds_at_its_smallest_input_and_trains_a_step[densenet121]",
    "tests/test_transfer.py::test_backbone_builds_at_its_smallest_input_and_trains_a_step[inception_v3]",
    "tests/test_user_model_vs_fit.py::test_the_engine_trains_a_tutorial_cnn_as_well_as_model_fit",
    "tests/test_digits.py::test_airbench_learns_the_8x8x1_digits_through_the_cli",
    "tests/test_resize.py::test_two_replicas_train_the_phases_as_one_does",
    "tests/test_image_shapes.py::test_a_run_trains_exports_and_evaluates_at_its_data_shape[airbench-64x64x3]",
    "tests/test_kernel_placement.py::test_every_op_of_the_gpu_training_and_eval_graphs_has_a_gpu_kernel[densenet121-mixed_float16]",
    "tests/test_kernel_placement.py::test_every_op_of_the_gpu_training_and_eval_graphs_has_a_gpu_kernel[densenet121-mixed_bfloat16]",
    # the airbench recipe's accuracy (the default airbench-muon's stays), ResNet-50 beside the other backbones,
    # ResNet-9 on an mnist.npz beside airbench's 28x28x1 journey
    "tests/test_airbench.py::test_short_airbench_run_reaches_its_accuracy",
    "tests/test_transfer.py::test_backbone_builds_at_its_smallest_input_and_trains_a_step[resnet50]",
    "tests/test_probe_shapes.py::test_resnet9_trains_on_an_mnist_npz_path_and_its_onnx_export_takes_28x28x1",
    # Ctrl-C's exact resume beside SIGTERM's (test_faults) and the journey's Ctrl-C through the CLI
    "tests/test_faults.py::test_ctrl_c_checkpoints_like_sigterm_and_a_relative_resume_is_exact",
    # Inception-v3's GPU kernels beside the other models', ResNet-9 on the 8x8 digits beside tiny and airbench
    "tests/test_kernel_placement.py::test_every_op_of_the_gpu_training_and_eval_graphs_has_a_gpu_kernel[inception_v3-mixed_bfloat16]",
    "tests/test_kernel_placement.py::test_every_op_of_the_gpu_training_and_eval_graphs_has_a_gpu_kernel[inception_v3-mixed_float16]",
    "tests/test_digits.py::test_a_net_trains_an_epoch_on_the_8x8x1_digits_through_the_cli[resnet9-8]",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in LONG_TIER:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    # One decode of the shared archive per machine, shared by in-process and CLI tests.
    os.environ.setdefault("ENGINE_CACHE", str(ROOT / ".cache" / "data"))
    # Runs of the suite train in float32 without XLA, whatever the speed choice would pick on this machine, so
    # that their results do not depend on the host; tests/test_speed_choice.py runs the auto choice.
    os.environ.setdefault("ENGINE_AMP", "off")
    os.environ.setdefault("ENGINE_XLA", "off")


@pytest.fixture(scope="session")
def shared_data() -> str:
    path = os.environ.get("ENGINE_DATA") or str(DEFAULT_DATA)
    if not os.path.exists(path):
        if os.environ.get("ENGINE_DATA"):
            pytest.fail(f"ENGINE_DATA={path} does not exist")
        pytest.skip(f"the shared CIFAR-10 archive is not at {path}; set ENGINE_DATA")
    return path


@pytest.fixture(scope="session")
def shared_splits(shared_data):
    from engine import data
    return data.load(shared_data, os.environ["ENGINE_CACHE"], log=lambda *a: None)


# Real photographs at MNIST's and Tiny-ImageNet's shapes (tests/derived_data.py): class-balanced subsets
# of the shared CIFAR-10, derived once per session.
DERIVED_TRAIN, DERIVED_TEST = 2000, 500


@pytest.fixture(scope="session")
def derived_grey28(shared_splits, tmp_path_factory) -> str:
    """mnist.npz of 28x28 grayscale versions of real CIFAR-10 images."""
    from tests.derived_data import derive_grey28
    path = tmp_path_factory.mktemp("grey28") / "mnist.npz"
    return derive_grey28(shared_splits, str(path), DERIVED_TRAIN, DERIVED_TEST)


@pytest.fixture(scope="session")
def derived_rgb64(shared_splits, tmp_path_factory) -> str:
    """A train/<class>/ test/<class>/ tree of 64x64 RGB PNGs of real CIFAR-10 images."""
    from tests.derived_data import derive_rgb64
    return derive_rgb64(shared_splits, str(tmp_path_factory.mktemp("rgb64")), DERIVED_TRAIN, DERIVED_TEST)


CLASSES = ["cat", "ant", "bee"]  # not alphabetical on purpose


def make_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def png_bytes(arr) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path):
    """A class-folder tree of lossless PNGs: 4 train and 2 test images per class.
    Returns (root, {(split, class): [arrays in filename order]})."""
    root = tmp_path / "tree"
    truth = {}
    for split, n in (("train", 4), ("test", 2)):
        for ci, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            arrays = make_images(n, seed=len(truth))
            for i, a in enumerate(arrays):
                (d / f"{i:03d}.png").write_bytes(png_bytes(a))
            truth[(split, c)] = arrays
    return root, truth


def make_tar(path, members):
    """members: list of (name, bytes) or (name, TarInfo-modifier callable)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            if callable(payload):
                payload(info)
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def run_cli(module, *args, env=None):
    """Run `python -m module args...` from the repo root, as a user would."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=600)


def run_in_process(capsys, module, *args):
    """`module.main(args)` in this process, as a CompletedProcess: the CLI's own code path without
    the seconds of interpreter and TensorFlow start-up per case (tests through run_cli cover what a
    fresh process prints on stderr)."""
    import importlib
    mod = importlib.import_module(module)
    main = getattr(mod, "main", None) or importlib.import_module(module + ".cli").main  # a package
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess([module, *map(str, args)], e.value.code, out.out, out.err)


def assert_one_line_error(p, *fragments):
    """Non-zero exit, exactly one stderr line `error: ...` naming the problem, no traceback."""
    err = p.stderr.strip()
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for f in fragments:
        assert f in err, err


def run_with_cpu_devices(code: str, devices: int = 2) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose one CPU is split into `devices` logical devices
    (/cpu:0, /cpu:1, ...): tf.distribute strategies then have several replicas on one machine. The
    split must happen before TensorFlow's runtime starts, hence the separate process."""
    prologue = ("import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\nimport tensorflow as tf\n"
                "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0], "
                f"[tf.config.LogicalDeviceConfiguration()] * {devices})\n")
    return subprocess.run([sys.executable, "-c", prologue + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def run_trainer(cfg):
    """Train `cfg` in this process without its log lines: the Trainer, with its metrics in `.metrics`."""
    from engine.train.trainer import Trainer
    t = Trainer(cfg, log=lambda *a: None)
    t.metrics = t.run()
    return t


def kill_after(out, step):
    """As if the run in `out` (a pathlib.Path) had died after `step`: later checkpoints gone, the
    state file naming it."""
    ckdir = out / "checkpoints"
    for f in ckdir.glob("ckpt-*"):
        if int(f.name.split(".")[0].split("-")[1]) > step:
            f.unlink()
    (ckdir / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{step}"\n')
