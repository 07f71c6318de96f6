"""The outer loop of a run: epochs, evaluation, checkpoints, history, stop conditions, metrics.

Everything it steps is assembled elsewhere (build.py), every config rule is checked before it starts
(resolve.check), and the run directory's policy is run_dir.py's. What it writes:

    config.json  classes.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras
import tensorflow as tf

from engine import data, devices, models, plots
from engine.config import CONFIG_FILE, Config, default_cache_dir
from engine.contract import inference_batch
from engine.data.pipeline import Pipeline
from engine.errors import Diverged, EngineError, Preempted
from engine.files import write_json
from engine.train import advice, distribute, feature_cache, precision, resolve
from engine.train.build import build_training
from engine.train.clock import Clock
from engine.train.optim import current_lr
from engine.train.run_dir import Checkpoints, History, prepare_run_dir


class StopSignal:
    """SIGTERM (a scheduler's preemption notice), acted on at the next step boundary; in a cluster
    any worker's SIGTERM stops every worker at the same step."""

    def __init__(self, strategy):
        self.strategy, self.seen, self._any_worker, self._previous = strategy, False, None, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_sigterm(self, signum, frame):
        self.seen = True

    def requested(self) -> bool:
        if not distribute.is_multiworker(self.strategy):
            return self.seen
        if self._any_worker is None:
            s = self.strategy
            self._any_worker = tf.function(lambda flag: s.reduce(
                "SUM", s.run(lambda f: tf.identity(f), args=(flag,)), axis=None))
        return bool(self._any_worker(tf.constant(int(self.seen))) > 0)


class Trainer:
    """One run: `Trainer(cfg).run()` trains, checkpoints and writes the run directory; returns metrics."""

    def __init__(self, cfg: Config, log=print):
        self.cfg = cfg
        self.log = log

    def run(self) -> dict:
        resolve.check(self.cfg)
        # The strategy first: MultiWorkerMirroredStrategy must exist before TensorFlow's runtime starts.
        self.strategy = distribute.make(self.cfg.run.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.source_out = self.cfg.run.out  # where a resume reads from; the chief also writes there
        if not self.chief:  # other workers of a cluster write to a scratch directory
            self.cfg = self.cfg.replace("run", out=tempfile.mkdtemp(prefix="engine-worker-"), quiet=True)
            self.log = lambda *a, **k: None
        try:
            return self._run()
        finally:
            if not self.chief:
                shutil.rmtree(self.cfg.run.out, ignore_errors=True)

    def _run(self) -> dict:
        r = self.cfg.run
        created = prepare_run_dir(r) if self.chief else False
        self.log(self.cfg.summary())
        if self.chief:
            for w in advice.speed_warnings(r.amp, r.xla, self.cfg.model.model):
                print(f"warning: {w}", file=sys.stderr)
        try:
            self._setup()
        except BaseException:
            if created:  # a start that failed leaves nothing behind
                shutil.rmtree(r.out, ignore_errors=True)
            raise
        with StopSignal(self.strategy) as self.stop:
            return self._train()

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self):
        cfg, r = self.cfg, self.cfg.run
        splits, (xtr, ytr), (xva, yva), (xte, yte) = self._load_data()
        keras.utils.set_random_seed(r.seed)
        set_determinism(r.deterministic)
        self.policy = precision.apply(r.amp)
        resolve.check_batch_split(cfg.optim.batch_size, self.strategy.num_replicas_in_sync)
        self.t = build_training(cfg, splits.num_classes, len(xtr), self.policy, self.strategy)
        self.model, self.optimizer, self.loop = self.t.model, self.t.optimizer, self.t.loop
        spec = models.get(cfg.model.model)
        if spec.data_init and cfg.model.data_init and not r.resume:
            models.data_init(spec, self.model, xtr, self.t.preprocess)
        # Only now, with data and model in hand, does --out become a run (a failed start leaves none).
        cfg.save(os.path.join(r.out, CONFIG_FILE))
        write_json(os.path.join(r.out, "classes.json"), splits.class_names)
        self.loop.begin()
        self.feature_seconds = None
        if self.t.feature_cache:
            xtr, xva, xte = self._cache_features(xtr, xva, xte)
        self.train_pipe, self.val_pipe = Pipeline(xtr, ytr), Pipeline(xva, yva)
        self.test_pipe = self.val_pipe if self.val_is_test else Pipeline(xte, yte)
        # One GPU, no distribution: stage uint8 batches in GPU memory ahead of the step.
        self.stage_on = "/gpu:0" if devices.gpus() and self.strategy.num_replicas_in_sync == 1 else None
        self._open_checkpoints()
        self.train_images, self.test_images = len(xtr), len(xte)

    def _load_data(self):
        d, o = self.cfg.data, self.cfg.optim
        splits = data.load(d.data, d.cache_dir or default_cache_dir(), log=self.log)
        train, val, test = data.prepare(splits, d.limit, d.limit_test, d.val_split)
        if len(train[0]) < o.batch_size:
            raise EngineError(f"--batch-size {o.batch_size} is larger than the {len(train[0])} training images")
        self.val_is_test = d.val_split == 0
        return splits, train, val, test

    def _open_checkpoints(self):
        r = self.cfg.run
        self.ckpt = Checkpoints(r.out, self.model, self.optimizer, self.loop.trackables(), r.keep_checkpoints)
        if r.resume:  # other workers read the chief's checkpoints
            self.ckpt.restore(None if self.chief else self.source_out)
        self.global_step = int(self.optimizer.iterations.numpy())
        self.start_epoch, self.step_in_epoch = divmod(self.global_step, self.t.length.steps_per_epoch)
        if r.resume:
            self.history = History.resumed(r.out, self.source_out, self.start_epoch)
            self.log(f"resumed at step {self.global_step} (epoch {self.start_epoch + 1}, "
                     f"step {self.step_in_epoch})")
        else:
            self.history = History(r.out, [])

    def _cache_features(self, xtr, xva, xte):
        t0 = time.perf_counter()
        base, prep = self.model.get_layer(models.BACKBONE), self.t.preprocess
        ftr, fva = feature_cache.extract(base, xtr, prep), feature_cache.extract(base, xva, prep)
        fte = fva if self.val_is_test else feature_cache.extract(base, xte, prep)
        self.feature_seconds = time.perf_counter() - t0
        n = len(xtr) + len(xva) + (0 if self.val_is_test else len(xte))
        self.log(f"feature cache: {n} images through the frozen backbone in {self.feature_seconds:.1f}s; "
                 f"the head trains on {ftr.shape[1:]} features ({ftr.nbytes / 2**20:.0f} MiB in memory)")
        return ftr, fva, fte

    # -- the outer loop ----------------------------------------------------------------------------
    def _train(self) -> dict:
        o, num_epochs = self.cfg.optim, self.t.length.num_epochs
        self.clock = Clock()
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
        r, batch = self.cfg.run, self.cfg.optim.batch_size
        skip, spe = self.step_in_epoch, self.t.length.steps_in_epoch(epoch)
        self.step_in_epoch = 0
        self.loop.begin_epoch(epoch)
        with self.clock.timed("input pipeline start/stop"):
            iterator = iter(self._train_data(batch, r.seed, epoch, skip))
        bar = None if r.quiet else keras.utils.Progbar(spe - skip, stateful_metrics=["loss", "accuracy", "img/s"])
        e = {"loss": 0.0, "correct": 0.0, "seen": 0, "images": 0, "seconds": 0.0}
        t0 = prev = time.perf_counter()
        done = skip
        while done < spe:
            n = self._call_size(spe - done)
            self._train_call(iterator, n, e, prev)
            done += n
            now = time.perf_counter()
            ips = e["images"] / e["seconds"] if e["images"] else e["seen"] / (now - t0)
            if bar is not None:
                bar.update(done - skip, values=[("loss", e["loss"] / e["seen"]),
                                                ("accuracy", e["correct"] / e["seen"]), ("img/s", round(ips, 1))])
            if done < spe and self.stop.requested():  # (at an epoch end: after the epoch is recorded)
                self._preempted(self.ckpt.save(self.global_step))
            if r.checkpoint_every and self.global_step % r.checkpoint_every == 0 and done < spe:
                with self.clock.timed("checkpoints"):
                    self.ckpt.save(self.global_step)
            prev = time.perf_counter()  # checkpoint writing is not training time
        seconds = time.perf_counter() - t0
        with self.clock.timed("input pipeline start/stop"):
            del iterator
        return {"loss": e["loss"] / e["seen"], "accuracy": e["correct"] / e["seen"], "img_s": ips,
                "seconds": seconds}

    def _call_size(self, left: int) -> int:
        """Steps in the next call: --steps-per-call, cut at the epoch's end and at a checkpoint step."""
        r = self.cfg.run
        n = min(r.steps_per_call, left)
        if r.checkpoint_every:
            n = min(n, r.checkpoint_every - self.global_step % r.checkpoint_every)
        return n

    def _train_call(self, iterator, n: int, e: dict, prev: float) -> None:
        loss, correct, bad = self.loop.train_calls(iterator, tf.constant(n, tf.int32))
        loss, correct, bad = float(loss), float(correct), int(bad)  # also waits for the device
        seconds = time.perf_counter() - prev
        if bad >= 0 and not self.t.loss_scaling:
            last = self.ckpt.last
            raise Diverged(f"loss became {loss:.3g} at step {bad + 1}; stopped. Last good "
                           f"checkpoint: {last or 'none (no checkpoint was written yet)'}")
        self.global_step += n
        images = n * self.cfg.optim.batch_size
        e["seen"] += images
        e["loss"] += loss
        e["correct"] += correct
        if self.clock.train_call(images, seconds):
            e["images"] += images
            e["seconds"] += seconds

    def _train_data(self, batch: int, seed: int, epoch: int, skip: int):
        s = self.strategy
        if s.num_replicas_in_sync == 1:
            return s.experimental_distribute_dataset(
                self.train_pipe.train(batch, seed, epoch, skip_batches=skip, device=self.stage_on))
        return s.distribute_datasets_from_function(lambda ctx: self.train_pipe.train(
            batch, seed, epoch, skip, shard=distribute.shard(ctx.num_replicas_in_sync, ctx.input_pipeline_id,
                                                             ctx.num_input_pipelines, batch)))

    def _evaluate(self, pipe, tta: int = 0):
        s, batch = self.strategy, max(self.cfg.optim.batch_size, inference_batch(self.t.preprocess.size))
        if s.num_replicas_in_sync == 1:
            return self.loop.evaluate(s.experimental_distribute_dataset(pipe.eval(batch)), tta)
        per_replica = -(-batch // s.num_replicas_in_sync)
        return self.loop.evaluate(s.distribute_datasets_from_function(
            lambda ctx: pipe.eval(per_replica, (ctx.input_pipeline_id, ctx.num_input_pipelines))), tta)

    def _preempted(self, checkpoint: str):
        raise Preempted(f"SIGTERM: stopped at step {self.global_step} after saving {checkpoint}; continue with "
                        f"--resume --out {self.source_out}")

    def _end_epoch(self, epoch: int, stats: dict):
        with self.clock.timed("evaluation"):
            val_loss, val_acc = self._evaluate(self.val_pipe)
        entry = {"epoch": epoch + 1, "loss": stats["loss"], "accuracy": stats["accuracy"],
                 "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr(self.optimizer),
                 "img_s": stats["img_s"], "seconds": stats["seconds"]}
        self.ckpt.epoch.assign(epoch + 1)
        with self.clock.timed("checkpoints"):
            self.ckpt.save(self.global_step)
            if self.history.improves(val_acc):
                self.ckpt.save_best(self.global_step)
        self.history.add(entry)
        self.log(f"epoch {epoch + 1}/{self.t.length.num_epochs}: loss {entry['loss']:.4f} "
                 f"acc {entry['accuracy']:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f} "
                 f"lr {entry['lr']:.3g} {entry['img_s']:.1f} img/s {entry['seconds']:.1f}s")

    # -- end of run ------------------------------------------------------------------------------
    def _finish(self, stopped_early: bool) -> dict:
        r = self.cfg.run
        with self.clock.timed("curves.png"):
            plots.curves(self.history.entries, os.path.join(r.out, "curves.png"),
                         title=f"{self.cfg.model.model} ({r.out})")
        test_loss, test_acc, tta_acc = self._test()
        wall, breakdown = self.clock.breakdown()
        metrics = self._metrics(test_loss, test_acc, tta_acc, stopped_early, wall, breakdown)
        write_json(os.path.join(r.out, "metrics.json"), metrics)
        self.log(f"wall time {wall:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in breakdown.items()))
        tta = self.cfg.model.tta
        with_tta = f", with TTA level {tta}: {tta_acc:.4f}" if tta else ""
        self.log(f"test accuracy {test_acc:.4f}{with_tta} (best val {self.history.best_acc:.4f} at epoch "
                 f"{self.history.best_epoch}); run in {r.out}")
        return metrics

    def _test(self):
        """(test loss, test accuracy, accuracy with TTA or None) of the final weights."""
        last = self.history.last
        if self.val_is_test and last and last["epoch"] == int(self.ckpt.epoch.numpy()):
            test_loss, test_acc = last["val_loss"], last["val_accuracy"]  # same weights, same images
        else:
            with self.clock.timed("evaluation"):
                test_loss, test_acc = self._evaluate(self.test_pipe)
        tta_acc = None
        if self.cfg.model.tta:
            with self.clock.timed("test-time augmentation"):
                tta_acc = self._evaluate(self.test_pipe, self.cfg.model.tta)[1]
        return test_loss, test_acc, tta_acc

    def _metrics(self, test_loss, test_acc, tta_acc, stopped_early, wall, breakdown) -> dict:
        r, o = self.cfg.run, self.cfg.optim
        return {
            "test_accuracy": test_acc, "test_loss": test_loss, "tta": self.cfg.model.tta,
            "test_accuracy_tta": tta_acc, "best_epoch": self.history.best_epoch,
            "best_val_accuracy": self.history.best_acc, "epochs_run": len(self.history.entries),
            "stopped_early": stopped_early, "steps": self.global_step, "train_img_s": self.clock.img_s,
            "train_seconds": self.clock.seconds, "wall_seconds": wall, "wall_breakdown": breakdown,
            "train_images": self.train_images, "test_images": self.test_images,
            "val_is_test": self.val_is_test, "policy": self.policy, "xla": r.xla,
            "steps_per_call": r.steps_per_call, "batch_size": o.batch_size,
            "device": devices.device_name(), "tensorflow": tf.__version__,
            "feature_cache": self.t.feature_cache, "feature_seconds": self.feature_seconds,
        }


def set_determinism(on: bool) -> None:
    """Op determinism is process-wide in TensorFlow; set it per run so that runs in one process
    (tests, notebooks) do not inherit it from each other."""
    from tensorflow.python.framework import config as tf_config
    if on:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
