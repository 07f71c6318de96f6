"""The speed choice, `--amp auto` and `--xla auto` (the defaults): the fastest correct precision and
compilation for this machine, decided before the run and recorded in its metrics.json (speed_choice).

- On GPUs, by engine.train.precision's rule (precision.gpu_rule): mixed precision on (bfloat16 from
  compute capability 8.0, float16 with loss scaling below), XLA on where precision.xla_options
  allows it (not float16 over several replicas, not --deterministic).
- On CPUs, by measurement. Machines of the same kind disagree on both (the measured ratios:
  docs/performance.md, "The automatic choice"), so each candidate (float32 or bfloat16, XLA off or on) trains a few steps of this model at
  this batch (at most TRIAL_BATCH images a step) on random images, after one warm-up step that pays
  for tracing. The fastest wins, but only if it is at least MARGIN faster than the reference (float32
  without XLA, or what was forced): a candidate slower than float32 is never picked. A candidate
  already below half the best rate stops after one timed step, and bfloat16 with XLA is timed only if
  one of the two beat the reference. Decisions are cached in the cache directory per CPU model, CPU
  features, TensorFlow version, model and batch, so the timed trials run once per machine and setting.
- Several replicas or workers (a tf.distribute strategy) are not timed: every worker must make the
  same choice, so auto means float32 without XLA there.

`--amp`/`--no-amp` and `--xla`/`--no-xla` force a choice (source "given", as on a resume, whose
config.json holds what was chosen); a given choice is never measured.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

from engine import devices
from engine.config import AUTO
from engine.errors import warn_on_stderr
from engine.files import read_json, write_json
from engine.train import precision

CACHE_FILE = "speed-choices.json"
MARGIN = 0.05        # a candidate must be this much faster than the reference to be picked
TRIAL_BATCH = 256    # images per timed trial step at most (the run's batch, if smaller)
TRIAL_STEPS = 3      # timed steps per candidate, after one warm-up step
# bfloat16 is not timed where its convolutions ran below this fraction of float32's rate, as where it is
# emulated. Not 1: the screen is noisy where bfloat16 is in hardware, and there the model's own steps
# decide between rates that close (measured: docs/performance.md, "The automatic choice").
BF16_SCREEN = 0.5


def label(amp: bool, xla: bool) -> str:
    """A CPU candidate's name (the timed trials' img/s keys): --amp is bfloat16 on CPUs (float16 under
    ENGINE_AMP_FLOAT16=1)."""
    return precision.PRECISION_WORDS[precision.policy_for(amp, [])] + (" + XLA" if xla else "")


@dataclasses.dataclass
class Choice:
    amp: bool
    xla: bool
    source: str                  # given | GPU rule | measured | cached | several replicas | feature cache
    img_s: dict = dataclasses.field(default_factory=dict)  # label -> measured img/s
    trial_seconds: float = 0.0   # what the timed trials cost this run (0 when cached)
    trial_batch: int = 0         # the batch they were timed at
    bf16_conv_ratio: float | None = None  # bfloat16's conv rate over float32's, where it was looked at
    # What the run computes in (engine.train.precision.label): float32, "float32 (TF32 matmuls)",
    # bfloat16 or float16. Empty: a CPU's (bfloat16 or float32), for the choices made only on CPUs.
    precision: str = ""
    tf32_matmuls: bool = False   # float32 matmuls and convolutions in TF32 (GPUs of compute capability >= 8.0)

    def __post_init__(self):
        self.precision = self.precision or precision.PRECISION_WORDS[precision.policy_for(self.amp, [])]

    @property
    def label(self) -> str:
        return self.precision + (" + XLA" if self.xla else "")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "choice": self.label}

    def describe(self) -> str:
        tf32 = "; float32 parts in TF32" if self.tf32_matmuls and self.amp else ""
        head = f"speed: {self.label} ({self.source}{tf32}"
        if not self.img_s:
            return head + ")"
        rates = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.img_s.items(), key=lambda kv: -kv[1]))
        cost = f"; timed trials {self.trial_seconds:.1f} s" if self.trial_seconds else ""
        skipped = (f"; bfloat16 not timed: its convolutions ran {1 / self.bf16_conv_ratio:.1f}x slower than "
                   f"float32's" if self.bf16_conv_ratio is not None and self.bf16_conv_ratio < BF16_SCREEN else "")
        return f"{head}: img/s at batch {self.trial_batch}: {rates}{skipped}{cost})"


def candidates(amp, xla, deterministic: bool = False) -> list[tuple[bool, bool]]:
    """The (amp, xla) pairs an auto choice considers, the reference (everything auto off) first."""
    amps = [False, True] if amp == AUTO else [bool(amp)]
    xlas = precision.xla_options(xla, deterministic)
    return [(a, x) for a in amps for x in xlas]


def reference(amp, xla) -> tuple[bool, bool]:
    """What auto falls back to: float32 and no XLA, unless forced otherwise."""
    return (False if amp == AUTO else bool(amp), False if xla == AUTO else bool(xla))


def pick(img_s: dict, amp, xla) -> tuple[bool, bool]:
    """The fastest measured (amp, xla), if at least MARGIN faster than the reference; else the reference."""
    ref = reference(amp, xla)
    best = max(img_s, key=img_s.get)
    return best if img_s[best] >= img_s[ref] * (1 + MARGIN) else ref


def gpu_choice(amp, xla, capabilities: list, replicas: int, deterministic: bool, tf32: bool | None = None) -> Choice:
    """The choice on GPUs of these compute capabilities, by engine.train.precision's rule; `tf32`:
    TensorFlow's TF32 switch (None: ask it, where a GPU has one)."""
    a, x = precision.gpu_rule(amp, xla, capabilities, replicas, deterministic)
    return Choice(a, x, "GPU rule", precision=precision.label(a, capabilities, tf32),
                  tf32_matmuls=precision.tf32_matmuls(capabilities, tf32))


