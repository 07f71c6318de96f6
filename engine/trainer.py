"""Epochs, LR schedules, early stopping, checkpoint/resume, history, TensorBoard and progress.

The compiled mechanics live in loop.py; this module decides what runs when and what is written to
the run directory:

    config.json  history.json  metrics.json  curves.png  checkpoints/  checkpoints/best/  tb/
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

import keras
import tensorflow as tf

from engine import data, models, plots, precision
from engine.config import Config, default_cache_dir
from engine.errors import EXIT_DIVERGED, EngineError
from engine.loop import StepConfig, TrainLoop

RUN_FILES = ("config.json", "history.json", "metrics.json", "curves.png", "checkpoints", "tb")


class Diverged(EngineError):
    exit_code = EXIT_DIVERGED


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


def make_schedule(o, steps_per_epoch: int):
    total = o.epochs * steps_per_epoch
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
    if o.schedule == "onecycle":  # linear up to the peak, linear down to zero (Page's ResNet-9)
        return PiecewiseLinear([0, warm, total], [0.0 if warm else o.lr, o.lr, 0.0])
    raise EngineError(f"unknown schedule {o.schedule!r}")


def make_optimizer(o, schedule):
    kw = dict(learning_rate=schedule, weight_decay=o.weight_decay or None)
    if o.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=o.momentum, nesterov=o.nesterov, **kw)
    elif o.optimizer == "adam":
        opt = keras.optimizers.Adam(**kw)
    elif o.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(momentum=o.momentum, **kw)
    else:
        raise EngineError(f"unknown optimizer {o.optimizer!r}")
    if o.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def current_lr(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(inner.learning_rate)  # Keras evaluates the schedule at the current step


# ---------------------------------------------------------------------------------------------
# Run directory


def write_json(path: str, obj) -> None:
    """Write JSON atomically: a crash never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def prepare_run_dir(run) -> None:
    """Check --out against --resume/--overwrite before any work starts; never lose a run."""
    out = run.out
    if run.resume and run.overwrite:
        raise EngineError("--resume and --overwrite contradict each other; pass one")
    has_run = os.path.exists(os.path.join(out, "config.json"))
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


def build_training(cfg: Config, num_classes: int, steps_per_epoch: int, policy: str, strategy=None):
    """Model, optimizer (with its schedule and loss scaling) and TrainLoop for a config.
    The policy must already be applied (precision.apply) so that layers pick it up."""
    strategy = strategy or tf.distribute.get_strategy()
    o = cfg.optim
    spec = models.get(cfg.model.model)
    size = models.input_size(spec, cfg.model.upsample)
    with strategy.scope():
        model = models.build(spec.name, size, num_classes)
        optimizer = precision.wrap_optimizer(make_optimizer(o, make_schedule(o, steps_per_epoch)), policy)
    step_cfg = StepConfig(
        num_classes=num_classes, global_batch=o.batch_size, size=size,
        normalization=spec.normalization, upsample_method=cfg.model.upsample_method,
        crop_pad=cfg.model.crop_pad, pad_mode=cfg.model.pad_mode, flip=cfg.model.flip,
        label_smoothing=o.label_smoothing, seed=cfg.run.seed, xla=cfg.run.xla,
        loss_scaling=precision.needs_loss_scaling(policy))
    return model, optimizer, TrainLoop(model, optimizer, step_cfg, strategy)


