"""The outer loop of a run: epochs, evaluation, checkpoints, history, stop conditions, metrics.

Everything it steps is assembled elsewhere (build.py), every config rule is checked before it starts
(resolve.check), and the run directory's policy is run_dir.py's. What it writes:

    config.json  classes.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from engine import devices, layout, models, plots
from engine.config import CONFIG_FILE, Config, default_cache_dir
from engine.errors import Diverged, Interrupted, Preempted
from engine.files import write_json
from engine.train import advice, autotune, compile_cache, distribute, feature_cache, precision, resolve
from engine.train.build import build_training
from engine.train import clock
from engine.train.clock import Clock, EpochStats, ProfileWindow, Rate, progress_bar
from engine.train.feeds import Feeds
from engine.train.loop import MAX_SKIPS
from engine.train.optim import current_lr
from engine.train.checkpoints import Checkpoints, History, warm_start
from engine.train.distribute import StopNow, StopSignal
from engine.train.session import load_splits, prepare_run_dir, set_determinism, warn_on_stderr
from engine.train.stop_rules import check_epoch_loss


DIVERGED = {0: "loss became {loss:.3g}", 1: "weights became non-finite",
            2: f"the loss scale collapsed ({MAX_SKIPS} consecutive steps skipped for non-finite gradients)"}


class Trainer:
    """One run: `Trainer(cfg).run()` trains, checkpoints and writes the run directory; returns metrics."""

    def __init__(self, cfg: Config, log=print, warn=warn_on_stderr):
        self.cfg = cfg
        self.log, self.warn = log, warn

    def run(self) -> dict:
        resolve.check(self.cfg)
        self.cfg = resolve.with_out(self.cfg)  # (a config made in Python, without an out)
        # TensorFlow reads TF_XLA_FLAGS when its runtime starts: the compile cache before anything else.
        self.compile_cache, self._compile_cache_said = None, None
        if self.cfg.run.compile_cache and self.cfg.run.xla is not False:
            self.compile_cache, said = compile_cache.enable(self.cfg.data.cache_dir or default_cache_dir())
            self._compile_cache_said = (f"{said} ({compile_cache.entries(self.compile_cache)} compiled functions "
                                        f"stored)" if self.compile_cache else said)
        # The strategy first: MultiWorkerMirroredStrategy must exist before TensorFlow's runtime starts.
        self.strategy = distribute.make(self.cfg.run.strategy, self.cfg.optim.batch_size, self.log)
        self.chief = distribute.is_chief(self.strategy)
        self.source_out = self.cfg.run.out  # where a resume reads from; the chief also writes there
        if not self.chief:  # other workers of a cluster write to a scratch directory
            self.cfg = self.cfg.replace("run", out=tempfile.mkdtemp(prefix="engine-worker-"), quiet=True)
            self.log = lambda *a, **k: None
        self.lock = None
        try:
            return self._run()
        finally:
            if self.lock is not None:
                self.lock.release()
            if not self.chief:
                shutil.rmtree(self.cfg.run.out, ignore_errors=True)

    def _run(self) -> dict:
        r = self.cfg.run
        self.replaced = None  # the run that --overwrite replaces, moved aside (layout.move_aside)
        with StopSignal(self.strategy) as self.stop:  # from the first step that makes anything
            created = False
            try:
                created, self.lock = prepare_run_dir(r) if self.chief else (False, None)
                self.log(self.cfg.summary())
                if self.chief:
                    for w in advice.run_warnings(self.cfg):
                        self.warn(w)
                self._setup()
            except BaseException as e:
                self._keep_replaced_run()
                if created:  # a start that failed leaves nothing behind
                    shutil.rmtree(r.out, ignore_errors=True)
                if isinstance(e, StopNow):
                    self._stopped_at_start(e.signame, created)
                raise
            try:
                return self._train()
            except StopNow as e:
                self._keep_replaced_run()
                self._stopped_at_once(e.signame)
            except BaseException:
                self._keep_replaced_run()
                raise

    def _keep_replaced_run(self):
        """A run that --overwrite was to replace comes back if the new one failed before its first
        checkpoint (and is dropped once it has one)."""
        if self.replaced is None:
            return
        if layout.has_checkpoint(self.cfg.run.out):
            layout.drop_aside(self.replaced)
        else:
            layout.put_back(self.cfg.run.out, self.replaced)
            self.warn(f"{self.cfg.run.out}: the run that --overwrite was to replace is kept, as it was")
        self.replaced = None

    def _stopped_at_start(self, signame: str, created: bool):
        kept = "" if created else f"; {self.cfg.run.out} is as it was"
        error = Interrupted if signame == "SIGINT" else Preempted
        raise error(f"{signame}: stopped during start-up, before the first training step: nothing to "
                    f"resume{kept}; run the command again to start") from None

    def _stopped_at_once(self, signame: str):
        last = self.ckpt.last
        hint = (f"continue from it with --resume --out {self.source_out}" if last else
                f"--resume --out {self.source_out} starts it again")
        raise Interrupted(f"{signame} twice: stopped at once at step {self.global_step}; the last checkpoint is "
                          f"{last or 'none'}: {hint}") from None

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self):
        cfg, r = self.cfg, self.cfg.run
        # A resumed run restores its newest checkpoint; one stopped before its first checkpoint starts
        # again from step 0 with its saved config.
        self.restoring = r.resume and layout.has_checkpoint(self.source_out)
        splits, train, val, test = load_splits(cfg, self.log)
        self.val_is_test = val[0] is test[0]  # the whole test split validates (no subset, no --val-split)
        if self._compile_cache_said:
            self.log(self._compile_cache_said)
        devices.tf32_override()  # NVIDIA_TF32_OVERRIDE=0: float32 is float32 here too (before the choice says which)
        # --amp auto / --xla auto become what they chose, in the config.json a resume reads
        self.speed = autotune.choose(cfg, self.strategy, splits.num_classes, cfg.data.cache_dir or default_cache_dir(),
                                     self.log)
        self.log(self.speed.describe())
        self.cfg = cfg = cfg.replace("run", amp=self.speed.amp, xla=self.speed.xla)
        r = cfg.run
        keras.utils.set_random_seed(r.seed)
        set_determinism(r.deterministic)
        self.policy = precision.apply(r.amp)
        resolve.check_replicas(cfg, self.policy, self.strategy.num_replicas_in_sync)
        self.t = build_training(cfg, splits.num_classes, len(train[0]), self.policy, self.strategy)
        self.model, self.optimizer, self.loop = self.t.model, self.t.optimizer, self.t.loop
        trainable = sum(math.prod(v.shape) for v in self.model.trainable_weights)
        self.log(f"model: {self.model.name}, {self.model.count_params():,} parameters ({trainable:,} trainable)")
        spec = models.get(cfg.model.model)
        if r.init_from and not self.restoring:
            self.log(f"weights from {warm_start(self.model, r.init_from)}")
        elif spec.data_init and cfg.model.data_init and not self.restoring:
            models.data_init(spec, self.model, train[0], self.t.preprocess)
        self.loop.begin()
        self.feature_seconds = None
        self.train_images, self.test_images, self.val_images = len(train[0]), len(test[0]), len(val[0])
        if self.t.feature_cache:
            train, val, test, self.feature_seconds = feature_cache.cache_splits(
                self.model, self.t.preprocess, train, val, test, self.val_is_test, self.log, r.quiet,
                cfg.data.limit_test)
        # Only now, with data and model in hand, does --out become a run (a failed start leaves none,
        # and leaves the run that --overwrite replaces as it was).
        if r.overwrite and not r.resume and self.chief:  # kept aside until the new run's first checkpoint
            self.replaced = layout.move_aside(r.out)
        if r.resume and not self.restoring:
            self.log(f"{self.source_out} stopped before its first checkpoint: starting it again from step 0 "
                     f"with its config")
        cfg.save(os.path.join(r.out, CONFIG_FILE))
        self.stop.training = True  # from here a signal stops at a step boundary, after a checkpoint
        write_json(layout.run_file(r.out, layout.CLASSES_FILE), splits.class_names)
        self.feeds = Feeds(self.strategy, train, val, test, self.val_is_test, cfg.optim.batch_size,
                           self.t.preprocess.size)
        self._open_checkpoints()

    def _open_checkpoints(self):
        r = self.cfg.run
        self.ckpt = Checkpoints(r.out, self.model, self.optimizer, self.loop.trackables(), r.keep_checkpoints,
                                self.loop.step, self.warn)
        if self.restoring:  # other workers read the chief's checkpoints
            self.ckpt.restore(None if self.chief else self.source_out)
        self.global_step = int(self.loop.step.numpy())
        self.start_epoch, self.step_in_epoch = divmod(self.global_step, self.t.length.steps_per_epoch)
        loss, correct, seen = (float(v) for v in self.ckpt.partial.numpy())
        self.resumed_stats = (loss, correct, int(seen)) if self.step_in_epoch and seen else None
        if self.restoring:
            self.history = History.resumed(r.out, self.source_out, self.start_epoch)
            self.log(f"resumed at step {self.global_step} (epoch {self.start_epoch + 1}, "
                     f"step {self.step_in_epoch})")
        else:
            self.history = History(r.out, [])

    # -- the outer loop ----------------------------------------------------------------------------
    def _train(self) -> dict:
        o, num_epochs = self.cfg.optim, self.t.length.num_epochs
        self.clock = Clock()
        self.clock.earlier("feature cache", self.feature_seconds)
        self.profile = ProfileWindow(self.cfg.run.profile, layout.run_file(self.cfg.run.out, layout.TB_DIR))
        stopped_early = False
        for epoch in range(self.start_epoch, num_epochs):
            self._end_epoch(epoch, self._train_epoch(epoch))
            if epoch + 1 < num_epochs and self.stop.requested():
                self._preempted(self.ckpt.last)
            if o.early_stop and epoch + 1 - self.history.best_epoch >= o.early_stop:
                self.log(f"early stop: no better validation accuracy for {o.early_stop} epochs "
                         f"(best {self.history.best_acc:.4f} at epoch {self.history.best_epoch})")
                stopped_early = True
                break
        return self._finish(stopped_early)

    def _train_epoch(self, epoch: int) -> dict:
        r = self.cfg.run
        skip, spe = self.step_in_epoch, self.t.length.steps_in_epoch(epoch)
        self.step_in_epoch = 0
        self.loop.begin_epoch(epoch)
        with self.clock.timed("input pipeline start/stop"):
            iterator = iter(self.feeds.train(r.seed, epoch, skip))
        bar = progress_bar(spe - skip, r.quiet, header=f"Epoch {epoch + 1}/{self.t.length.num_epochs}")
        stats, done = EpochStats(), skip
        if skip and self.resumed_stats:  # the steps of this epoch before the checkpoint it resumed from
            stats.loss, stats.correct, stats.seen = self.resumed_stats
        self.resumed_stats = None
        while done < spe:
            n = self._call_size(spe - done)
            self._train_call(iterator, n, stats)
            done += n
            if bar is not None:
                bar.update(done - skip, values=[("loss", stats.loss / stats.seen), ("accuracy", stats.correct / stats.seen),
                                                ("img/s", Rate(stats.img_s))])
            partial = (stats.loss, stats.correct, stats.seen)
            if done < spe and self.stop.requested():  # (at an epoch end: after the epoch is recorded)
                self._preempted(self.ckpt.save(self.global_step, partial))
            if r.checkpoint_every and self.global_step % r.checkpoint_every == 0 and done < spe:
                with self.clock.timed("checkpoint saves"):
                    self.ckpt.save(self.global_step, partial)
        summary = stats.summary()
        with self.clock.timed("input pipeline start/stop"):
            del iterator
        return summary

    def _call_size(self, left: int) -> int:
        """Steps in the next call: --steps-per-call, cut at the epoch's end and at a checkpoint step."""
        r = self.cfg.run
        n = min(r.steps_per_call, left)
        if r.checkpoint_every:
            n = min(n, r.checkpoint_every - self.global_step % r.checkpoint_every)
        return n

    def _train_call(self, iterator, n: int, stats: EpochStats) -> None:
        profiled = self.profile.before_call()
        t0 = time.perf_counter()
        loss, correct, bad, why = self.loop.train_calls(iterator, tf.constant(n, tf.int32))
        loss, correct, bad, why = float(loss), float(correct), int(bad), int(why)  # also waits for the device
        seconds = time.perf_counter() - t0
        if profiled:
            self._profiled(seconds)
        if bad >= 0:
            last = self.ckpt.last or "none (no checkpoint was written yet)"
            raise Diverged(f"{DIVERGED[why].format(loss=loss)} at step {bad + 1}; stopped. Last good checkpoint: {last}")
        self.global_step += n
        images = n * self.cfg.optim.batch_size
        timed = not profiled and self.clock.train_call(images, seconds)
        stats.add(images, loss, correct, seconds if timed else None)

    def _profiled(self, seconds: float) -> None:
        self.clock.phases["profiled calls"] += seconds
        done = self.profile.after_call()
        if done:
            self.log(f"profile of {self.cfg.run.profile} train calls: {done} (TensorBoard's Profile tab)")

    def _preempted(self, checkpoint: str):
        signame = self.stop.seen or "SIGTERM"
        error = Interrupted if signame == "SIGINT" else Preempted
        raise error(f"{signame}: stopped at step {self.global_step} after saving {checkpoint}; continue with "
                    f"--resume --out {self.source_out}")

    def _end_epoch(self, epoch: int, stats: dict):
        # a loss that exploded and stayed finite: stop before this epoch is evaluated or checkpointed
        check_epoch_loss(stats["loss"], epoch + 1, self.loop.cfg.num_classes, self.cfg.optim, self.ckpt.last)
        with self.clock.timed(clock.EVALUATION):
            val_loss, val_acc = self.feeds.evaluate(self.loop, "val")
        entry = {"epoch": epoch + 1, "loss": stats["loss"], "accuracy": stats["accuracy"],
                 "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr(self.optimizer),
                 "img_s": stats["img_s"], "seconds": stats["seconds"]}
        self.ckpt.epoch.assign(epoch + 1)
        improves = self.history.improves(val_acc)
        # The history first: a crash before the checkpoint resumes from the one before, and a resume
        # keeps only the history up to its checkpoint, so no epoch is missing from either.
        self.history.add(entry)
        with self.clock.timed("checkpoint saves"):
            if improves:
                self.ckpt.save_best(self.global_step)
            self.ckpt.save(self.global_step)
        if self.replaced is not None:  # the new run has a checkpoint: the old one goes
            self._keep_replaced_run()
        self.log(f"epoch {epoch + 1}/{self.t.length.num_epochs}: loss {entry['loss']:.4f} "
                 f"acc {entry['accuracy']:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f} "
                 f"lr {entry['lr']:.3g} {entry['img_s']:.1f} img/s {entry['seconds']:.1f}s")

    # -- end of run ------------------------------------------------------------------------------
    def _finish(self, stopped_early: bool) -> dict:
        r = self.cfg.run
        if self.profile.stop():  # the run ended inside the window
            self.log(f"profile of the train calls after the first: {layout.run_file(r.out, layout.TB_DIR)}")
        with self.clock.timed("curves plot"):
            plots.curves(self.history.entries, layout.run_file(r.out, layout.CURVES_FILE),
                         title=f"{self.cfg.model.model} ({r.out})")
        test_loss, test_acc, tta_acc = self._test()
        wall, breakdown = self.clock.breakdown()
        metrics = self._metrics(test_loss, test_acc, tta_acc, stopped_early, wall, breakdown)
        write_json(layout.run_file(r.out, layout.METRICS_FILE), metrics.to_dict())
        self.log(f"wall time {wall:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in breakdown.items()))
        tta = self.cfg.model.tta
        with_tta = f", with TTA level {tta}: {tta_acc:.4f}" if tta else ""
        self.log(f"test accuracy {test_acc:.4f}{with_tta} (best val {self.history.best_acc:.4f} at epoch "
                 f"{self.history.best_epoch}); run in {r.out}")
        return metrics.to_dict()

    def _test(self):
        """(test loss, test accuracy, accuracy with TTA or None) of the final weights."""
        last = self.history.last
        if self.val_is_test and last and last["epoch"] == int(self.ckpt.epoch.numpy()):
            test_loss, test_acc = last["val_loss"], last["val_accuracy"]  # same weights, same images
        else:
            with self.clock.timed(clock.EVALUATION):
                test_loss, test_acc = self.feeds.evaluate(self.loop, "test")
        tta_acc = None
        if self.cfg.model.tta:
            with self.clock.timed(clock.TTA):
                tta_acc = self.feeds.evaluate(self.loop, "test", self.cfg.model.tta)[1]
        return test_loss, test_acc, tta_acc

    def _compile_cache_used(self, xla: bool) -> dict | None:
        """The compile cache's directory and what it holds after the run. An XLA run that left it
        empty ran in a process whose TensorFlow runtime had started before the cache was set (a
        notebook that used TensorFlow first): TensorFlow ignored it, and the run says so."""
        if not self.compile_cache:
            return None
        n = compile_cache.entries(self.compile_cache)
        if xla and n == 0 and self.chief:
            self.warn(f"the XLA compile cache was not used: TensorFlow had started before it was set; "
                      f"set TF_XLA_FLAGS={compile_cache.FLAG}={self.compile_cache} before importing it")
            return None
        return {"directory": self.compile_cache, "entries": n}

    def _metrics(self, test_loss, test_acc, tta_acc, stopped_early, wall, breakdown) -> layout.Metrics:
        r, o = self.cfg.run, self.cfg.optim
        return layout.Metrics(
            test_accuracy=test_acc, test_loss=test_loss, tta=self.cfg.model.tta, test_accuracy_tta=tta_acc,
            best_epoch=self.history.best_epoch, best_val_accuracy=self.history.best_acc,
            epochs_run=len(self.history.entries), stopped_early=stopped_early, steps=self.global_step,
            train_img_s=self.clock.img_s, train_seconds=self.clock.seconds, wall_seconds=wall,
            wall_breakdown=breakdown, train_images=self.train_images, test_images=self.test_images,
            val_is_test=self.val_is_test, val_images=self.val_images, policy=self.policy, xla=r.xla,
            steps_per_call=r.steps_per_call, batch_size=o.batch_size, replicas=self.strategy.num_replicas_in_sync,
            device=devices.device_name(), tensorflow=tf.__version__, feature_cache=self.t.feature_cache,
            feature_seconds=self.feature_seconds, speed_choice=self.speed.to_dict(),
            compile_cache=self._compile_cache_used(r.xla))
