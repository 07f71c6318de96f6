"""Sample pruning (--prune-fraction, --prune-until) in training: the invariants, not the accuracy.
With nothing to prune it trains as pruning off; a pruned epoch trains exactly its kept images in
fewer steps over the same step positions; the loss weights scale each image's gradient; the epochs
from --prune-until train every image; a resume inside and at the edge of a pruned epoch ends as the
straight run; two replicas keep the same scores and images; the FLOPs count the images trained
(each resizing phase its own).
On 256 digits (8 steps of 32 an epoch) with the tiny model: seconds each."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.train import prune, resolve
from engine.train.trainer import Trainer
from tests.conftest import kill_after, run_trainer as run


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def tiny(out, resume=False, fraction=0.5, until=0.6, **run):
    """3 epochs of 8 steps; until 0.6 (step 14.4): epoch 1 may prune (epoch 0 has no scores yet), epoch 2 not."""
    cfg = resolve.defaults("tiny").replace("data", data="digits", limit=256, prune_fraction=fraction,
                                           prune_until=until)
    cfg = cfg.replace("optim", batch_size=32, epochs=3)
    return cfg.replace("run", **{"out": str(out), "quiet": True, "deterministic": True, "amp": False, "xla": False,
                                 "resume": resume, "keep_checkpoints": 40, **run})


def weights_of(t):
    return [w.numpy() for w in t.model.weights]


def test_with_nothing_to_prune_it_trains_bitwise_as_pruning_off(tmp_path):
    """The first epoch has no scores: every image, weight 1, the same steps: the same weights as
    without pruning, to the bit."""
    off = run(tiny(tmp_path / "off", fraction=0.0, until=0.875).replace("optim", epochs=1))
    on = run(tiny(tmp_path / "on").replace("optim", epochs=1))
    for a, b in zip(weights_of(off), weights_of(on)):
        np.testing.assert_array_equal(a, b)
    assert off.metrics["pruning"] is None and off.metrics["steps"] == on.metrics["steps"] == 8
    assert on.metrics["pruning"]["images_per_epoch"] == [256] and on.metrics["pruning"]["images_pruned"] == 0


def test_a_pruned_epoch_trains_its_kept_images_in_fewer_steps_then_full_data_after_until_and_flops_count_them(tmp_path, monkeypatch):
    chosen, calls, trained = [], [], []
    select, call = prune.select, Trainer._train_call

    def recorded_select(scores, fraction, rng, min_kept=1):
        w = select(scores, fraction, rng, min_kept)
        chosen.append((np.array(scores), w))
        return w

    def recorded_call(self, iterator, n, stats):
        calls.append((self.global_step, n))
        call(self, iterator, n, stats)
        trained.append(np.array(self.training.loop.scores.numpy()))
    monkeypatch.setattr(prune, "select", recorded_select)
    monkeypatch.setattr(Trainer, "_train_call", recorded_call)
    lines = []
    t = Trainer(tiny(tmp_path / "r", steps_per_call=3), log=lines.append)
    m = t.run()
    assert len(chosen) == 2  # epochs 0 and 1 start before 0.6 of the run; epoch 2 does not
    assert (chosen[0][1] == 1).all()  # epoch 0: every score +inf, nothing pruned
    scores, w = chosen[1]
    assert np.isfinite(scores).all()  # every image was trained in epoch 0
    low = scores < scores.mean()
    drop = int(0.5 * low.sum())
    assert (w == 0).sum() == drop and (w[low & (w > 0)] == 2.0).all() and (w[~low] == 1.0).all()
    kept_steps = (256 - drop) // 32
    assert m["pruning"]["images_per_epoch"] == [256, kept_steps * 32, 256]
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [h["images"] for h in history] == m["pruning"]["images_per_epoch"]
    assert m["pruning"]["images_trained"] == (16 + kept_steps) * 32
    assert m["pruning"]["images_pruned"] == (8 - kept_steps) * 32
    assert (m["pruning"]["fraction"], m["pruning"]["until"]) == (0.5, 0.6)
    # the calls: 8 steps, then kept_steps at positions spread over 8..15 (ending at 16), then 8 again
    epoch1 = prune.EpochMap(8, 8, kept_steps)
    assert kept_steps < 8 and sum(n for _, n in calls) == 16 + kept_steps
    assert [s for s, _ in calls if 8 <= s < 16][0] == 8 and m["steps"] == 24
    assert calls[-3:] == [(16, 3), (19, 3), (22, 2)]
    # epoch 1 trained exactly its kept images (batched, the last partial batch dropped): the pruned ones
    # keep their epoch-0 scores, and so many kept ones changed as its batches hold
    end_of_1 = trained[[i for i, (s, n) in enumerate(calls) if s < 16][-1]]
    changed = end_of_1 != scores
    assert not changed[w == 0].any() and changed.sum() == kept_steps * 32
    # the LR schedule ends at 0 at the run's end as without pruning, and the loss weights are 1 again
    assert t.history.entries[-1]["lr"] == 0.0 and (t.training.loop.weights.numpy() == 1).all()
    assert epoch1.position(kept_steps) == 16
    left_out = (8 - kept_steps) * 32
    assert f"sample pruning: trained on {(16 + kept_steps) * 32} images, left out {left_out} " \
           f"({left_out / 768:.1%})" in lines
    # the training FLOPs count the images trained
    f = m["flops"]
    assert f["train_images_seen"] == m["pruning"]["images_trained"]
    assert f["training_flops"] == f["train_flops_per_image"] * m["pruning"]["images_trained"]
    config = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert (config["prune_fraction"], config["prune_until"]) == (0.5, 0.6)


def test_loss_weights_scale_each_images_gradient(tmp_path):
    """Plain SGD, no decay: weight 0 leaves the trainable weights as they were, weight 2 moves them as
    twice the learning rate does."""
    from engine.data.pipeline import Pipeline
    from engine.train.build import build_training
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, 64)
    base = tiny(tmp_path / "w").replace("data", image_shape="8x8x1").replace(
        "optim", optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0, schedule="constant", lr=0.1)

    def one_step(weight, lr):
        keras.utils.set_random_seed(0)
        loop = build_training(base.replace("optim", lr=lr), 10, 64, "float32").loop
        loop.weights.assign(tf.fill([64], weight))
        before = [v.numpy() for v in loop.model.trainable_variables]
        loop.train_calls(iter(Pipeline(x, y).train(32, 0, 0)), tf.constant(1, tf.int32))
        return before, [v.numpy() for v in loop.model.trainable_variables]
    before, zero = one_step(0.0, 0.1)
    for a, b in zip(before, zero):
        np.testing.assert_array_equal(a, b)
    _, doubled = one_step(2.0, 0.1)
    _, twice_lr = one_step(1.0, 0.2)
    _, plain = one_step(1.0, 0.1)
    for d, l, p, b in zip(doubled, twice_lr, plain, before):
        np.testing.assert_allclose(d, l, atol=1e-6)
        assert not np.allclose(d, p, atol=1e-6) or np.allclose(p, b)


def test_resumed_inside_and_at_the_edge_of_a_pruned_epoch_equals_the_straight_run(tmp_path):
    straight = run(tiny(tmp_path / "s", checkpoint_every=1))
    want = weights_of(straight)
    saved = sorted(int(f.name[5:-6]) for f in (tmp_path / "s" / "checkpoints").glob("ckpt-*.index"))
    inside = [s for s in saved if 8 < s < 16]
    assert len(inside) < 7  # the pruned epoch's steps skip positions (checkpoints at the ones it has)
    for stop in (inside[len(inside) // 2], 8, 16):  # inside the pruned epoch; at its start; at its end
        kill_after(tmp_path / "s", stop)
        resumed = run(tiny(tmp_path / "s", resume=True, checkpoint_every=1))
        for a, b in zip(want, weights_of(resumed)):
            np.testing.assert_array_equal(a, b)
        for key in ("pruning", "flops", "test_accuracy", "steps"):
            assert resumed.metrics[key] == straight.metrics[key], key
        np.testing.assert_array_equal(resumed.training.loop.scores.numpy(), straight.training.loop.scores.numpy())


def test_with_a_resize_schedule_each_phase_counts_the_images_it_trained(tmp_path):
    """digits32 at 16x16 for the first 0.5 of the steps (positions 0-11), then 32x32: a pruned epoch 1
    straddles the switch; the phases' images add up to the images trained."""
    cfg = tiny(tmp_path / "rs").replace("data", data="digits32").replace("model", resize_schedule="16:0.5")
    m = run(cfg).metrics
    p, phases = m["pruning"], m["flops"]["train_phases"]
    kept = prune.EpochMap(8, 8, p["images_per_epoch"][1] // 32)
    at_16 = 8 + sum(kept.position(i) < 12 for i in range(kept.steps))
    assert [(q["side"], q["images"]) for q in phases] == [(16, at_16 * 32), (32, p["images_trained"] - at_16 * 32)]
    assert m["flops"]["training_flops"] == sum(q["images"] * q["train_flops_per_image"] for q in phases)


REPLICAS = r"""
import json
import keras
import numpy as np
from engine import data
from engine.train import prune, resolve
from engine.train.build import build_training
from engine.train.feeds import Feeds
splits = data.load("digits", os.environ["ENGINE_CACHE"], log=lambda *a: None)
x, y = splits.x_train[:128], splits.y_train[:128]
base = resolve.defaults("tiny").replace("run", amp=False, xla=False).replace("data", image_shape="8x8x1",
                                                                              prune_fraction=0.5)
base = base.replace("optim", batch_size=32, epochs=2)
out = {}
for name, devices in (("one", ["/cpu:0"]), ("two", ["/cpu:0", "/cpu:1"])):
    strategy = tf.distribute.MirroredStrategy(devices)
    keras.utils.set_random_seed(0)
    training = build_training(base, 10, len(x), "float32", strategy)
    feeds = Feeds(strategy, (x, y), (x, y), (x, y), True, 32, training.preprocess.size)
    loop = training.loop
    loop.train_calls(iter(feeds.train(0, 0, 0)), tf.constant(4, tf.int32))  # epoch 0: every image
    w = prune.select(loop.scores.numpy(), 0.5, prune.rng(0, 1), 32)         # as the trainer's epoch start
    plan = prune.plan(w, 4, 4, 4, 32)
    loop.begin_epoch(plan, w)
    loop.train_calls(iter(feeds.train(0, 1, 0, w > 0)), tf.constant(plan.steps, tf.int32))
    copies = lambda v: [c.numpy().tolist() for c in getattr(v, "values", [v])]
    out[name] = {"replicas": strategy.num_replicas_in_sync, "kept": w.tolist(), "steps": plan.steps,
                 "scores": copies(loop.scores), "weights": copies(loop.weights), "step": copies(loop.step)}
print(json.dumps(out))
"""


def test_two_replicas_keep_the_same_scores_and_images_as_one():
    """Two replicas (logical CPUs) gather every replica's losses: each replica's copy of the scores
    and loss weights is the same, and they prune the same images as one replica (its scores differ
    only by the rounding two replicas differ by anyway)."""
    from tests.conftest import run_with_cpu_devices
    p = run_with_cpu_devices(REPLICAS)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    one, two = out["one"], out["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert two["scores"][0] == two["scores"][1] and two["weights"][0] == two["weights"][1]
    assert two["step"][0] == two["step"][1] == one["step"][0] == 8  # the pruned epoch ended at its end
    assert one["kept"] == two["kept"] and one["steps"] == two["steps"] < 4
    np.testing.assert_allclose(one["scores"][0], two["scores"][0], atol=2e-3)
