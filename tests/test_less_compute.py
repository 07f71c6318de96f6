"""Less compute for the same result: validation every N epochs or only at the end, TTA on the
least-confident test images only, colour jitter, the whitening bias frozen mid-epoch, the FLOPs a run
reports. Invariants only (resume equivalence, F=1 identity, the FLOP accounting), on the digits data
with the tiny model or a narrow airbench: seconds each."""
import json
import math

import keras
import numpy as np
import pytest

from engine.models import flops
from engine.train import resolve
from engine.train.loop import tta_logits
from engine.train.trainer import Trainer
from tests.conftest import kill_after, run_trainer as run


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def hiverge(out, resume=False, **model):
    """The hiverge recipe at toy scale: every one of its features on (validation only at the end, TTA on
    the 25% least confident, colour jitter, the whitening bias frozen mid-epoch), on 256 digits."""
    cfg = resolve.resolve({("run", "recipe"): "airbench-muon-hiverge"})
    cfg = cfg.replace("data", data="digits", limit=256).replace("model", width=0.125, **model)
    cfg = cfg.replace("optim", batch_size=32, epochs=2.5)  # 8 steps an epoch, 20 in all
    return cfg.replace("run", out=str(out), quiet=True, deterministic=True, checkpoint_every=2, keep_checkpoints=20,
                       resume=resume, amp=False, xla=False)


def test_hiverge_recipe_resumed_across_the_bias_freeze_equals_the_straight_run(tmp_path):
    """Killed after step 2 and resumed: the run crosses the whitening bias's freeze at step 3 (0.3
    epochs of 8 steps, rounded up), trains with colour jitter, never validates, and ends with the same
    weights, the same selective TTA and the same FLOP count as the straight run."""
    straight = run(hiverge(tmp_path / "s", whiten_bias_epochs=0.3))
    kill_after(tmp_path / "s", 2)
    resumed = run(hiverge(tmp_path / "s", resume=True, whiten_bias_epochs=0.3))
    assert not resumed.model.get_layer("whiten").bias.trainable
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    m, r = straight.metrics, resumed.metrics
    for key in ("steps", "test_accuracy", "test_accuracy_tta", "tta_images", "flops", "eval_every", "tta_fraction",
                "best_epoch", "best_val_accuracy"):
        assert m[key] == r[key], key
    # validation only at the end: nothing measured per epoch, and the best checkpoint is the final weights
    history = json.loads((tmp_path / "s" / "history.json").read_text())
    assert [(h["epoch"], h["val_accuracy"], h["val_loss"]) for h in history] == [(1, None, None), (2, None, None),
                                                                                (3, None, None)]
    assert (m["best_epoch"], m["best_val_accuracy"], m["eval_every"]) == (3, None, 0)
    n = m["test_images"]
    assert m["tta_images"] == math.ceil(0.25 * n) and m["tta_fraction"] == 0.25
    # FLOPs: 20 steps of 32 images; one plain pass over the test split, then 6 views of the chosen quarter
    f = m["flops"]
    assert f["train_images_seen"] == 20 * 32 and f["training_flops"] == f["train_flops_per_image"] * 640
    assert f["eval_forward_passes"] == n + 6 * m["tta_images"]
    assert f["evaluation_flops"] == f["eval_flops_per_image"] * f["eval_forward_passes"]
    assert f["train_flops_per_image"] == flops.train_flops(straight.model)
    # resumed once more, after its last step: only the final test runs, the bias stays frozen, the counts the same
    tested = run(hiverge(tmp_path / "s", resume=True, whiten_bias_epochs=0.3))
    assert not tested.model.get_layer("whiten").bias.trainable
    for key in ("steps", "test_accuracy_tta", "tta_images", "flops"):
        assert tested.metrics[key] == m[key], key
    # ... and its metrics.json keeps the training figures of the run it tests again (its own would be 0)
    assert tested.metrics["train_seconds"] == r["train_seconds"] > 0
    assert tested.metrics["train_img_s"] == r["train_img_s"]
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["train_seconds"] == r["train_seconds"]
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["run"]["recipe"] == "airbench-muon-hiverge@v1"
    assert (config["model"]["brightness"], config["model"]["whiten_bias_epochs"], config["data"]["eval_every"]) == (
        0.1399, 0.3, 0)


def test_whitening_bias_trains_exactly_its_steps_then_stays(tmp_path):
    """--whiten-bias-epochs 0.3 of 8 steps: the bias moves in steps 1-3 (its LR falling to 0 at the
    3rd) and is frozen from the 4th on."""
    t = Trainer(hiverge(tmp_path / "b", whiten_bias_epochs=0.3).replace("optim", epochs=1.0)
                .replace("run", checkpoint_every=1, steps_per_call=1), log=lambda *a: None)
    seen = []
    original = Trainer._train_call

    def record(self, iterator, n, stats):
        original(self, iterator, n, stats)
        seen.append(self.model.get_layer("whiten").bias.numpy().copy())
    Trainer._train_call = record
    try:
        t.run()
    finally:
        Trainer._train_call = original
    moved = [not np.array_equal(a, b) for a, b in zip(seen, seen[1:])]
    assert len(seen) == 8 and moved[:2] == [True, True] and not any(moved[2:])


