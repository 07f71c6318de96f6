"""A/B: the loop with the matmul weight gradient on maps up to 64 pixels (8x8) with >= 128 channels
against the earlier rule (maps up to 49 pixels), same process, alternating.
usage: ENGINE_DATA=... python ab.py MODEL BATCH STEPS ROUNDS   (run from the repository root with PYTHONPATH=.)"""
import os, sys, time, json
import keras, tensorflow as tf
from bench.conftest import machine_info
from engine import data
from engine.config import default_cache_dir
from engine.data.pipeline import Pipeline
from engine.models import layers
from engine.train import precision
from engine.train.resolve import defaults
from engine.train.build import build_training

model_name, batch, steps, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
splits = data.load(os.environ["ENGINE_DATA"], default_cache_dir(), log=lambda *a, **k: None)
x, y, _, _ = data.balanced_subset(splits.x_train, splits.y_train, batch * (steps + 4), seed=0)
rows = []
for max_map in (64, 49, 64, 49):
    layers.MATMUL_WEIGHT_GRADIENT_MAX_MAP = max_map  # read when the step is traced
    keras.utils.set_random_seed(0)
    policy = precision.apply(True)
    cfg = defaults(model_name).replace("model", weights="none", feature_cache=False)
    cfg = cfg.replace("optim", batch_size=batch, lr=0.05, schedule="constant").replace(
        "run", xla=False, amp=True, steps_per_call=10)
    training = build_training(cfg, 10, len(x), policy)
    it = iter(Pipeline(x, y).train(batch, seed=0, epoch=0).repeat())
    times = []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        float(training.loop.train_calls(it, tf.constant(steps, tf.int32))[0])
        times.append(time.perf_counter() - t0)
    img_s = steps * batch * rounds / sum(times[1:])
    row = dict(model=model_name, batch=batch, precision=policy, max_map=max_map, img_s=round(img_s, 1),
               round_s=[round(t, 2) for t in times[1:]])
    print(json.dumps(row), flush=True)
    rows.append(row)
    keras.mixed_precision.set_global_policy("float32")
json.dump(dict(machine=machine_info(), rows=rows), open(f"ab-8x8-{model_name}-{batch}.json", "w"), indent=1)
