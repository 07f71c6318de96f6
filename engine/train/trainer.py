"""The outer loop of a started run (session.py): epochs, train calls, evaluation, stop rules, the
end-of-epoch actions (actions.py) and metrics.json.

Everything it steps is assembled by session.start (with build.py) before the first step, every
config rule is checked before that (resolve.check), and it never changes the config. What it writes
into the run folder the session made:

    history.json  checkpoints/  checkpoints/best/  tb/  (each epoch)    curves.png  metrics.json  (at the end)
"""
from __future__ import annotations

import collections
import time

import tensorflow as tf

from engine import devices, layout, plots
from engine.models import flops
from engine.config import Config
from engine.errors import Diverged, EngineError, Interrupted
from engine.files import write_json
from engine.train import actions, clock, compile_cache, prune, resize, startup
from engine.train.clock import Clock, EpochStats, ProfileWindow, Rate, progress_bar
from engine.train.distribute import StopNow
from engine.train.loop import MAX_SKIPS
from engine.train.optim import current_lr
from engine.train.stop_rules import check_epoch_loss

DIVERGED = {0: "loss became {loss:.3g}", 1: "weights became non-finite",
            2: f"the loss scale collapsed ({MAX_SKIPS} consecutive steps skipped for non-finite gradients)"}


class Trainer:
    """`Trainer(cfg).run()`: start a run (session.start), fit it, close it; returns its metrics.
    `Trainer().fit(session)` fits a run started by the caller. After either, `.model`, `.optimizer`
    and `.loop` are the run's."""

    def __init__(self, cfg: Config | None = None, log=print, warn=startup.warn_on_stderr, *, checked=False):
        self._start_with = (cfg, log, warn, checked)  # (checked: resolve.check ran on cfg already)
        self.session = None

    def run(self) -> dict:
        cfg, log, warn, checked = self._start_with
        with startup.start(cfg, log, warn, checked=checked) as session:
            return self.fit(session)

    model = property(lambda self: self.session.training.model)
    optimizer = property(lambda self: self.session.training.optimizer)
    loop = property(lambda self: self.session.training.loop)

    def fit(self, session: startup.RunStart) -> dict:
        """Train from the session's position to its last epoch (or a stop rule); returns the metrics."""
        self.session, self.config, self.training = session, session.config, session.training
        self.log, self.checkpoints, self.history = session.log, session.checkpoints, session.history
        self.global_step, self.resumed_stats = session.position.step, session.position.partial
        self.clock = Clock()
        self.clock.earlier("feature cache", session.feature_seconds)
        self.profile = ProfileWindow(self.config.run.profile, layout.run_file(self.config.run.out, layout.TB_DIR))
        self.actions = actions.standard(session, self.clock)
        self.test_passes = 0  # plain forward passes over test images at the end (validations: the history's)
        self.tta_images = 0   # images the TTA views were computed for
        try:
            return self._finish(self._epochs())
        except StopNow as e:  # a second Ctrl-C
            last = self.checkpoints.last
            out = session.source_out
            hint = f"continue from it with --resume --out {out}" if last else f"--resume --out {out} starts it again"
            raise Interrupted(f"{e.signame} twice: stopped at once at step {self.global_step}; the last checkpoint "
                              f"is {last or 'none'}: {hint}") from None

    def _epochs(self) -> bool:
        """Train epoch after epoch; True if a stop rule ended the run early."""
        num_epochs = self.training.length.num_epochs
        skip = self.session.position.step_in_epoch  # (a resume inside an epoch: its steps already done)
        for epoch in range(self.session.position.epoch, num_epochs):
            stats = self._train_epoch(epoch, skip)
            skip = 0
            end = self._evaluate(epoch, stats, last=epoch + 1 == num_epochs)
            if any([action(end) for action in self.actions]):  # (every action runs)
                return True
        return False

    def _train_epoch(self, epoch: int, skip: int) -> dict:
        r, stop = self.config.run, self.session.stop
        steps = self.training.length.steps_in_epoch(epoch)
        keep, plan = None, None
        if self.training.loop.cfg.prune:  # (train.prune) the epoch's images, and its steps' positions
            keep, plan = prune.begin_epoch(self.training, self.config, epoch, steps, skip)
            steps, skip = plan.steps, plan.actual(plan.base + skip)
        with self.clock.timed("input pipeline start/stop"):
            iterator = iter(self.session.feeds.train(r.seed, epoch, skip, keep))
        bar = progress_bar(steps - skip, r.quiet, header=f"Epoch {epoch + 1}/{self.training.length.num_epochs}")
        stats, done = EpochStats(), skip
        if skip and self.resumed_stats:  # the steps of this epoch before the checkpoint it resumed from
            stats.loss, stats.correct, stats.seen = self.resumed_stats
        self.resumed_stats = None
        while done < steps:
            before = self.global_step
            n = call_size(self.training, r, plan, self.global_step, done, steps)
            self.training.loop.at_step(self.global_step)  # (a variable whose training ended freezes here)
            self._train_call(iterator, n, stats)
            done += n
            if plan is not None:  # (a pruned epoch's steps sit at positions further apart)
                self.global_step = plan.position(done)
            if bar is not None:
                bar.update(done - skip, values=[("loss", stats.loss / stats.seen),
                                                ("accuracy", stats.correct / stats.seen), ("img/s", Rate(stats.img_s))])
            partial = (stats.loss, stats.correct, stats.seen)
            if done < steps and stop.requested():  # (at an epoch end: after the epoch is recorded, by its actions)
                raise actions.stopped(stop.seen, self.global_step, self.checkpoints.save(self.global_step, partial),
                                      self.session.source_out)
            if r.checkpoint_every and self.global_step // r.checkpoint_every > before // r.checkpoint_every \
                    and done < steps:
                with self.clock.timed(clock.CHECKPOINT_SAVES):
                    self.checkpoints.save(self.global_step, partial)
        summary = stats.summary()
        if plan is not None:  # (history.json: the images a pruning run's epoch trained)
            summary["images"] = plan.steps * self.config.optim.batch_size
        with self.clock.timed("input pipeline start/stop"):
            del iterator
        return summary

    def _train_call(self, iterator, n: int, stats: EpochStats) -> None:
        profiled = self.profile.before_call()
        traced = not self.training.loop.compiled  # (its first call traces and compiles it)
        t0 = time.perf_counter()
        loss, correct, bad, why = self.training.loop.train_calls(iterator, tf.constant(n, tf.int32))
        loss, correct, bad, why = float(loss), float(correct), int(bad), int(why)  # also waits for the device
        seconds = time.perf_counter() - t0
        if profiled:
            self.clock.phases["profiled calls"] += seconds
            if done := self.profile.after_call():
                self.log(f"profile of {self.config.run.profile} train calls: {done} (TensorBoard's Profile tab)")
        if bad >= 0:
            last = self.checkpoints.last or "none (no checkpoint was written yet)"
            raise Diverged(f"{DIVERGED[why].format(loss=loss)} at step {bad + 1}; stopped. Last good checkpoint: {last}")
        self.global_step += n
        images = n * self.config.optim.batch_size
        timed = not profiled and self.clock.train_call(images, seconds, traced)
        stats.add(images, loss, correct, seconds if timed else None)

    def _evaluate(self, epoch: int, stats: dict, last: bool) -> actions.EpochEnd:
        # a loss that exploded and stayed finite: stop before this epoch is evaluated or checkpointed
        check_epoch_loss(stats["loss"], epoch + 1, self.training.loop.cfg.num_classes, self.config.optim,
                         self.checkpoints.last)
        every = self.config.data.eval_every
        validated = validates(epoch + 1, every, last)
        val_loss = val_acc = None  # (not measured: null in history.json)
        if validated:
            with self.clock.timed(clock.EVALUATION):
                val_loss, val_acc = self.session.feeds.evaluate(self.training.loop, "val")
        entry = {"epoch": epoch + 1, "loss": stats["loss"], "accuracy": stats["accuracy"],
                 "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr(self.training.optimizer),
                 "img_s": stats["img_s"], "seconds": stats["seconds"]}
        if "images" in stats:
            entry["images"] = stats["images"]
        # Never validated (--eval-every 0): checkpoints/best is the final weights.
        improves = self.history.improves(val_acc) if validated else last and not every
        return actions.EpochEnd(entry, self.global_step, improves, last)

    # -- end of run ------------------------------------------------------------------------------
    def _finish(self, stopped_early: bool) -> dict:
        r = self.config.run
        if self.profile.stop():  # the run ended inside the window
            self.log(f"profile of the train calls after the first: {layout.run_file(r.out, layout.TB_DIR)}")
        with self.clock.timed("curves plot"):
            plots.curves(self.history.entries, layout.run_file(r.out, layout.CURVES_FILE),
                         title=f"{self.config.model.model} ({r.out})")
        test_loss, test_acc, tta_acc = self._test()
        wall, breakdown = self.clock.breakdown()
        metrics = self._metrics(test_loss, test_acc, tta_acc, stopped_early, wall, breakdown)
        if self.session.position.epoch >= self.training.length.num_epochs:  # a re-test: nothing trained here
            metrics = kept_training(metrics, r.out)
        write_json(layout.run_file(r.out, layout.METRICS_FILE), metrics.to_dict())
        self.log(f"wall time {wall:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in breakdown.items()))
        if metrics.pruning:
            self.log(prune.describe(metrics.pruning))
        m = self.config.model
        n = self.session.sizes.test
        part = f" on the {self.tta_images} least confident images" if m.tta and self.tta_images < n else ""
        with_tta = f", with TTA level {m.tta}{part}: {tta_acc:.4f}" if m.tta else ""
        best = (f"best val {self.history.best_acc:.4f} at epoch {self.history.best_epoch}" if self.history.validated
                else "not validated during training: --eval-every 0")
        self.log(f"test accuracy {test_acc:.4f}{with_tta} ({best}); run in {r.out}")
        return metrics.to_dict()

    def _test(self):
        """(test loss, test accuracy, accuracy with TTA or None) of the final weights."""
        last, feeds, loop, m = self.history.last, self.session.feeds, self.training.loop, self.config.model
        n = self.session.sizes.test
        if m.tta and m.tta_fraction < 1:  # one plain pass gives the test accuracy and the images to augment
            with self.clock.timed(clock.TTA):
                measured = feeds.selective_tta(loop, m.tta, m.tta_fraction)
            self.test_passes, self.tta_images = n, measured.tta_images
            return measured.loss, measured.accuracy, measured.tta_accuracy
        if (self.session.val_is_test and last and last["val_loss"] is not None
                and last["epoch"] == int(self.checkpoints.epoch.numpy())):
            test_loss, test_acc = last["val_loss"], last["val_accuracy"]  # same weights, same images
        else:
            with self.clock.timed(clock.EVALUATION):
                test_loss, test_acc = feeds.evaluate(loop, "test")
            self.test_passes = n
        tta_acc = None
        if m.tta:
            with self.clock.timed(clock.TTA):
                tta_acc = feeds.evaluate(loop, "test", m.tta)[1]
            self.tta_images = n
        return test_loss, test_acc, tta_acc

    def _metrics(self, test_loss, test_acc, tta_acc, stopped_early, wall, breakdown) -> layout.Metrics:
        s, r, o, h = self.session, self.config.run, self.config.optim, self.history
        best_epoch, best_val = (h.best_epoch, h.best_acc) if h.validated else (len(h.entries) or None, None)
        return layout.Metrics(
            test_accuracy=test_acc, test_loss=test_loss, tta=self.config.model.tta, test_accuracy_tta=tta_acc,
            best_epoch=best_epoch, best_val_accuracy=best_val, epochs_run=len(h.entries),
            stopped_early=stopped_early, steps=self.global_step, train_img_s=self.clock.img_s,
            train_seconds=self.clock.seconds, wall_seconds=wall, wall_breakdown=breakdown,
            train_images=s.sizes.train, test_images=s.sizes.test, val_is_test=s.val_is_test,
            val_images=s.sizes.val, policy=self.training.policy, xla=r.xla, steps_per_call=r.steps_per_call,
            batch_size=o.batch_size, replicas=s.strategy.num_replicas_in_sync, device=devices.device_name(),
            tensorflow=tf.__version__, feature_cache=self.training.feature_cache,
            feature_seconds=s.feature_seconds, speed_choice=s.speed.to_dict(), compile_cache=compile_cache_used(s, self.config),
            eval_every=self.config.data.eval_every, tta_fraction=self.config.model.tta_fraction,
            resize_schedule=self.config.model.resize_schedule,
            pruning=prune.record(self.training, self.config, self.history.entries),
            tta_images=self.tta_images if self.config.model.tta else None,
            flops=run_flops(self.session, self.global_step, self.history.validated, self.test_passes, self.tta_images))


def kept_training(metrics: layout.Metrics, run: str) -> layout.Metrics:
    """The metrics of a run resumed after its last step, which only tests again (another --tta, say),
    with the training figures (train_seconds, train_img_s) of the run's metrics.json it replaces: its
    own are 0, and the run's record of its training would be lost. Missing or unreadable: its own."""
    import dataclasses
    try:
        before = layout.read_metrics(run)
    except EngineError:
        return metrics
    if not isinstance(before.train_seconds, (int, float)) or before.train_seconds <= 0:
        return metrics
    return dataclasses.replace(metrics, train_seconds=before.train_seconds, train_img_s=before.train_img_s)


def compile_cache_used(session, config) -> dict | None:
    """The compile cache's folder and what it holds after the run. An XLA run that left it empty
    ran in a process whose TensorFlow runtime had started before the cache was set (a notebook
    that used TensorFlow first): TensorFlow ignored it, and the run says so."""
    folder = session.compile_cache
    if not folder:
        return None
    n = compile_cache.entries(folder)
    if config.run.xla and n == 0 and session.chief:
        session.warn(f"the XLA compile cache was not used: TensorFlow had started before it was set; "
                     f"set TF_XLA_FLAGS={compile_cache.FLAG}={folder} before importing it")
        return None
    return {"directory": folder, "entries": n}


def call_size(training, r, plan, global_step: int, done: int, steps: int) -> int:
    """Steps in the epoch's next train call (`done` of its `steps` done): steps_in_call, or in a pruned
    epoch prune.steps_in_call on its steps' positions."""
    if plan is not None and plan.pruned:
        return prune.steps_in_call(plan, done, r.steps_per_call, r.checkpoint_every, training.loop.horizons())
    return steps_in_call(global_step, steps - done, r.steps_per_call, r.checkpoint_every, training.loop.horizons())


def run_flops(session, steps: int, validations: int, test_passes: int, tta_images: int) -> dict:
    """A run's FLOPs (engine.models.flops): training (FLOPs per training image x the images of its
    `steps`, or under --prune-fraction the images each epoch trained; under --resize-schedule each
    phase's images at its side's FLOPs) and evaluation (forward passes: `validations` of the validation split, `test_passes`
    plain test images, every TTA view of `tta_images`). A resumed run counts the steps before its
    checkpoint too, and the validations its history records; a feature-cache run counts the
    backbone's pass over each split once."""
    s, training, cfg = session, session.training, session.config
    images, trained = steps * cfg.optim.batch_size, None
    if training.loop.cfg.prune:  # the steps' positions (train.prune): fewer than `steps` in pruned epochs
        length, batch = training.length, cfg.optim.batch_size
        trained = prune.positions(prune.trained_per_epoch(s.history.entries, length, batch), length.steps_per_epoch,
                                  length.total_steps, batch)
        images = len(trained) * batch
    evaluated = s.sizes.val * validations + test_passes + tta_images * flops.TTA_VIEWS[cfg.model.tta]
    per_image_eval = flops.forward_flops(training.loop.model)
    out = {"train_flops_per_image": flops.train_flops(training.loop.model), "eval_flops_per_image": per_image_eval,
           "train_images_seen": images, "eval_forward_passes": evaluated}
    train_total, eval_total = out["train_flops_per_image"] * images, per_image_eval * evaluated
    if training.loop.cfg.resize:
        side = training.preprocess.size
        by_side = resize.steps_by_side(training.loop.cfg.resize, steps)
        if trained is not None:
            counted = collections.Counter(resize.side_at(training.loop.cfg.resize, p) for p in trained)
            by_side = {at: counted[at] for at in by_side}
        out["train_phases"] = [{"side": at or side, "images": n * cfg.optim.batch_size,
                                "train_flops_per_image": flops.train_flops(training.loop.model, at)}
                               for at, n in by_side.items()]
        train_total = sum(p["images"] * p["train_flops_per_image"] for p in out["train_phases"])
    if training.feature_cache:  # the backbone's pass over each split, once
        backbone = flops.forward_flops(training.model) - per_image_eval
        train_total += backbone * s.sizes.train
        eval_total += backbone * (s.sizes.test + (0 if s.val_is_test else s.sizes.val))
    return {"training_flops": train_total, "evaluation_flops": eval_total, **out}


def validates(epoch: int, every: int, last: bool) -> bool:
    """Whether 1-based `epoch` is validated under --eval-every `every`: every every-th and the last
    (0: none)."""
    return bool(every) and (last or epoch % every == 0)


def steps_in_call(global_step: int, left: int, steps_per_call: int, checkpoint_every: int,
                  horizons=()) -> int:
    """Steps in the next train call at `global_step`, `left` steps before the epoch's end:
    --steps-per-call, cut at the epoch's end, at the next --checkpoint-every step and at the next of
    `horizons` (the steps at which a variable freezes)."""
    n = min(steps_per_call, left)
    if checkpoint_every:
        n = min(n, checkpoint_every - global_step % checkpoint_every)
    return min([n] + [h - global_step for h in horizons if h > global_step])