def tiny(out, **kw):
    cfg = resolve.defaults("tiny").replace("data", data="digits", limit=512, eval_every=kw.pop("eval_every", 1))
    cfg = cfg.replace("optim", batch_size=64, epochs=kw.pop("epochs", 1))
    cfg = cfg.replace("model", tta=2, tta_fraction=kw.pop("tta_fraction", 1.0))
    return cfg.replace("run", out=str(out), quiet=True, amp=False, xla=False, **kw)


def test_selective_tta_at_fraction_1_is_full_tta_and_below_it_the_least_confident_get_the_views(tmp_path):
    t = run(tiny(tmp_path / "t", epochs=2, deterministic=True))
    feeds, loop = t.session.feeds, t.loop
    everything = feeds.selective_tta(loop, 2, 1.0)
    assert everything.tta_images == t.metrics["test_images"]
    assert everything.tta_accuracy == t.metrics["test_accuracy_tta"]  # the full TTA path's
    assert everything.accuracy == pytest.approx(t.metrics["test_accuracy"])
    assert everything.loss == pytest.approx(t.metrics["test_loss"], rel=1e-5)
    # F = 0.3 by hand: plain logits, the 30% with the lowest top probability take their 6-view logits
    x, y = feeds.pipes["test"].x.numpy(), feeds.pipes["test"].y.numpy()
    plain = loop.model(loop.cfg.preprocess(x), training=False).numpy()
    views = tta_logits(loop.model, x, loop.cfg, 2).numpy()
    confidence = keras.ops.softmax(plain).numpy().max(1)
    k = math.ceil(0.3 * len(x))
    chosen = np.argsort(confidence, kind="stable")[:k]
    combined = plain.copy()
    combined[chosen] = views[chosen]
    some = feeds.selective_tta(loop, 2, 0.3)
    assert some.tta_images == k
    assert some.tta_accuracy == pytest.approx(float(np.mean(combined.argmax(1) == y)), abs=1e-12)


def test_eval_every_2_validates_epochs_2_and_3_and_keeps_the_best_of_those(tmp_path):
    t = run(tiny(tmp_path / "e", epochs=3, eval_every=2))
    history = json.loads((tmp_path / "e" / "history.json").read_text())
    assert [h["val_accuracy"] is not None for h in history] == [False, True, True]
    assert t.metrics["best_epoch"] in (2, 3) and t.metrics["eval_every"] == 2
    val = t.metrics["val_images"]
    f = t.metrics["flops"]  # 2 validations, a test pass (none where the last validation was of the test split), 6 views
    test_pass = 0 if t.metrics["val_is_test"] else t.metrics["test_images"]
    assert f["eval_forward_passes"] == 2 * val + test_pass + 6 * t.metrics["test_images"]
    assert (tmp_path / "e" / "curves.png").exists()


REPLICAS = r"""
import json, math
import numpy as np
from engine import data
from engine.train import resolve
from engine.train.build import build_training
from engine.train.feeds import Feeds
from engine.train.loop import tta_logits
splits = data.load("digits", os.environ["ENGINE_CACHE"], log=lambda *a: None)
x, y = splits.x_test[:301], splits.y_test[:301]  # (301: the two replicas' parts differ in size)
cfg = resolve.defaults("tiny").replace("model", tta=2).replace("run", amp=False, xla=False)
cfg = cfg.replace("data", image_shape="x".join(map(str, x.shape[1:])))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
training = build_training(cfg, 10, len(splits.x_train), "float32", strategy)
feeds = Feeds(strategy, (splits.x_train, splits.y_train), (x, y), (x, y), True, 64, training.preprocess.size)
got = feeds.selective_tta(training.loop, 2, 0.3)
model, stepcfg = training.loop.model, training.loop.cfg
plain = model(stepcfg.preprocess(x), training=False).numpy()
views = tta_logits(model, x, stepcfg, 2).numpy()
confidence = tf.nn.softmax(plain).numpy().max(1)
chosen = np.argsort(confidence, kind="stable")[:math.ceil(0.3 * len(x))]
combined = plain.copy()
combined[chosen] = views[chosen]
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "got": [got.accuracy, got.tta_accuracy, got.tta_images],
                  "want": [float(np.mean(plain.argmax(1) == y)), float(np.mean(combined.argmax(1) == y)), len(chosen)]}))
"""


def test_two_replicas_choose_the_images_of_the_whole_split():
    """Two replicas (logical CPUs) each predict part of the test split; the least confident are chosen
    from all their predictions gathered: the result is the one-process result computed by hand."""
    from tests.conftest import run_with_cpu_devices
    p = run_with_cpu_devices(REPLICAS)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["got"][2] == out["want"][2]
    np.testing.assert_allclose(out["got"][:2], out["want"][:2], atol=1e-12)
