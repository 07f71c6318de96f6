"""What a user sees on the terminal: no TensorFlow warnings or C++ start-up logs for normal runs,
readable progress figures, progress during the feature cache's backbone pass."""
import json
import os
import pty
import re
import subprocess
import sys

from tests.conftest import ROOT

RETRACING = """
import numpy as np, tensorflow as tf
from engine.config import Config
from engine.data.pipeline import Pipeline
from engine.train import precision, speed
from engine.train.build import build_training
cfg = Config().replace("model", model="tiny")
for _ in range(5):  # as the speed choice does: a new loop per candidate, each traced once, one timed call
    speed.measure_candidate(cfg, 10, False, False, 32, floor=1e12)
c = cfg.replace("optim", batch_size=32).replace("model", data_init=False).replace("run", amp=False, xla=False)
rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (32 * 5, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32 * 5).astype(np.int64)
loop = build_training(c, 10, len(x), precision.apply(False)).loop
for epoch in range(4):  # a new iterator each epoch, calls of 3 steps then 2, an evaluation
    it = iter(Pipeline(x, y).train(32, seed=0, epoch=epoch))
    for n in (3, 2):
        loop.train_calls(it, tf.constant(n, tf.int32))
    loop.evaluate(Pipeline(x, y).eval(64))
print("traces", loop.train_calls.experimental_get_tracing_count(), loop._eval_fns[0].experimental_get_tracing_count())
"""


def test_new_loops_in_one_process_do_not_warn_of_retracing():
    """The speed choice builds a loop per candidate it times before the run builds its own: TensorFlow counted
    their first traces as retraces of one function and warned at the fifth within ten calls."""
    p = subprocess.run([sys.executable, "-c", RETRACING], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "retracing" not in p.stderr, p.stderr[-2000:]
    assert "traces 1 1" in p.stdout  # one loop: traced once over epochs, call sizes and evaluations


def test_device_name_imports_tensorflow_quietly():
    """engine evaluate's report asks for the device: that printed TensorFlow's C++ start-up logs
    (cuInit error, oneDNN notice) on the stderr of a successful command."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ENGINE_TF_VERBOSE")}
    p = subprocess.run([sys.executable, "-c", "from engine import devices; print(devices.device_name())"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0 and p.stdout.strip()
    assert p.stderr == ""


def test_frozen_backbone_run_shows_its_feature_pass_and_counts_it(tmp_path):
    """The pass through a frozen backbone said nothing until it was over, was missing from the wall
    time, sent validation images that are test images through twice, and a random backbone went
    unremarked."""
    p = subprocess.run([sys.executable, "-m", "engine", "train", "--recipe", "vgg16-frozen-64", "--weights", "none",
                        "--data", "digits", "--limit", "64", "--limit-test", "40", "--val-images", "20",
                        "--batch-size", "32", "--epochs", "1", "--out", "run"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "ENGINE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr.count("warning: --weights none with a frozen backbone") == 1, p.stderr
    # the 20 validation images are test images: 64 + 40 go through, said before the pass starts
    assert "feature cache: 104 images through the frozen backbone once: 64 training, 40 test\n" in p.stdout, p.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["feature_seconds"] > 0 and m["wall_breakdown"]["feature cache"] == m["feature_seconds"]
    assert m["wall_seconds"] > m["feature_seconds"]
    assert (m["val_images"], m["test_images"]) == (20, 40)


def _tiny(cwd, out, stdout):
    return subprocess.run([sys.executable, "-m", "engine", "train", "--model", "tiny", "--data", "digits", "--epochs",
                           "2", "--no-amp", "--no-xla", "--out", out], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=600, env={**os.environ, "ENGINE_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT)})


def test_progress_on_a_terminal_and_in_a_log(tmp_path):
    """On a terminal: fit's "Epoch k/N" header over each epoch's bar, img/s with one decimal. Piped to
    a file: no colour codes or bar frames, the epoch lines; the last LR of a one-cycle is 0."""
    master, slave = pty.openpty()
    p = _tiny(tmp_path, "tty", slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert text.index("Epoch 1/2") < text.index("epoch 1/2:") < text.index("Epoch 2/2") < text.index("epoch 2/2:")
    rates = re.findall(r"img/s: ([0-9.]+)", text)
    assert rates and all(re.fullmatch(r"\d+\.\d", r) for r in rates), rates
    piped = _tiny(tmp_path, "piped", subprocess.PIPE)
    log = piped.stdout.decode()
    assert piped.returncode == 0 and "\x1b[" not in log and "\r" not in log and "Epoch 1/2" not in log
    assert re.search(r"epoch 2/2: .* lr 0 ", log), log
