"""Epochs, LR schedules, early stopping, checkpoint/resume, history, TensorBoard and progress.

The compiled mechanics live in loop.py; this module decides what runs when and what is written to
the run directory:

    config.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/
"""
from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras
import tensorflow as tf

from engine import data, distribute, features, models, plots, precision
from engine.config import CONFIG_FILE, Config, default_cache_dir, is_run_dir
from engine.errors import EXIT_DIVERGED, EXIT_PREEMPTED, EngineError
from engine.files import write_json
from engine.loop import StepConfig, TrainLoop
from engine.sgd import TorchSGD
from engine.models.layers import MaxPool2

RUN_FILES = (CONFIG_FILE, "classes.json", "history.json", "metrics.json", "curves.png", "checkpoints", "tb")


class Diverged(EngineError):
    exit_code = EXIT_DIVERGED


class Preempted(EngineError):
    """SIGTERM (a scheduler's preemption notice): the run checkpointed at a step boundary and stopped."""
    exit_code = EXIT_PREEMPTED
    label = "preempted"


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear interpolation between (step, lr) knots; flat outside them. XLA-friendly: a sum of
    clipped ramps, no data-dependent control flow."""

    def __init__(self, steps, values):
        self.steps = [float(s) for s in steps]
        self.values = [float(v) for v in values]

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        lr = tf.constant(self.values[0])
        for (x0, x1), (y0, y1) in zip(zip(self.steps, self.steps[1:]), zip(self.values, self.values[1:])):
            if x1 > x0:
                lr += (y1 - y0) / (x1 - x0) * tf.clip_by_value(s - x0, 0.0, x1 - x0)
        return lr

    def get_config(self):
        return {"steps": self.steps, "values": self.values}


def total_steps(o, steps_per_epoch: int) -> int:
    """Steps in a run of `o.epochs` (a fraction ends the last epoch early)."""
    return max(1, math.ceil(round(o.epochs * steps_per_epoch, 6)))


def make_schedule(o, steps_per_epoch: int):
    total = total_steps(o, steps_per_epoch)
    warm = int(round(o.warmup * total))
    # Always a schedule object, never a float: Keras keeps a float LR in a variable that a checkpoint
    # restore would overwrite, so a resumed run would ignore a changed --lr.
    if o.schedule == "constant":
        return PiecewiseLinear([0], [o.lr])
    if o.schedule == "step":
        every = o.lr_step_epochs * steps_per_epoch
        bounds = list(range(every, total, every)) if every > 0 else []
        if not bounds:
            return PiecewiseLinear([0], [o.lr])
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [o.lr * o.lr_decay ** i for i in range(len(bounds) + 1)])
    if o.schedule == "cosine":
        if warm:
            return keras.optimizers.schedules.CosineDecay(0.0, max(total - warm, 1), warmup_target=o.lr,
                                                          warmup_steps=warm)
        return keras.optimizers.schedules.CosineDecay(o.lr, max(total, 1))
    if o.schedule == "onecycle":  # linear up to the peak and down again (Page's ResNet-9, airbench)
        return PiecewiseLinear([0, warm, total], [o.lr * (o.lr_start if warm else 1.0), o.lr, o.lr * o.lr_end])
    raise EngineError(f"unknown schedule {o.schedule!r}")


def make_optimizer(o, schedule):
    """The Keras optimizer. With --weight-decay-mode l2 the decay is not the optimizer's: the train
    step adds it to the gradients (TrainLoop), as it does the BatchNorm-bias LR scale."""
    decoupled = o.weight_decay if o.weight_decay_mode == "decoupled" else 0.0
    kw = dict(learning_rate=schedule, weight_decay=decoupled or None)
    if o.optimizer == "sgd":
        sgd = TorchSGD if o.sgd_momentum == "pytorch" else keras.optimizers.SGD
        opt = sgd(momentum=o.momentum, nesterov=o.nesterov, **kw)
    elif o.optimizer == "adam":
        opt = keras.optimizers.Adam(**kw)
    elif o.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(momentum=o.momentum, **kw)
    else:
        raise EngineError(f"unknown optimizer {o.optimizer!r}")
    if decoupled:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def current_lr(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(inner.learning_rate)  # Keras evaluates the schedule at the current step


# ---------------------------------------------------------------------------------------------
# Run directory


def prepare_run_dir(run) -> bool:
    """Check --out against --resume/--overwrite before any work starts; never lose a run. Returns
    whether --out was created here (a start that fails removes it again)."""
    out = run.out
    created = not os.path.exists(out)
    if run.resume and run.overwrite:
        raise EngineError("--resume and --overwrite contradict each other; pass one")
    has_run = is_run_dir(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise EngineError(f"--out {out} is a file, not a directory")
    if run.resume:
        if not has_run:
            raise EngineError(f"nothing to resume: {out} holds no engine run")
    elif has_run and not run.overwrite:
        raise EngineError(f"{out} already holds a run; pass --resume to continue it or --overwrite "
                          f"to replace it")
    elif os.path.isdir(out) and os.listdir(out) and not has_run and not run.overwrite:
        raise EngineError(f"{out} is not empty and holds no engine run; choose another --out")
    if run.overwrite:
        for name in RUN_FILES:  # only what a run writes; anything else of the user's stays
            p = os.path.join(out, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out) as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise EngineError(f"cannot write to --out {out}: {e.strerror or e}") from None
    return created


def build_training(cfg: Config, num_classes: int, train_size: int, policy: str, strategy=None):
    """Model, optimizer (with its schedule and loss scaling) and TrainLoop for a config and a
    training set of `train_size` images. The policy must already be applied (precision.apply) so
    that layers pick it up."""
    steps_per_epoch = train_size // cfg.optim.batch_size
    strategy = strategy or tf.distribute.get_strategy()
    o = cfg.optim
    spec = models.get(cfg.model.model)
    size = models.input_size(spec, cfg.model.upsample)
    with strategy.scope():
        model = models.build(spec.name, size, num_classes, cfg.model)
        if not cfg.model.data_init:  # what the data init would set and freeze trains instead
            for v in model.weights:
                v.trainable = v.trainable or v.path in spec.data_init_frozen
        optimizer = precision.wrap_optimizer(make_optimizer(o, make_schedule(o, steps_per_epoch)), policy)
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization) and strategy.num_replicas_in_sync > 1:
                layer.synchronized = True  # BN statistics over the global batch, as one replica would
            if isinstance(layer, MaxPool2):
                layer.xla_training = cfg.run.xla  # its XLA-friendly gradient form
        cache = features.applicable(cfg, model)
        trained = features.split(model)[1] if cache else model  # the head alone trains on cached features
    step_cfg = StepConfig(
        num_classes=num_classes, global_batch=o.batch_size, size=size,
        normalization=spec.normalization, upsample_method=cfg.model.upsample_method,
        crop_pad=cfg.model.crop_pad, pad_mode=cfg.model.pad_mode, flip=cfg.model.flip,
        train_size=train_size, steps_per_epoch=steps_per_epoch, label_smoothing=o.label_smoothing,
        l2=o.weight_decay if o.weight_decay_mode == "l2" else 0.0, bias_lr_scale=o.bias_lr_scale,
        lookahead=o.lookahead, total_steps=total_steps(o, steps_per_epoch),
        seed=cfg.run.seed, xla=cfg.run.xla, loss_scaling=precision.needs_loss_scaling(policy),
        features=cache)
    return model, optimizer, TrainLoop(trained, optimizer, step_cfg, strategy)


# ---------------------------------------------------------------------------------------------


class Trainer:
    """One run: `Trainer(cfg).run()` trains, checkpoints and writes the run directory; returns metrics."""

    def __init__(self, cfg: Config, log=print):
        self.cfg = cfg
        self.log = log

    def run(self) -> dict:
        cfg, r, o = self.cfg, self.cfg.run, self.cfg.optim
        self.spec = models.get(cfg.model.model)
        models.input_size(self.spec, cfg.model.upsample)  # size and option checks before any work
        models.check_options(self.spec, cfg.model)
        if o.batch_size < 1 or r.steps_per_call < 1 or o.epochs <= 0:
            raise EngineError("--batch-size and --steps-per-call must be at least 1, --epochs above 0")
        if o.bias_lr_scale != 1.0 and o.optimizer == "adam":
            raise EngineError("--bias-lr-scale has no effect with adam (it normalises gradient scale); "
                              "use sgd or rmsprop, or --bias-lr-scale 1")
        if r.deterministic and r.xla:
            raise EngineError("--deterministic cannot be combined with --xla: XLA has no deterministic "
                              "max-pool gradient; drop one of them")
        # The strategy first: MultiWorkerMirroredStrategy must exist before TensorFlow's runtime starts.
        self.strategy = distribute.make(r.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.source_out = r.out  # where a resume reads from; the chief also writes there
        if not self.chief:  # other workers of a cluster write to a scratch directory
            self.cfg = cfg = cfg.replace("run", out=tempfile.mkdtemp(prefix="engine-worker-"), quiet=True)
            r = cfg.run
            self.log = lambda *a, **k: None
        try:
            return self._run()
        finally:
            if not self.chief:
                shutil.rmtree(r.out, ignore_errors=True)

    def _run(self) -> dict:
        cfg, r = self.cfg, self.cfg.run
        created = prepare_run_dir(r) if self.chief else False
        self.log(cfg.summary())
        if self.chief:
            for w in precision.speed_warnings(r.amp, r.xla, self.spec.name, self.spec.cpu_xla_speedups):
                print(f"warning: {w}", file=sys.stderr)
        try:
            self._setup()
        except BaseException:
            if created:  # a start that failed leaves nothing behind
                shutil.rmtree(r.out, ignore_errors=True)
            raise

        self.sigterm = False
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if on_main else None
        try:
            return self._train()
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum, frame):
        self.sigterm = True  # acted on at the next step boundary

    def _train(self) -> dict:
        o = self.cfg.optim
        self.wall0 = time.perf_counter()
        self.timed_images, self.timed_seconds = 0, 0.0
        self.phases = collections.Counter()  # wall seconds outside the timed training steps, by phase
        self.warm = False
        stopped_early = False
        for epoch in range(self.start_epoch, self.num_epochs):
            stats = self._train_epoch(epoch)
            self._end_epoch(epoch, stats)
            if epoch + 1 < self.num_epochs and self._stop_requested():
                self._preempted(self.manager.latest_checkpoint)
            if o.early_stop and epoch + 1 - self.best_epoch >= o.early_stop:
                self.log(f"early stop: no better validation accuracy for {o.early_stop} epochs "
                         f"(best {self.best_acc:.4f} at epoch {self.best_epoch})")
                stopped_early = True
                break
        return self._finish(stopped_early)

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self):
        cfg, r, o = self.cfg, self.cfg.run, self.cfg.optim
        splits = data.load(cfg.data.data, cfg.data.cache_dir or default_cache_dir(), log=self.log)
        (xtr, ytr), (xva, yva), (xte, yte) = data.prepare(splits, cfg.data.limit, cfg.data.limit_test,
                                                          cfg.data.val_split)
        if len(xtr) < o.batch_size:
            raise EngineError(f"--batch-size {o.batch_size} is larger than the {len(xtr)} training images")
        self.val_is_test = cfg.data.val_split == 0

        keras.utils.set_random_seed(r.seed)
        set_determinism(r.deterministic)
        self.policy = precision.apply(r.amp)
        strategy = self.strategy
        distribute.shard(strategy.num_replicas_in_sync, 0, 1, o.batch_size)  # the batch splits evenly
        self.steps_per_epoch = len(xtr) // o.batch_size
        self.total_steps = total_steps(o, self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.model, self.optimizer, self.loop = build_training(
            cfg, splits.num_classes, len(xtr), self.policy, strategy)
        if self.spec.data_init and cfg.model.data_init and not r.resume:
            self.spec.data_init(self.model, xtr, self._preprocess_fn())
        # Only now, with data and model in hand, does --out become a run (a failed start leaves none).
        cfg.save(os.path.join(r.out, CONFIG_FILE))
        write_json(os.path.join(r.out, "classes.json"), splits.class_names)
        if self.loop.lookahead is not None:
            self.loop.lookahead.reset()
        self.feature_seconds = None
        if self.loop.cfg.features:
            xtr, xva, xte = self._cache_features(xtr, xva, xte)
        self.train_pipe, self.val_pipe = data.Pipeline(xtr, ytr), data.Pipeline(xva, yva)
        self.test_pipe = self.val_pipe if self.val_is_test else data.Pipeline(xte, yte)
        # One GPU, no distribution: stage uint8 batches in GPU memory ahead of the step.
        self.stage_on = "/gpu:0" if precision.gpus() and strategy.num_replicas_in_sync == 1 else None

        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        ckpt_dir = os.path.join(r.out, "checkpoints")
        ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch_var)
        if self.loop.lookahead is not None:
            ckpt.lookahead = self.loop.lookahead.slow
        self.manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=max(r.keep_checkpoints, 1),
                                                  step_counter=self.optimizer.iterations)
        self.best = tf.train.CheckpointManager(tf.train.Checkpoint(model=self.model),
                                               os.path.join(ckpt_dir, "best"), max_to_keep=1)
        history = []
        if r.resume:  # other workers read the chief's checkpoints
            source = self.manager if self.chief else tf.train.CheckpointManager(
                ckpt, os.path.join(self.source_out, "checkpoints"), max_to_keep=max(r.keep_checkpoints, 1))
            self._restore(ckpt, source)
            history = _read_json(os.path.join(self.source_out, "history.json"), [])
        self.global_step = int(self.optimizer.iterations.numpy())
        self.start_epoch, self.step_in_epoch = divmod(self.global_step, self.steps_per_epoch)
        self.history = [h for h in history if h["epoch"] <= self.start_epoch]
        if r.resume:
            self.log(f"resumed at step {self.global_step} (epoch {self.start_epoch + 1}, "
                     f"step {self.step_in_epoch})")
        self.best_acc = max((h["val_accuracy"] for h in self.history), default=-1.0)
        self.best_epoch = (max(self.history, key=lambda h: h["val_accuracy"])["epoch"]
                           if self.history else 0)
        self.writer = tf.summary.create_file_writer(os.path.join(r.out, "tb"))
        self.train_images, self.test_images = len(xtr), len(xte)

    # -- one epoch -------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict:
        r, o = self.cfg.run, self.cfg.optim
        batch, skip = o.batch_size, self.step_in_epoch
        spe = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)  # last may be short
        self.step_in_epoch = 0
        for path, epochs in self.spec.train_epochs.items():
            self.loop.set_trainable(self._variable(path), epoch < epochs)
        with self._timed("input pipeline start/stop"):
            iterator = iter(self._train_data(batch, r.seed, epoch, skip))
        bar = None if r.quiet else keras.utils.Progbar(
            spe - skip, stateful_metrics=["loss", "accuracy", "img/s"])
        loss_sum = correct = 0.0
        seen = epoch_images = 0
        epoch_seconds = 0.0
        t0 = prev = time.perf_counter()
        done = skip
        while done < spe:
            n = min(r.steps_per_call, spe - done)
            if r.checkpoint_every:
                n = min(n, r.checkpoint_every - self.global_step % r.checkpoint_every)
            l, c, bad = self.loop.train_calls(iterator, tf.constant(n, tf.int32))
            l, c, bad = float(l), float(c), int(bad)  # also waits for the device
            now = time.perf_counter()
            if bad >= 0 and not self.loop.cfg.loss_scaling:
                last = self.manager.latest_checkpoint
                raise Diverged(f"loss became {l:.3g} at step {bad + 1}; stopped. Last good "
                               f"checkpoint: {last or 'none (no checkpoint was written yet)'}")
            done += n
            self.global_step += n
            seen += n * batch
            loss_sum += l
            correct += c
            if self.warm:  # the run's first call (tracing, compilation) is not timed
                epoch_images += n * batch
                epoch_seconds += now - prev
            else:
                self.phases["first call (tracing, compilation)"] += now - prev
            self.warm = True
            prev = now
            ips = epoch_images / epoch_seconds if epoch_images else seen / (now - t0)
            if bar is not None:
                bar.update(done - skip, values=[("loss", loss_sum / seen), ("accuracy", correct / seen),
                                                ("img/s", round(ips, 1))])
            if done < spe and self._stop_requested():  # (at an epoch end: after the epoch is recorded)
                self._preempted(self.manager.save(checkpoint_number=self.global_step))
            if r.checkpoint_every and self.global_step % r.checkpoint_every == 0 and done < spe:
                with self._timed("checkpoints"):
                    self.manager.save(checkpoint_number=self.global_step)
                prev = time.perf_counter()  # checkpoint writing is not training time
        self.timed_images += epoch_images
        self.timed_seconds += epoch_seconds
        if self.loop.lookahead is not None and self.global_step >= self.total_steps:
            self.loop.lookahead.finish()  # the slow weights are the final model
        seconds = time.perf_counter() - t0
        with self._timed("input pipeline start/stop"):
            del iterator
        return {"loss": loss_sum / seen, "accuracy": correct / seen, "img_s": ips,
                "seconds": seconds}

    def _train_data(self, batch: int, seed: int, epoch: int, skip: int):
        s = self.strategy
        if s.num_replicas_in_sync == 1:
            return s.experimental_distribute_dataset(
                self.train_pipe.train(batch, seed, epoch, skip_batches=skip, device=self.stage_on))
        return s.distribute_datasets_from_function(lambda ctx: self.train_pipe.train(
            batch, seed, epoch, skip, shard=distribute.shard(ctx.num_replicas_in_sync, ctx.input_pipeline_id,
                                                             ctx.num_input_pipelines, batch)))

    def _evaluate(self, pipe, tta: int = 0):
        s, batch = self.strategy, max(self.cfg.optim.batch_size, features.inference_batch(self.loop.cfg.size))
        if s.num_replicas_in_sync == 1:
            return self.loop.evaluate(s.experimental_distribute_dataset(pipe.eval(batch)), tta)
        per_replica = -(-batch // s.num_replicas_in_sync)
        return self.loop.evaluate(s.distribute_datasets_from_function(
            lambda ctx: pipe.eval(per_replica, (ctx.input_pipeline_id, ctx.num_input_pipelines))), tta)

    def _preempted(self, checkpoint: str):
        raise Preempted(f"SIGTERM: stopped at step {self.global_step} after saving {checkpoint}; continue with "
                        f"--resume --out {self.source_out}")

    def _stop_requested(self) -> bool:
        """SIGTERM seen here, or (in a cluster) by any worker: all stop at the same step."""
        if not distribute.is_multiworker(self.strategy):
            return self.sigterm
        if not hasattr(self, "_any_worker"):
            s = self.strategy
            self._any_worker = tf.function(lambda flag: s.reduce(
                "SUM", s.run(lambda f: tf.identity(f), args=(flag,)), axis=None))
        return bool(self._any_worker(tf.constant(int(self.sigterm))) > 0)

    def _cache_features(self, xtr, xva, xte):
        t0 = time.perf_counter()
        base = self.model.get_layer("backbone")
        prep = self._preprocess_fn()
        ftr, fva = features.extract(base, xtr, prep), features.extract(base, xva, prep)
        fte = fva if self.val_is_test else features.extract(base, xte, prep)
        self.feature_seconds = time.perf_counter() - t0
        n = len(xtr) + len(xva) + (0 if self.val_is_test else len(xte))
        self.log(f"feature cache: {n} images through the frozen backbone in {self.feature_seconds:.1f}s; "
                 f"the head trains on {ftr.shape[1:]} features ({ftr.nbytes / 2**20:.0f} MiB in memory)")
        return ftr, fva, fte

    def _preprocess_fn(self):
        from engine.loop import preprocess
        cfg = self.loop.cfg
        return lambda x: preprocess(x, cfg)

    def _variable(self, path: str):
        for v in self.model.weights:
            if v.path == path:
                return v
        raise EngineError(f"model {self.spec.name} has no variable {path!r}")

    @contextlib.contextmanager
    def _timed(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] += time.perf_counter() - t

    def _end_epoch(self, epoch: int, stats: dict):
        with self._timed("evaluation"):
            val_loss, val_acc = self._evaluate(self.val_pipe)
        entry = {"epoch": epoch + 1, "loss": stats["loss"], "accuracy": stats["accuracy"],
                 "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr(self.optimizer),
                 "img_s": stats["img_s"], "seconds": stats["seconds"]}
        self.history.append(entry)
        self.epoch_var.assign(epoch + 1)
        with self._timed("checkpoints"):
            self.manager.save(checkpoint_number=self.global_step)
            if val_acc > self.best_acc:
                self.best_acc, self.best_epoch = val_acc, epoch + 1
                self.best.save(checkpoint_number=self.global_step)
        write_json(os.path.join(self.cfg.run.out, "history.json"), self.history)
        with self.writer.as_default(step=epoch + 1):
            for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "img_s"):
                tf.summary.scalar(k, entry[k])
        self.writer.flush()
        self.log(f"epoch {epoch + 1}/{self.num_epochs}: loss {entry['loss']:.4f} "
                 f"acc {entry['accuracy']:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f} "
                 f"lr {entry['lr']:.3g} {entry['img_s']:.1f} img/s {entry['seconds']:.1f}s")

    # -- end of run ------------------------------------------------------------------------------
    def _finish(self, stopped_early: bool) -> dict:
        r, o = self.cfg.run, self.cfg.optim
        with self._timed("curves.png"):
            plots.curves(self.history, os.path.join(r.out, "curves.png"), title=f"{self.spec.name} ({r.out})")
        last = self.history[-1] if self.history else None
        if self.val_is_test and last and last["epoch"] == int(self.epoch_var.numpy()):
            test_loss, test_acc = last["val_loss"], last["val_accuracy"]  # same weights, same images
        else:
            with self._timed("evaluation"):
                test_loss, test_acc = self._evaluate(self.test_pipe)
        tta = self.cfg.model.tta
        tta_acc = None
        if tta:
            with self._timed("test-time augmentation"):
                tta_acc = self._evaluate(self.test_pipe, tta)[1]
        wall = time.perf_counter() - self.wall0
        self.phases["other"] = max(0.0, wall - self.timed_seconds - sum(self.phases.values()))
        metrics = {
            "test_accuracy": test_acc, "test_loss": test_loss, "tta": tta, "test_accuracy_tta": tta_acc,
            "best_epoch": self.best_epoch, "best_val_accuracy": self.best_acc,
            "epochs_run": len(self.history), "stopped_early": stopped_early, "steps": self.global_step,
            "train_img_s": self.timed_images / self.timed_seconds if self.timed_seconds else None,
            "train_seconds": self.timed_seconds,
            "wall_seconds": wall,
            "wall_breakdown": {"training steps": self.timed_seconds, **{k: v for k, v in self.phases.items() if v}},
            "train_images": self.train_images, "test_images": self.test_images,
            "val_is_test": self.val_is_test, "policy": self.policy, "xla": r.xla,
            "steps_per_call": r.steps_per_call, "batch_size": o.batch_size,
            "device": device_name(), "tensorflow": tf.__version__,
            "feature_cache": self.loop.cfg.features, "feature_seconds": self.feature_seconds,
        }
        write_json(os.path.join(r.out, "metrics.json"), metrics)
        self.log(f"wall time {wall:.1f}s: " + ", ".join(f"{k} {v:.1f}s" for k, v in metrics["wall_breakdown"].items()))
        with_tta = f", with TTA level {tta}: {tta_acc:.4f}" if tta else ""
        self.log(f"test accuracy {test_acc:.4f}{with_tta} (best val {self.best_acc:.4f} at epoch {self.best_epoch}); "
                 f"run in {r.out}")
        return metrics

    def _restore(self, ckpt, manager):
        """Restore the newest readable checkpoint; a damaged newest one falls back to the one before."""
        state = tf.train.get_checkpoint_state(manager.directory)
        candidates = [manager.latest_checkpoint] if manager.latest_checkpoint else []
        if state is not None:
            candidates += [p for p in reversed(state.all_model_checkpoint_paths) if p not in candidates]
        candidates = [p if os.path.isabs(p) else os.path.join(manager.directory, p) for p in candidates]
        if not candidates:
            raise EngineError(f"nothing to resume: {manager.directory} holds no checkpoint")
        for path in candidates:
            try:
                ckpt.restore(path).assert_existing_objects_matched()
                if path != candidates[0]:
                    print(f"warning: newest checkpoint unreadable; resumed from {path}", file=sys.stderr)
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:  # IndexError: truncated file
                print(f"warning: cannot read checkpoint {path}: {type(e).__name__}", file=sys.stderr)
        raise EngineError(f"no readable checkpoint in {manager.directory}")


def set_determinism(on: bool) -> None:
    """Op determinism is process-wide in TensorFlow; set it per run so that runs in one process
    (tests, notebooks) do not inherit it from each other."""
    from tensorflow.python.framework import config as tf_config
    if on:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def device_name() -> str:
    gpus = precision.gpus()
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)}x {details.get('device_name', 'GPU')}"
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"
