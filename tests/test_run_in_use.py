"""A run folder belongs to one process at a time: `engine export`, `engine evaluate` and `engine predict` of a run that
`engine train` is still writing are refused in one line (and write nothing); once the trainer has
stopped, the same export works."""
import signal
import subprocess
import sys
import time

from tests.conftest import assert_one_line_error

# Stopped by SIGINT long before its last epoch, however fast the machine.
TRAIN = ["train", "--model", "tiny", "--data", "digits", "--epochs", "1000", "--batch-size", "32", "--no-amp",
         "--no-xla", "--quiet", "--out", "runs/x"]


def _engine(cwd, *args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _default_signals():
    """Ctrl-C as a shell leaves it to a command (a pytest-xdist worker ignores SIGINT, and its children would)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_export_evaluate_and_predict_of_a_run_being_trained_are_refused_and_export_works_once_it_stopped(tmp_path):
    from PIL import Image
    Image.new("L", (8, 8), 128).save(tmp_path / "mine.png")  # the digits' 8x8 grey
    trainer = subprocess.Popen([sys.executable, "-m", "engine", *TRAIN], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    best = tmp_path / "runs/x/checkpoints/best"
    try:
        deadline = time.monotonic() + 180
        while not list(best.glob("ckpt-*.index")):  # training, past its first best checkpoint
            assert trainer.poll() is None, trainer.communicate()
            assert time.monotonic() < deadline, "no best checkpoint after 180 s"
            time.sleep(0.2)

        p = _engine(tmp_path, "export", "onnx", "runs/x")
        assert_one_line_error(p, f"runs/x is being trained by another engine process (pid {trainer.pid}): "
                                 f"export it when that has finished or been stopped")
        assert p.returncode == 2
        assert not (tmp_path / "runs/x/model.onnx").exists()

        p = _engine(tmp_path, "evaluate", "runs/x")
        assert_one_line_error(p, f"runs/x is being trained by another engine process (pid {trainer.pid}): "
                                 f"evaluate it when that has finished or been stopped")
        assert p.returncode == 2
        assert not list((tmp_path / "runs/x").glob("evaluate-*"))

        p = _engine(tmp_path, "predict", "--model", "runs/x", "mine.png")
        assert_one_line_error(p, f"runs/x is being trained by another engine process (pid {trainer.pid}): "
                                 f"predict it when that has finished or been stopped")
        assert p.returncode == 2
        assert trainer.poll() is None, "the trainer ended before it was stopped"
    finally:
        if trainer.poll() is None:
            trainer.send_signal(signal.SIGINT)
        _, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 130, err

    p = _engine(tmp_path, "export", "onnx", "runs/x")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "runs/x/model.onnx").is_file()
    p = _engine(tmp_path, "predict", "--model", "runs/x", "mine.png")
    assert p.returncode == 0 and "mine.png" in p.stdout, p.stderr