# ---------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: Config, log=print):
        self.cfg = cfg
        self.log = log

    def run(self) -> dict:
        cfg, r, o = self.cfg, self.cfg.run, self.cfg.optim
        spec = models.get(cfg.model.model)
        size = models.input_size(spec, cfg.model.upsample)
        if o.batch_size < 1 or r.steps_per_call < 1 or o.epochs < 1:
            raise EngineError("--batch-size, --steps-per-call and --epochs must be at least 1")
        if r.deterministic and r.xla:
            raise EngineError("--deterministic cannot be combined with --xla: XLA has no deterministic "
                              "max-pool gradient; drop one of them")
        prepare_run_dir(r)
        self.log(cfg.summary())
        for w in precision.speed_warnings(r.amp, r.xla):
            print(f"warning: {w}", file=sys.stderr)

        splits = data.load(cfg.data.data, cfg.data.cache_dir or default_cache_dir(), log=self.log)
        (xtr, ytr), (xva, yva), (xte, yte) = data.prepare(splits, cfg.data.limit, cfg.data.limit_test,
                                                          cfg.data.val_split)
        if len(xtr) < o.batch_size:
            raise EngineError(f"--batch-size {o.batch_size} is larger than the {len(xtr)} training images")
        val_is_test = cfg.data.val_split == 0
        cfg.save(os.path.join(r.out, "config.json"))

        keras.utils.set_random_seed(r.seed)
        set_determinism(r.deterministic)
        policy = precision.apply(r.amp)
        strategy = tf.distribute.get_strategy()
        train_pipe, val_pipe = data.Pipeline(xtr, ytr), data.Pipeline(xva, yva)
        test_pipe = val_pipe if val_is_test else data.Pipeline(xte, yte)
        steps_per_epoch = train_pipe.steps_per_epoch(o.batch_size)

        model, optimizer, loop = build_training(cfg, splits.num_classes, steps_per_epoch, policy, strategy)
        step_cfg = loop.cfg

        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        ckpt_dir = os.path.join(r.out, "checkpoints")
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
        manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=max(r.keep_checkpoints, 1),
                                             step_counter=optimizer.iterations)
        best = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                          os.path.join(ckpt_dir, "best"), max_to_keep=1)
        history = []
        if r.resume:
            self._restore(ckpt, manager)
            history = _read_json(os.path.join(r.out, "history.json"), [])
        global_step = int(optimizer.iterations.numpy())
        start_epoch, step_in_epoch = divmod(global_step, steps_per_epoch)
        history = [h for h in history if h["epoch"] <= start_epoch]
        if r.resume:
            self.log(f"resumed at step {global_step} (epoch {start_epoch + 1}, step {step_in_epoch})")

        writer = tf.summary.create_file_writer(os.path.join(r.out, "tb"))
        eval_batch = max(o.batch_size, 256)
        best_acc = max((h["val_accuracy"] for h in history), default=-1.0)
        best_epoch = max(history, key=lambda h: h["val_accuracy"])["epoch"] if history else 0
        timed_images, timed_seconds = 0, 0.0
        wall0 = time.perf_counter()
        stopped_early = False

        for epoch in range(start_epoch, o.epochs):
            ds = train_pipe.train(o.batch_size, r.seed, epoch, skip_batches=step_in_epoch)
            iterator = iter(strategy.experimental_distribute_dataset(ds))
            bar = None if r.quiet else keras.utils.Progbar(
                steps_per_epoch - step_in_epoch, stateful_metrics=["loss", "accuracy", "img/s"])
            loss_sum = correct = 0.0
            seen = 0
            window_images, window_t0 = 0, None
            epoch_t0 = time.perf_counter()
            done = step_in_epoch
            while done < steps_per_epoch:
                n = min(r.steps_per_call, steps_per_epoch - done)
                if r.checkpoint_every:
                    n = min(n, r.checkpoint_every - global_step % r.checkpoint_every)
                l, c, bad = loop.train_calls(iterator, tf.constant(n, tf.int32))
                l, c, bad = float(l), float(c), int(bad)  # also waits for the device
                now = time.perf_counter()
                if bad >= 0 and not step_cfg.loss_scaling:
                    last = manager.latest_checkpoint
                    raise Diverged(f"loss became {l:.3g} at step {bad + 1}; stopped. Last good "
                                   f"checkpoint: {last or 'none (no checkpoint was written yet)'}")
                done += n
                global_step += n
                seen += n * o.batch_size
                loss_sum += l
                correct += c
                if window_t0 is None:
                    window_t0 = now  # the first call of an epoch (tracing, iterator start) is not timed
                else:
                    window_images += n * o.batch_size
                ips = window_images / (now - window_t0) if window_images else seen / (now - epoch_t0)
                if bar is not None:
                    bar.update(done - step_in_epoch, values=[("loss", loss_sum / seen),
                                                             ("accuracy", correct / seen),
                                                             ("img/s", round(ips, 1))])
                if r.checkpoint_every and global_step % r.checkpoint_every == 0 and done < steps_per_epoch:
                    manager.save(checkpoint_number=global_step)
            step_in_epoch = 0
            epoch_seconds = time.perf_counter() - epoch_t0
            if window_images:
                timed_images += window_images
                timed_seconds += time.perf_counter() - window_t0
            val_loss, val_acc = loop.evaluate(strategy.experimental_distribute_dataset(
                val_pipe.eval(eval_batch)))
            entry = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
                     "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr(optimizer),
                     "img_s": ips, "seconds": epoch_seconds}
            history.append(entry)
            epoch_var.assign(epoch + 1)
            manager.save(checkpoint_number=global_step)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch + 1
                best.save(checkpoint_number=global_step)
            write_json(os.path.join(r.out, "history.json"), history)
            with writer.as_default(step=epoch + 1):
                for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "img_s"):
                    tf.summary.scalar(k, entry[k])
            writer.flush()
            self.log(f"epoch {epoch + 1}/{o.epochs}: loss {entry['loss']:.4f} acc {entry['accuracy']:.4f} "
                      f"val_loss {val_loss:.4f} val_acc {val_acc:.4f} lr {entry['lr']:.3g} "
                      f"{ips:.1f} img/s {epoch_seconds:.1f}s")
            if o.early_stop and epoch + 1 - best_epoch >= o.early_stop:
                self.log(f"early stop: no better validation accuracy for {o.early_stop} epochs "
                          f"(best {best_acc:.4f} at epoch {best_epoch})")
                stopped_early = True
                break

        plots.curves(history, os.path.join(r.out, "curves.png"), title=f"{spec.name} ({r.out})")
        if val_is_test and history and history[-1]["epoch"] == int(epoch_var.numpy()):
            test_loss, test_acc = history[-1]["val_loss"], history[-1]["val_accuracy"]
        else:
            test_loss, test_acc = loop.evaluate(strategy.experimental_distribute_dataset(
                test_pipe.eval(eval_batch)))
        metrics = {
            "test_accuracy": test_acc, "test_loss": test_loss,
            "best_epoch": best_epoch, "best_val_accuracy": best_acc,
            "epochs_run": len(history), "stopped_early": stopped_early, "steps": global_step,
            "train_img_s": timed_images / timed_seconds if timed_seconds else None,
            "wall_seconds": time.perf_counter() - wall0,
            "train_images": len(xtr), "test_images": len(xte), "val_is_test": val_is_test,
            "policy": policy, "xla": r.xla, "steps_per_call": r.steps_per_call,
            "batch_size": o.batch_size, "device": device_name(), "tensorflow": tf.__version__,
        }
        write_json(os.path.join(r.out, "metrics.json"), metrics)
        self.log(f"test accuracy {test_acc:.4f} (best val {best_acc:.4f} at epoch {best_epoch}); "
                  f"run in {r.out}")
        self.model, self.loop = model, loop
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
            except (tf.errors.OpError, ValueError, AssertionError) as e:
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
