"""engine evaluate's data settings, read before TensorFlow from the config.json of the run MODEL is or sits in
(tests/test_evaluate_as_trained.py runs the same through the CLI on trained runs)."""
import pytest


def _run_folder(folder, **data):
    from engine.config import Config
    cfg = Config().replace("data", **{"data": "photos", "image_shape": "48x48x3", **data})
    folder.mkdir(parents=True)
    cfg.save(str(folder / "config.json"))
    (folder / "model.onnx").write_bytes(b"not opened by parse")
    return folder


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENGINE_DATA", raising=False)
    (tmp_path / "photos").mkdir()
    return tmp_path


def test_an_export_inside_a_run_takes_the_runs_data_settings(in_tmp, capsys):
    from engine.evaluate import parse
    _run_folder(in_tmp / "runs/t", image_size="48x48", label_mode="coarse", limit_test=30)
    a = parse(["runs/t/model.onnx"])
    assert (a.run, a.data, a.label_mode, a.image_size, a.limit_test) == ("runs/t", "photos", "coarse", "48x48", 30)
    a = parse(["runs/t/model.onnx", "--image-size", "48x48", "--label-mode", "coarse", "--limit-test", "10"])
    assert (a.image_size, a.limit_test) == ("48x48", 10)  # the run's own values, and fewer test images
    assert "--limit-test 10 test images; runs/t was tested on 30" in capsys.readouterr().out
    (in_tmp / "other.onnx").write_bytes(b"not opened by parse")
    b = parse(["other.onnx", "--against", "runs/t"])
    assert b.run == "runs/t" and b.image_size == "48x48"  # the run of --against, when MODEL is in none


def test_image_size_is_accepted_where_it_gives_the_runs_own_size(in_tmp):
    """A run trained on a tree of 48x48 images (no --image-size) evaluated on a mixed tree resized to them."""
    from engine.evaluate import parse
    _run_folder(in_tmp / "runs/t")
    assert parse(["runs/t", "--image-size", "48x48"]).image_size == "48x48"


@pytest.mark.parametrize("args, fragment", [
    (["--image-size", "24x24"], "--image-size 24x24: runs/t takes 48x48 images (trained at its data's own size)"),
    (["--label-mode", "coarse"], "--label-mode coarse: runs/t was trained on fine labels"),
])
def test_a_flag_contradicting_the_run_is_refused(in_tmp, args, fragment):
    from engine.errors import EngineError
    from engine.evaluate import parse
    _run_folder(in_tmp / "runs/t")
    with pytest.raises(EngineError, match="^" + fragment.replace("(", r"\(").replace(")", r"\)")):
        parse(["runs/t", *args])


def test_a_runs_data_not_there_from_here_asks_for_data(in_tmp):
    from engine.errors import EngineError
    from engine.evaluate import parse
    _run_folder(in_tmp / "runs/t", data="elsewhere/photos")
    with pytest.raises(EngineError, match=r"runs/t was trained on --data elsewhere/photos, which is not there from "
                                          r"this folder: give --data PATH"):
        parse(["runs/t"])
    assert parse(["runs/t", "--data", "photos"]).data == "photos"


def test_a_runs_coarse_label_mode_is_not_taken_for_data_it_cannot_apply_to(in_tmp, capsys):
    """A run an older version trained on an .npz with --label-mode coarse (then ignored) is evaluated as it
    trained: on its fine labels, not refused for a flag the user did not give."""
    import numpy as np
    from engine.evaluate import parse
    np.savez(in_tmp / "c3.npz", x=np.zeros(1))  # (not opened by parse)
    _run_folder(in_tmp / "runs/t", data="c3.npz", label_mode="coarse")
    assert parse(["runs/t"]).label_mode == "fine"
    assert "--label-mode" not in capsys.readouterr().out


def test_the_class_count_is_checked_on_the_first_batch_before_the_whole_test_set_is_predicted():
    import numpy as np
    from engine.errors import EngineError
    from engine.evaluate import timed_predict

    class Predictor:  # 5 outputs, recording the batches it is given
        batch_size, calls = 4, []

        def predict(self, images):
            self.calls.append(len(images))
            return np.zeros((len(images), 5), np.float32)

    def ten_classes(logits):
        if logits.shape[1] != 10:
            raise EngineError("5 outputs but 10 classes")
    p = Predictor()
    with pytest.raises(EngineError, match="5 outputs"):
        timed_predict(p, np.zeros((100, 8, 8, 1), np.uint8), ten_classes)
    assert p.calls == [4]  # the warm-up batch only
