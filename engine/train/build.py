"""Assembly: the model, optimizer (with its schedule and loss scaling) and TrainLoop of a config."""
from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from engine import devices, models
from engine.kernels import Preprocess
from engine.models import cpu_step
from engine.train import feature_cache, precision, resize, resolve
from engine.train.loop import StepConfig, TrainLoop
from engine.train.optim import RunLength, make_optimizer, make_schedule


@dataclass
class Training:
    """What a run trains, built once: the trainer reads these fields, never the loop's internals."""
    model: object             # the full Keras model (checkpoints and exports are of it)
    optimizer: object
    loop: TrainLoop           # steps the model, or its head alone on cached features
    preprocess: Preprocess    # uint8 images -> the model's input
    length: RunLength
    feature_cache: bool       # the loop trains the head on cached backbone features
    policy: str               # the precision policy the model was built under
    step_changes: cpu_step.Changes  # the layers' faster training forms (undo() gives Keras's own back)

    @property
    def loss_scaling(self) -> bool:
        return precision.needs_loss_scaling(self.policy)


def build_training(cfg, num_classes: int, train_size: int, policy: str, strategy=None) -> Training:
    """A Training for a config and a training set of `train_size` images. The policy must already
    be applied (precision.apply) so that layers pick it up."""
    if not (isinstance(cfg.run.amp, bool) and isinstance(cfg.run.xla, bool)):
        raise ValueError("--amp/--xla auto must be decided first (engine.train.speed.choose)")
    strategy = strategy or tf.distribute.get_strategy()
    o = cfg.optim
    length = RunLength.of(o, train_size)
    spec = models.get(cfg.model.model)
    preprocess = models.preprocess_for(spec, cfg.model, cfg.image_shape)
    cache = resolve.feature_cache_applies(cfg)
    with strategy.scope():
        model = models.build(spec.name, preprocess.size, num_classes, cfg.model,
                             sync_bn=strategy.num_replicas_in_sync > 1, channels=preprocess.channels)
        step_changes = cpu_step.apply(model, xla=cfg.run.xla, cpu_flags=devices.cpu_flags(),
                                      has_gpu=bool(devices.gpus()))
        train_steps = {path: math.ceil(round(getattr(cfg.model, option) * length.steps_per_epoch, 6))
                       for path, option in spec.train_epochs.items()}  # (3 epochs: exactly 3 epochs' steps)
        horizons = {path: max(1, n) for path, n in train_steps.items()}  # (0 steps: frozen before the first)
        optimizer = precision.wrap_optimizer(make_optimizer(o, make_schedule(o, length.steps_per_epoch), horizons),
                                             policy)
        trained = feature_cache.split(model)[1] if cache else model  # the head alone trains on cached features
    phases = resize.phases(cfg.model.resize_schedule, length.total_steps)
    resize.check(cfg.model.resize_schedule, spec.name, 1, preprocess.size)  # (its min_size: resolve.check)
    resize.check_model(model, phases)
    step_cfg = StepConfig(
        num_classes=num_classes, global_batch=o.batch_size, preprocess=preprocess,
        crop_pad=cfg.model.crop_pad, pad_mode=cfg.model.pad_mode, flip=cfg.model.flip,
        train_size=train_size, steps_per_epoch=length.steps_per_epoch, label_smoothing=o.label_smoothing,
        brightness=cfg.model.brightness, contrast=cfg.model.contrast,
        # (muon applies its own per-group LRs and decay)
        l2=o.weight_decay if o.weight_decay_mode == "l2" and o.optimizer != "muon" else 0.0,
        bias_lr_scale=1.0 if o.optimizer == "muon" else o.bias_lr_scale,
        lookahead=o.lookahead, total_steps=length.total_steps, seed=cfg.run.seed, xla=cfg.run.xla,
        loss_scaling=precision.needs_loss_scaling(policy), features=cache, resize=phases,
        prune=cfg.data.prune_fraction > 0)
    loop = TrainLoop(trained, optimizer, step_cfg, strategy,
                     [(models.variable(model, path), n) for path, n in train_steps.items()])
    return Training(model, optimizer, loop, preprocess, length, cache, policy, step_changes)