def cache_key(setting: dict) -> str:
    """One cache entry per machine and setting: a change of CPU model, its features, TensorFlow's
    version, the model or the batch gets a new measurement."""
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]


def machine_setting(cfg, input_side: int, batch: int, tf_version: str) -> dict:
    m = cfg.model
    forced = {"amp": "float16"} if precision.float16_forced() else {}  # timed apart from bfloat16's figures
    return {**forced, "tensorflow": tf_version, "cpu": devices.cpu_model(), "cpu_flags": devices.cpu_features(),
            "cores": os.cpu_count(), "model": m.model, "width": m.width, "head": m.head, "freeze": m.freeze,
            "input_side": input_side, "batch": batch,
            # (grayscale is timed apart; RGB keeps the key it had before shapes were stored)
            **({"channels": cfg.image_shape[2]} if cfg.image_shape[2] != 3 else {})}


def decide(amp, xla, deterministic: bool, setting: dict, measure, cache_path: str | None,
           bf16_ratio=None, warn=warn_on_stderr) -> Choice:
    """Choose on a CPU. `measure(amp, xla, floor)` returns a candidate's img/s (it may stop early once
    it is below `floor`); what it measured is cached under `setting` in `cache_path`. `bf16_ratio()`,
    if given, is a cheap first look at bfloat16 (its convolution rate over float32's): below
    BF16_SCREEN, bfloat16 is emulated, its candidates cannot win and are not timed (where --amp was
    not forced)."""
    pairs = candidates(amp, xla, deterministic)
    if len(pairs) == 1:
        return Choice(*pairs[0], "given")
    t0 = time.perf_counter()
    key = cache_key(setting)
    cache = read_json(cache_path, {}) if cache_path else {}
    if not isinstance(cache, dict):  # e.g. null or a list: not one of ours; measured again and replaced
        warn(f"ignoring {cache_path}: it holds {json.dumps(cache)[:30]}, not the speed choices' "
             f"JSON object; measuring again")
        cache = {}
    entry = _usable_entry(cache.get(key), setting)
    new = False
    if amp == AUTO and bf16_ratio is not None:
        if "bf16_conv_ratio" not in entry:
            entry["bf16_conv_ratio"], new = float(bf16_ratio()), True
        if entry["bf16_conv_ratio"] < BF16_SCREEN:
            pairs = [p for p in pairs if not p[0]]
    ref, img_s = reference(amp, xla), {}
    for pair in pairs:
        name = label(*pair)
        if pair == (True, True) and not _worth_combining(img_s, ref):
            continue
        if name not in entry["img_s"]:
            entry["img_s"][name], new = float(measure(*pair, max(img_s.values(), default=0.0) / 2)), True
        img_s[pair] = entry["img_s"][name]
    if new and cache_path:
        cache[key] = entry
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
            write_json(cache_path, cache)
        except OSError as e:  # a read-only cache: the choice holds for this run, the next one measures again
            warn(f"cannot cache the speed choice in {cache_path}: {e.strerror or e}")
    a, x = pick(img_s, amp, xla)
    return Choice(a, x, "measured" if new else "cached", {label(*p): v for p, v in img_s.items()},
                  round(time.perf_counter() - t0, 2) if new else 0.0, setting.get("batch", 0),
                  entry.get("bf16_conv_ratio"))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value >= 0


