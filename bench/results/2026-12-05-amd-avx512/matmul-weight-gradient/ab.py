"""A/B: the loop with 3x3 convs on small maps taking the matmul weight gradient vs oneDNN's kernel, same process.
usage: ENGINE_DATA=... [PRECISIONS=bf16] python ab.py MODEL BATCH STEPS ROUNDS   (run from the repository root with PYTHONPATH=.)"""
import os, sys, time, json
import keras, tensorflow as tf
from bench.conftest import machine_info
from engine import data
from engine.config import default_cache_dir
from engine.data.pipeline import Pipeline
from engine.train import precision
from engine.train.resolve import defaults
from engine.train.build import build_training

model_name, batch, steps, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
splits = data.load(os.environ["ENGINE_DATA"], default_cache_dir(), log=lambda *a, **k: None)
x, y, _, _ = data.balanced_subset(splits.x_train, splits.y_train, batch * (steps + 4), seed=0)
rows = []
for amp in [a == "bf16" for a in os.environ.get("PRECISIONS", "bf16").split(",")]:
    for fused in (True, False, True, False):
        keras.utils.set_random_seed(0)
        policy = precision.apply(amp)
        cfg = defaults(model_name).replace("model", weights="none", feature_cache=False)
        cfg = cfg.replace("optim", batch_size=batch, lr=0.05, schedule="constant").replace("run", xla=False, amp=amp, steps_per_call=10)
        training = build_training(cfg, 10, len(x), policy)
        n = 0
        for layer in training.model._flatten_layers():
            if "convolution_op" in vars(layer):
                n += 1
                if not fused:
                    del layer.convolution_op
        assert n > 0
        it = iter(Pipeline(x, y).train(batch, seed=0, epoch=0).repeat())
        times = []
        for r in range(rounds + 1):
            t0 = time.perf_counter()
            float(training.loop.train_calls(it, tf.constant(steps, tf.int32))[0])
            times.append(time.perf_counter() - t0)
        img_s = steps * batch * rounds / sum(times[1:])
        row = dict(model=model_name, batch=batch, precision=policy, weight_gradient="matmul" if fused else "onednn", layers=n, img_s=round(img_s, 1), round_s=[round(t, 2) for t in times[1:]])
        print(json.dumps(row), flush=True)
        rows.append(row)
        keras.mixed_precision.set_global_policy("float32")
json.dump(dict(machine=machine_info(), rows=rows), open(f"ab-matmul-{model_name}.json", "w"), indent=1)
