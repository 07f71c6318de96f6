"""Training throughput: our compiled loop in its settings vs Keras `model.fit` on the same model,
data and global batch.

Each round is a timed window of a few steps after a warm-up round (tracing, compilation), so a
round's time is wall time for steps x batch images; img/s = images / mean round time.

    pytest bench/test_train_throughput.py --benchmark-json=bench-train.json
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from engine import devices
from engine.data.pipeline import Pipeline
from engine import kernels
from bench.conftest import QUICK, FitWindows, compile_seed_style, machine_info
from bench.flops import train_flops
from engine import data
from engine.train import precision
from engine.config import Config
from engine.train.resolve import defaults
from engine.train.build import build_training
from engine.models import cpu_step

# label: (model, input side, global batch, steps per timed round, settings). airbench at its recipe's
# batch 1024 (a step takes seconds on a small CPU, so 2-step windows). VGG16 at 64x64 is
# seed experiment 1's model (frozen backbone; the feature cache is off here, so every step runs the backbone): its host-upsample row feeds
# the loop batches upsampled in the tf.data map instead of in the compiled step.
if QUICK:
    MODELS = {"tiny": ("tiny", 32, 32, 4, ["keras fit", "keras fit stock", "keras fit amp", "loop fp32 spc1",
                                            "loop fp32 spc10", "loop xla spc10", "loop amp spc10",
                                            "loop amp spc10 -step-changes", "loop fp32 spc10 host-upsample"]),
              "tiny 28x28x1": ("tiny", 28, 32, 4, ["loop fp32 spc10"]),  # (keras fit: its row above)
              "tiny 64x64x3": ("tiny", 64, 32, 4, ["loop fp32 spc10"])}
else:
    MODELS = {
        "airbench": ("airbench", 32, 1024, 2, ["keras fit", "keras fit amp", "keras fit stock", "keras fit amp stock",
                                                "loop fp32 spc1", "loop fp32 spc10", "loop xla spc10", "loop amp spc10"]),
        "resnet9": ("resnet9", 32, 128, 6, ["keras fit", "keras fit amp", "keras fit stock", "keras fit amp stock",
                                             "loop fp32 spc1", "loop fp32 spc10", "loop xla spc10", "loop amp spc10"]),
        "vgg16@64": ("vgg16", 64, 128, 4, ["keras fit", "loop fp32 spc10", "loop xla spc10",
                                           "loop fp32 spc10 host-upsample"]),
        # airbench94_muon's recipe at its batch: the same net without lookahead and per-variable gradient
        # transforms, Muon's Newton-Schulz steps added
        "airbench-muon": ("airbench-muon", 32, 2000, 2, ["keras fit", "loop fp32 spc10", "loop xla spc10"]),
        # where airbench's step time goes: the recipe's loop with one part of it removed per row
        "airbench parts": ("airbench", 32, 512, 2, [f"loop {s} spc10{part}" for s in ("fp32", "xla")
                                                    for part in ("", " -lookahead", " -grad-transforms",
                                                                 " -augment")]),
        # the default recipe's speed-ups, each switched off alone: the engine's CPU training-step changes
        # (fused BatchNorm, compiled GELU, matmul weight gradient; all three: "-step-changes"), and
        # bfloat16 / XLA against float32 (the report turns each into minutes for the recipe's run)
        "airbench-muon speedups": ("airbench-muon", 32, 2000, 2, [
            "loop amp spc10", "loop amp spc10 -fused-bn", "loop amp spc10 -compiled-gelu",
            "loop amp spc10 -matmul-dw", "loop amp spc10 -step-changes", "loop fp32 spc10",
            "loop fp32 spc10 -step-changes", "loop xla spc10"]),
        # the airbench recipe on MNIST's shape and on Tiny-ImageNet's (SHAPES), beside its CIFAR-10 rows
        "airbench 28x28x1": ("airbench", 28, 1024, 2, ["keras fit", "loop fp32 spc10", "loop xla spc10",
                                                        "loop amp spc10"]),
        "airbench 64x64x3": ("airbench", 64, 1024, 2, ["keras fit", "loop fp32 spc10", "loop amp spc10"]),
    }
# Rows on images of another shape than CIFAR-10's [32, 32, 3]: the run's data.image_shape, and random uint8
# images of that shape (a step's time does not depend on the pixels; no data set is read).
SHAPES = {label: label.split()[-1] for label in MODELS if label.split()[-1].count("x") == 2}
ROUNDS = 1 if QUICK else 2  # timed rounds after the warm-up round (3 took the suite to 22 minutes)
# bfloat16 on a CPU without bfloat16 instructions (AMX or AVX-512 BF16) is emulated, many times slower
# than float32 (bench/results/2026-11-24-amd/): on such CPUs its rows time a short window (1 step),
# 2 rounds, which bounds the suite's time on the slow kind.
SLOW_ROW = {"loop amp spc10": (1, 2), "keras fit amp": (1, 2), "keras fit amp stock": (1, 2)}
CASES = [(label, name) for label, (*_, names) in MODELS.items() for name in names]

# name: (xla, amp, steps_per_call)
LOOP_CONFIGS = {
    "loop fp32 spc1": (False, False, 1),
    "loop fp32 spc10": (False, False, 10),
    "loop xla spc10": (True, False, 10),
    "loop amp spc10": (False, True, 10),
    "loop fp32 spc10 host-upsample": (False, False, 10),
}


# A row name's " -PART" suffixes remove that part of the recipe from the step (config overrides).
PARTS = {"-lookahead": {("optim", "lookahead"): False},
         "-grad-transforms": {("optim", "bias_lr_scale"): 1.0, ("optim", "weight_decay"): 0.0},
         "-augment": {("model", "crop_pad"): 0, ("model", "flip"): "none"}}


# A row name's " -KIND" suffixes undo that CPU training-step rewrite (engine.models.cpu_step) on the
# built model, before its step is traced; "-step-changes" undoes all three CPU ones.
STEP_CHANGES = tuple("-" + kind for kind in cpu_step.CPU_KINDS)


def _loop_config(name):
    """(xla, amp, steps_per_call, config overrides, step changes to undo) of a loop row's name."""
    base, *parts = name.split(" -")
    overrides, undo = {}, set()
    for part in parts:
        if part == "step-changes":
            undo.update(STEP_CHANGES)
        elif "-" + part in STEP_CHANGES:
            undo.add("-" + part)
        else:
            overrides.update(PARTS["-" + part])
    return (*LOOP_CONFIGS[base], overrides, undo)


