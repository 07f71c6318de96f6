"""The start of a run, in order and once: `start(cfg, log, warn) -> RunStart`, which `Trainer.fit` runs.

Each step needs those above it; the comment on each says why it stands where it does:

    check -> compile cache -> strategy -> chief (a cluster's other workers: a scratch folder) ->
    signal handlers -> run folder (claim, lock) -> data -> speed choice -> seed, precision ->
    Training -> warm start | data init -> feature cache -> --overwrite's move-aside ->
    config.json -> Feeds -> checkpoints (restored on a resume) and history

A RunStart is a context manager (`with start(cfg) as session:`). Closing it drops the run that
--overwrite replaced once the new run has a checkpoint (else puts it back as it was), releases the
run folder's lock, restores the signal handlers and removes a worker's scratch folder. A start that
fails (or a signal during it) leaves no run folder it created behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from engine import data, devices, files, layout, models
from engine.config import Config, default_cache_dir
from engine.errors import EngineError, Interrupted, Preempted, warn_on_stderr  # (the default warn of a run)
from engine.files import write_json
from engine.train import advice, compile_cache, distribute, feature_cache, precision, resolve
from engine.train.speed import Choice, choose
from engine.train.build import Training, build_training
from engine.train.checkpoints import Checkpoints, History, warm_start
from engine.train.distribute import StopNow, StopSignal
from engine.train.feeds import Feeds




def _silent(*args, **kwargs) -> None:
    """The log of a cluster's workers other than the chief (the chief's log says it once)."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Images in each split, before any feature cache."""
    train: int
    val: int
    test: int


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training starts: step 0, or the step of the checkpoint a resume restored."""
    step: int
    epoch: int                                # the epoch that step is in (from 0)
    step_in_epoch: int
    partial: tuple[float, float, int] | None  # (loss sum, correct, images) of that epoch before the step


class RunFolder:
    """What this run does to --out, and undoes if it fails: a folder the start made is removed again
    when the start fails; the run that --overwrite replaces is moved aside (layout.move_aside) just
    before the new run's config.json, put back if the new run fails before its first checkpoint, and
    dropped once it has one."""

    def __init__(self, out: str, warn: Callable[[str], None]):
        self.out, self.warn, self.created, self.aside = out, warn, False, None
        self.parents = []  # the folders above --out that the start made, deepest first

    def claim(self, run) -> files.Lock:
        self.parents = _missing_parents(run.out)
        self.created, lock = _claim(run)
        return lock

    def move_aside(self) -> None:
        self.aside = layout.move_aside(self.out)

    def settle(self) -> None:
        """Drop the replaced run once the new one has a checkpoint; else put it back, as it was."""
        if self.aside is None:
            return
        if layout.has_checkpoint(self.out):
            layout.drop_aside(self.aside)
        else:
            layout.put_back(self.out, self.aside)
            self.warn(f"{self.out}: the run that --overwrite was to replace is kept, as it was")
        self.aside = None

    @contextlib.contextmanager
    def starting(self):
        """The start of a run: if it fails, the replaced run comes back and a folder it made goes; a
        signal during it stops at once."""
        try:
            yield
        except BaseException as e:
            self.settle()
            if self.created:
                shutil.rmtree(self.out, ignore_errors=True)
                for parent in self.parents:  # (only while empty: another run may have begun in one since)
                    try:
                        os.rmdir(parent)
                    except OSError:
                        break
            if isinstance(e, StopNow):
                kept = "" if self.created else f"; {self.out} is as it was"
                error = Interrupted if e.signame == "SIGINT" else Preempted
                raise error(f"{e.signame}: stopped during start-up, before the first training step: nothing "
                            f"to resume{kept}; run the command again to start") from None
            raise


@dataclasses.dataclass(frozen=True)
class RunStart:
    """A started run: what `Trainer.fit` steps, evaluates, checkpoints and reports."""
    config: Config              # the final config: --out decided, --amp/--xla as the speed choice made them
    source_out: str             # the run folder a resume reads (a cluster's other workers write elsewhere)
    strategy: object
    chief: bool                 # this process writes the run folder
    speed: Choice
    training: Training
    feeds: Feeds
    checkpoints: Checkpoints
    history: History
    position: Position
    sizes: Sizes
    val_is_test: bool           # the whole test split validates (no subset, no --val-split)
    feature_seconds: float | None  # what computing the cached features took (None: no feature cache)
    compile_cache: str | None   # XLA's compile cache folder, when it is on
    stop: StopSignal
    run_folder: RunFolder       # the run --overwrite replaced, until the first checkpoint
    log: Callable
    warn: Callable[[str], None]
    _closing: contextlib.ExitStack = dataclasses.field(repr=False)

    def __enter__(self) -> "RunStart":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.run_folder.settle()
        finally:
            self._closing.close()


def start(cfg: Config, log=print, warn=warn_on_stderr, *, checked: bool = False) -> RunStart:
    """Start the run `cfg` describes: everything before its first training step, in order, once.
    `checked`: the caller has run resolve.check on `cfg` (the command line does, before it imports
    TensorFlow); else it runs here. A signal (SIGTERM, Ctrl-C) during the start stops at once."""
    if not checked:
        resolve.check(cfg)  # every rule of the config, before anything is made
    closing = contextlib.ExitStack()  # what RunStart.close undoes, last first
    try:
        return _start(resolve.with_out(cfg), log, warn, closing)  # (a config made in Python may have no --out)
    except BaseException:
        closing.close()
        raise


def _start(given: Config, log, warn, closing: contextlib.ExitStack) -> RunStart:
    source_out, cache_dir = given.run.out, given.data.cache_dir or default_cache_dir()
    # TensorFlow reads TF_XLA_FLAGS when its runtime starts: the compile cache before anything else.
    cache, cache_note = _compile_cache(given, cache_dir)
    # MultiWorkerMirroredStrategy must exist before TensorFlow's runtime starts.
    strategy = distribute.make(given.run.strategy, given.optim.batch_size, log)
    # The chief writes the run folder; a cluster's other workers write a scratch folder, and say nothing.
    chief = distribute.is_chief(strategy)
    here = given if chief else _scratch(given, closing)
    log = log if chief else _silent
    # From the first step that makes anything: a signal stops at once, and removes what the start made.
    stop = closing.enter_context(StopSignal(strategy))
    run_folder = RunFolder(here.run.out, warn)
    with run_folder.starting():
        if chief:  # --out against --resume/--overwrite, made and locked, before any work: a refusal is quick
            closing.callback(run_folder.claim(here.run).release)  # the lock is held until the run ends
        log(here.summary())
        if chief:  # what was measured to be slow on this kind of machine, before any of it runs
            for warning in advice.run_warnings(here):
                warn(warning)
        # A resumed run restores its newest checkpoint; one stopped before its first checkpoint starts
        # again from step 0 with its saved config.
        restoring = here.run.resume and layout.has_checkpoint(source_out)
        splits, train, val, test = load_splits(here, cache_dir, log)
        if restoring and not here.data.image_shape:  # a config made in Python: the shape the run saved
            saved = Config.load(layout.run_file(source_out, layout.CONFIG_FILE))
            here = here.replace("data", image_shape=saved.data.image_shape)
        here = with_image_shape(here, splits.x_train.shape[1:], restoring)  # the run's shape, from here on
        val_is_test = val[0] is test[0]  # (data.prepare validates on the test arrays themselves)
        if cache_note:
            log(cache_note)
        devices.tf32_override()  # NVIDIA_TF32_OVERRIDE=0: float32 is float32 here too (before the choice says which)
        # The speed choice needs the strategy and the data's classes; --amp/--xla auto become what it
        # chose, in the config.json a resume reads.
        speed = choose(here, strategy, splits.num_classes, cache_dir, log, warn)
        log(speed.describe())
        config = here.replace("run", amp=speed.amp, xla=speed.xla)
        keras.utils.set_random_seed(config.run.seed)  # before any weight is made
        set_determinism(config.run.deterministic)
        policy = precision.apply(config.run.amp)  # before the build: layers take the global policy when made
        resolve.check_replicas(config, policy, strategy.num_replicas_in_sync)  # the rules that need both
        training = build_training(config, splits.num_classes, len(train[0]), policy, strategy)
        model = training.model
        trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
        log(f"model: {model.name}, {model.count_params():,} parameters ({trainable:,} trainable)")
        if training.preprocess.channels == 3 and config.image_shape[2] == 1:
            log(f"grayscale images: their channel is repeated to RGB in the graph ({model.name} takes [H,W,3])")
        spec = models.get(config.model.model)
        if config.run.init_from and not restoring:  # (a restored checkpoint has the weights)
            log(f"weights from {warm_start(model, config.run.init_from)}")
        elif spec.data_init and config.model.data_init and not restoring:
            models.data_init(spec, model, train[0], training.preprocess)
        training.loop.begin()  # after the weights are final (the lookahead copies them)
        sizes = Sizes(len(train[0]), len(val[0]), len(test[0]))
        feature_seconds = None
        if training.feature_cache:  # the frozen backbone's features, once its weights are final
            train, val, test, feature_seconds = feature_cache.cache_splits(
                model, training.preprocess, train, val, test, val_is_test, log, config.run.quiet,
                config.data.limit_test)
        # Only now, with data and model in hand, does --out become a run (a failed start leaves none,
        # and leaves the run that --overwrite replaces as it was).
        if config.run.overwrite and not config.run.resume and chief:  # aside until the first checkpoint
            run_folder.move_aside()
        if config.run.resume and not restoring:
            log(f"{source_out} stopped before its first checkpoint: starting it again from step 0 with its config")
        config.save(os.path.join(config.run.out, layout.CONFIG_FILE))
        stop.training = True  # from here a signal stops at a step boundary, after a checkpoint
        write_json(layout.run_file(config.run.out, layout.CLASSES_FILE), splits.class_names)
        feeds = Feeds(strategy, train, val, test, val_is_test, config.optim.batch_size, training.preprocess.side)
        checkpoints = Checkpoints(config.run.out, model, training.optimizer, training.loop.trackables(),
                                  config.run.keep_checkpoints, training.loop.step, warn)
        if restoring:  # other workers read the chief's checkpoints
            checkpoints.restore(None if chief else source_out)
        position = _position(training, checkpoints)
        # the variables whose training ended by the checkpoint's step freeze now, not at the next train call:
        # a run resumed after its last step only tests, and its FLOP count reads the trainable set
        training.loop.at_step(position.step)
        if restoring:
            history = History.resumed(config.run.out, source_out, position.epoch)
            where = ("every epoch trained: the final test" if position.epoch >= training.length.num_epochs
                     else f"epoch {position.epoch + 1}, step {position.step_in_epoch}")
            log(f"resumed at step {position.step} ({where})")
        else:
            history = History(config.run.out, [])
        return RunStart(config=config, source_out=source_out, strategy=strategy, chief=chief, speed=speed,
                       training=training, feeds=feeds, checkpoints=checkpoints, history=history, position=position,
                       sizes=sizes, val_is_test=val_is_test, feature_seconds=feature_seconds, compile_cache=cache,
                       stop=stop, run_folder=run_folder, log=log, warn=warn, _closing=closing)


def _compile_cache(cfg: Config, cache_dir: str) -> tuple[str | None, str | None]:
    """(XLA's compile cache folder or None, what to say of it once the data is loaded)."""
    if not (cfg.run.compile_cache and cfg.run.xla is not False):
        return None, None
    cache, said = compile_cache.enable(cache_dir)
    return cache, (f"{said} ({compile_cache.entries(cache)} compiled functions stored)" if cache else said)


def _scratch(cfg: Config, closing: contextlib.ExitStack) -> Config:
    """A cluster worker's config (not the chief's): a scratch --out, removed at the end, and quiet."""
    out = tempfile.mkdtemp(prefix="engine-worker-")
    closing.callback(shutil.rmtree, out, ignore_errors=True)
    return cfg.replace("run", out=out, quiet=True)


def _position(training: Training, checkpoints: Checkpoints) -> Position:
    step = int(training.loop.step.numpy())
    epoch, step_in_epoch = divmod(step, training.length.steps_per_epoch)
    if step >= training.length.total_steps:  # every step trained (the last epoch may be a fraction): the end
        epoch, step_in_epoch = training.length.num_epochs, 0
    loss, correct, seen = (float(v) for v in checkpoints.partial.numpy())
    return Position(step, epoch, step_in_epoch, (loss, correct, int(seen)) if step_in_epoch and seen else None)


def _missing_parents(out: str) -> list[str]:
    """The folders above `out` that do not exist yet, deepest first."""
    missing, parent = [], os.path.dirname(os.path.abspath(out))
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


def _claim(run) -> tuple[bool, files.Lock]:
    """Check --out against --resume/--overwrite before any work starts, make it, and lock it for this
    process (a second process on the same --out is refused). Returns (whether --out was created here,
    so that a start that fails removes it again; the lock, held until the run ends)."""
    out = run.out
    created = not os.path.lexists(out)
    if created:  # (an existing folder is locked first: a run in progress there is "in use", whatever it holds)
        layout.check_out(out, run.resume, run.overwrite)
    elif not os.path.isdir(out):
        raise EngineError(f"--out {out} is a file, not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise EngineError(f"cannot write to --out {out}: {e.strerror or e}") from None
    lock = files.Lock(out, "a run writes there, or an export reads it")
    try:
        layout.check_out(out, run.resume, run.overwrite)  # again, now that no other process can start a run
        _check_writable(out)
    except BaseException:
        lock.release()
        raise
    return created, lock


def _check_writable(out: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=out) as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise EngineError(f"cannot write to --out {out}: {e.strerror or e}") from None


def load_splits(cfg: Config, cache_dir: str, log=print):
    """(Splits, (x, y) of train, val, test) for a run's data options."""
    d, batch = cfg.data, cfg.optim.batch_size
    splits = data.load(d.data, cache_dir, log=log, label_mode=d.label_mode, image_size=d.image_size)
    train, val, test = data.prepare(splits, d.limit, d.limit_test, d.val_split, d.val_images)
    present = np.unique(train[1])
    if len(present) < 2:
        raise EngineError(f"the training images of --data {d.data} are all of class "
                          f"{splits.class_names[present[0]]!r}: a classifier needs images of at least two classes")
    if len(train[0]) < batch:
        raise EngineError(f"--batch-size {batch} is larger than the {len(train[0])} training images")
    return splits, train, val, test


def with_image_shape(cfg: Config, shape, resuming: bool) -> Config:
    """`cfg` with the data's image shape [H, W, C], which config.json stores: a resumed run's data must
    have the shape it was trained on (a run saved without one: 32x32x3); the augmentation's padding
    must stay below the image's side."""
    from engine.contract import CHANNELS, shape_text
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or shape[2] not in CHANNELS:
        raise EngineError(f"--data {cfg.data.data}: images of shape {list(shape)}; the engine takes [H, W, C] "
                          f"images with C 1 (grayscale) or 3 (RGB)")
    if resuming and shape != cfg.image_shape:
        raise EngineError(f"--data {cfg.data.data} has {shape_text(shape)} images but the run being resumed "
                          f"trained on {shape_text(cfg.image_shape)}; start a new --out instead")
    side = min(shape[:2])
    if cfg.model.crop_pad >= side:
        allowed = f"0 (off) to {side - 1}" if side > 1 else "0 (off): a side of 1 pixel cannot shift"
        raise EngineError(f"--crop-pad {cfg.model.crop_pad} must be below the images' side ({side}); give "
                          f"--crop-pad {allowed}")
    return cfg.replace("data", image_shape=shape_text(shape))


def set_determinism(on: bool) -> None:
    """Op determinism is process-wide in TensorFlow; set it per run so that runs in one process
    (tests, notebooks) do not inherit it from each other."""
    from tensorflow.python.framework import config as tf_config
    if on:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