def _usable_entry(entry, setting: dict) -> dict:
    """A cache entry with only what can be trusted: measured rates (and a bfloat16 ratio) that are
    numbers. Anything else in it is measured again."""
    if not isinstance(entry, dict):
        return {"setting": setting, "img_s": {}}
    rates = entry.get("img_s") if isinstance(entry.get("img_s"), dict) else {}
    out = {"setting": setting, "img_s": {k: float(v) for k, v in rates.items() if _number(v) and v > 0}}
    if _number(entry.get("bf16_conv_ratio")):
        out["bf16_conv_ratio"] = float(entry["bf16_conv_ratio"])
    return out


def _worth_combining(img_s: dict, ref) -> bool:
    """bfloat16 + XLA is timed only where the reference was (auto on both) and bfloat16 alone or XLA
    alone beat it, or where one of the two was forced on (then it is the only other candidate)."""
    if ref != (False, False):
        return True
    return any(v > img_s[ref] for p, v in img_s.items() if p != ref)


def choose(cfg, strategy, num_classes: int, cache_dir: str, log=print, warn=warn_on_stderr) -> Choice:
    """The (amp, xla) a run trains with, from its config's --amp and --xla (True, False or auto)."""
    import tensorflow as tf

    from engine.train import resolve
    r = cfg.run
    gpus = devices.gpus()
    if r.amp != AUTO and r.xla != AUTO:
        caps = devices.compute_capabilities() if gpus else []
        return Choice(bool(r.amp), bool(r.xla), "given", precision=precision.label(bool(r.amp)),
                      tf32_matmuls=precision.tf32_matmuls(caps))
    replicas = strategy.num_replicas_in_sync
    if gpus:
        return gpu_choice(r.amp, r.xla, devices.compute_capabilities(), replicas, r.deterministic)
    if replicas > 1 or tf.distribute.has_strategy():
        a, x = reference(r.amp, r.xla)
        return Choice(a, x, "several replicas")
    if resolve.feature_cache_applies(cfg):  # the head trains on cached features: a few matrix products
        a, x = reference(r.amp, r.xla)
        return Choice(a, x, "feature cache")
    from engine import models
    side = models.preprocess_for(models.get(cfg.model.model), cfg.model, cfg.image_shape).size
    batch = min(cfg.optim.batch_size, TRIAL_BATCH)
    setting = machine_setting(cfg, side, batch, tf.__version__)

    said = []

    def announce():
        if not said:
            said.append(log("speed: timing float32 / bfloat16, XLA off / on, on this CPU: once per machine and "
                            "setting (--amp/--no-amp and --xla/--no-xla skip it)"))

    def measure(amp: bool, xla: bool, floor: float) -> float:
        announce()
        return measure_candidate(cfg, num_classes, amp, xla, batch, floor)

    def ratio() -> float:
        announce()
        return bf16_conv_ratio()
    return decide(r.amp, r.xla, r.deterministic, setting, measure, os.path.join(cache_dir, CACHE_FILE), ratio, warn)