def _cfg(label, xla=False, amp=False, spc=10, overrides=None) -> Config:
    model, size, batch, _, _ = MODELS[label]
    cfg = defaults(model).replace("model", upsample=size, weights="none", feature_cache=False)
    if label in SHAPES:
        cfg = cfg.replace("data", image_shape=SHAPES[label])
    cfg = cfg.replace("optim", batch_size=batch, lr=0.05, schedule="constant")
    return cfg.replace("run", xla=xla, amp=amp, steps_per_call=spc).with_overrides(overrides or {})


def _arrays(request, label):
    _, _, batch, window, _ = MODELS[label]
    n = batch * (window + 4)
    if label in SHAPES:
        shape = tuple(int(d) for d in SHAPES[label].split("x"))
        return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % 10
    splits = request.getfixturevalue("splits")  # (skips without ENGINE_DATA)
    x, y, _, _ = data.balanced_subset(splits.x_train, splits.y_train, n, seed=0)
    return x, y


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _window(label, name):
    """(steps per timed round, rounds) for a row."""
    base = name.split(" -")[0]
    if not QUICK and base in SLOW_ROW and not devices.gpus() and not devices.fast_bf16():
        return SLOW_ROW[base]
    return MODELS[label][3], ROUNDS


def _record(benchmark, label, name, cfg, model):
    info = machine_info()
    info.update(model=label, config=name, batch=cfg.optim.batch_size, window_steps=_window(label, name)[0],
                precision=precision.policy_name(cfg.run.amp), xla=cfg.run.xla,
                steps_per_call=cfg.run.steps_per_call, train_gflop_per_image=train_flops(model) / 1e9)
    benchmark.extra_info.update(info)


def _img_s(benchmark):
    info = benchmark.extra_info
    info["img_s"] = info["window_steps"] * info["batch"] / benchmark.stats.stats.mean


# amp: the same fit under Keras's mixed_bfloat16 policy; stock: on the model as plain Keras trains it,
# without the engine's training-step rewrites (engine.models.cpu_step), which the other rows have
FIT_ROWS = ("keras fit", "keras fit amp", "keras fit stock", "keras fit amp stock")


@pytest.mark.parametrize("label,name", [c for c in CASES if c[1] not in FIT_ROWS])
def test_loop(benchmark, request, label, name):
    xla, amp, spc, overrides, undo = _loop_config(name)
    cfg = _cfg(label, xla, amp, spc, overrides)
    _, size, batch, _, _ = MODELS[label]
    steps, rounds = _window(label, name)
    keras.utils.set_random_seed(0)
    policy = precision.apply(amp)
    x, y = _arrays(request, label)
    pipe = Pipeline(x, y)
    training = build_training(cfg, 10, len(x), policy)
    undone = training.step_changes.undo([kind[1:] for kind in undo]) if undo else 0
    loop = training.loop
    ds = pipe.train(batch, seed=0, epoch=0).repeat()
    if name.endswith("host-upsample"):  # the step then finds inputs already at size: a no-op for it
        ds = ds.map(lambda im, lb, ix: (kernels.upsample(im, size, cfg.model.upsample_method), lb, ix),
                    num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    iterator = iter(ds)

    def window():
        done = 0
        while done < steps:
            n = min(spc, steps - done)
            loss = loop.train_calls(iterator, tf.constant(n, tf.int32))[0]
            float(loss)  # wait for the device
            done += n

    _record(benchmark, label, name, cfg, training.model)
    # the recipe's images per run, for the ablation's minutes; and how many layers a "-" change undid
    # (0 where this CPU never had that change: matmul-dw needs AVX-512 BF16 without AMX)
    benchmark.extra_info.update(run_images=defaults(MODELS[label][0]).optim.epochs * 50_000,
                                step_changes_undone=undone)
    benchmark.pedantic(window, rounds=rounds, warmup_rounds=1, iterations=1)
    _img_s(benchmark)


@pytest.mark.parametrize("label,name", [c for c in CASES if c[1] in FIT_ROWS])
def test_keras_fit(benchmark, request, label, name):
    """The seed experiments' way: preprocessing in a tf.data map on the host, float32 batches fed to
    `model.fit`, default `steps_per_execution=1`, no XLA. Same model, augmentation, loss, optimizer.
    Rounds are windows of steps inside one running `fit` (see FitWindows). "keras fit amp" builds the
    model under the mixed precision policy that --amp uses (Keras casts the batches at the first layer),
    so that the bfloat16 loop rows have a like-for-like `fit`. The "stock" rows train the same network
    with every layer's own Keras training form (what a `fit` script has), the others the engine's model."""
    amp = name.startswith("keras fit amp")
    cfg = _cfg(label, amp=amp)
    model_name, size, batch, _, _ = MODELS[label]
    steps, rounds = _window(label, name)
    keras.utils.set_random_seed(0)
    precision.apply(amp)
    x, y = _arrays(request, label)
    from engine import models
    spec = models.get(model_name)
    model = models.build(model_name, size, 10, cfg.model, channels=cfg.image_shape[2])
    if not name.endswith(" stock"):
        cpu_step.apply(model, xla=False, cpu_flags=devices.cpu_flags(), has_gpu=bool(devices.gpus()))
    o = cfg.optim
    compile_seed_style(model, o)

    def host_preprocess(images, labels, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        images = kernels.random_crop(images, crop_seed, cfg.model.crop_pad, cfg.model.pad_mode)
        if cfg.model.flip != "none":
            images = kernels.random_flip(images, flip_seed)
        images = kernels.upsample(images, size, cfg.model.upsample_method)
        return kernels.normalize(images, spec.normalization), labels

    pipe = Pipeline(x, y)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip(pipe.train(batch, 0, 0).repeat(), seeds)
    ds = ds.map(lambda b, s: host_preprocess(b[0], b[1], s), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    fit = FitWindows(model, ds, steps * (1 + rounds))
    _record(benchmark, label, name, cfg, model)
    benchmark.pedantic(fit.window, args=(steps,), rounds=rounds, warmup_rounds=1, iterations=1)
    fit.close()
    _img_s(benchmark)