def bf16_conv_ratio(reps: int = 5) -> float:
    """bfloat16's rate over float32's for a training step of one 3x3 convolution (64 -> 64 channels,
    32x32, batch 16: forward and both gradients), best of `reps` each, the two dtypes taking turns
    after a warm-up: a few seconds.
    Convolutions are most of a CIFAR model's step, so where bfloat16's are slower, bfloat16 training
    is too. The gradients are timed too: without bfloat16 instructions the forward convolution alone
    can be faster in bfloat16 while forward + backward is many times slower (bench/results/2026-11-24-amd/)."""
    import tensorflow as tf

    @tf.function
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf.reduce_sum(tf.cast(tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME")), tf.float32))
        return [tf.reduce_sum(tf.cast(g, tf.float32)) for g in tape.gradient(y, [x, w])]

    inputs = {dtype: (tf.cast(tf.random.stateless_uniform((16, 32, 32, 64), (0, 0)), dtype),
                      tf.cast(tf.random.stateless_uniform((3, 3, 64, 64), (0, 1)), dtype))
              for dtype in (tf.float32, tf.bfloat16)}
    best = {}
    for dtype, args in inputs.items():
        step(*args)  # tracing, and the kernels' first call
        best[dtype] = float("inf")
    for _ in range(reps):  # taking turns, so that a slow moment of the machine does not fall on one dtype
        for dtype, args in inputs.items():
            t0 = time.perf_counter()
            [float(g) for g in step(*args)]
            best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best[tf.float32] / best[tf.bfloat16]


def measure_candidate(cfg, num_classes: int, amp: bool, xla: bool, batch: int, floor: float = 0.0) -> float:
    """img/s of TRIAL_STEPS training steps of the run's model in (amp, xla) at `batch`, on random
    uint8 images of the run's shape (at its full side, whatever --resize-schedule says), after one
    warm-up step (tracing). Stops after one timed step below `floor`. The caller's Keras policy is
    back after."""
    import keras
    import numpy as np
    import tensorflow as tf

    from engine import models
    from engine.data.pipeline import Pipeline
    from engine.train.build import build_training
    policy = precision.policy_name(amp)
    # at the full side whatever --resize-schedule says: the most of a run's steps, and the step the choice is for
    c = cfg.replace("run", amp=amp, xla=xla).replace("optim", batch_size=batch).replace(
        "model", data_init=False, resize_schedule="")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * 2, *cfg.image_shape), dtype=np.uint8)
    y = rng.integers(0, num_classes, batch * 2).astype(np.int64)
    with models.global_policy(policy):  # (entered first: it keeps the caller's policy, which clear_session resets)
        try:
            keras.backend.clear_session()
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            loop = build_training(c, num_classes, len(x), policy).loop
            iterator = iter(Pipeline(x, y).train(batch, seed=0, epoch=0).repeat())
            one = tf.constant(1, tf.int32)
            float(loop.train_calls(iterator, one)[0])  # warm-up: tracing, compilation
            elapsed, steps = 0.0, 0
            while steps < TRIAL_STEPS:
                t0 = time.perf_counter()
                float(loop.train_calls(iterator, one)[0])
                elapsed += time.perf_counter() - t0
                steps += 1
                if steps * batch / elapsed < floor:
                    break
            return steps * batch / elapsed
        finally:
            keras.backend.clear_session()
