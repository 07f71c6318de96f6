"""Every all-reduce a multi-worker run issues is of a dtype TensorFlow's GPU collectives take.

TensorFlow's collective executor refuses an int32 or bfloat16 all-reduce when the group's devices
are GPUs (base_collective_executor.cc: "Collective all-reduce does not support datatype DT_INT32 on
DEVICE_GPU"); on CPUs (RING) both are allowed, so CPU workers that train fine prove nothing about
them. The rule is read from the installed TensorFlow library itself, and the graphs are those a
MultiWorkerMirroredStrategy of two replicas traces (two logical CPU devices in one process: the
same CollectiveReduceV2 ops as two workers, without a cluster)."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

GPU_REFUSED = ("int32", "bfloat16")

# One fresh process: logical devices and the strategy must be set up before TensorFlow's runtime starts.
WORKER = r'''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MultiWorkerMirroredStrategy._from_local_devices(["/cpu:0", "/cpu:1"])
from engine.train import precision, resolve
from engine.train.build import build_training
from engine.train.feeds import Feeds
from engine.train.distribute import StopSignal


def all_reduces(fn):
    out = set()
    for concrete in fn._list_all_concrete_functions():
        g = concrete.graph.as_graph_def()
        for n in list(g.node) + [n for f in g.library.function for n in f.node_def]:
            if n.op.startswith("CollectiveReduce"):
                out.add(tf.dtypes.as_dtype(n.attr["T"].type).name)
    return sorted(out)


report = {}
stop = StopSignal(strategy)
report["stop flag, no signal"] = stop.requested()
stop.seen = "SIGTERM"
report["stop flag, SIGTERM"] = stop.requested()
report["stop flag"] = all_reduces(stop._any_worker)

rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.int32)
for policy in ("mixed_bfloat16", "mixed_float16", "float32"):  # the GPU policies; float16 with loss scaling
    keras.mixed_precision.set_global_policy(policy)
    cfg = resolve.defaults(sys.argv[1]).replace("run", amp=policy != "float32", xla=False)
    cfg = cfg.replace("optim", batch_size=16).replace("model", weights="none", tta=2)
    with strategy.scope():
        t = build_training(cfg, 10, 64, policy, strategy)
    t.loop.begin()
    feeds = Feeds(strategy, (x, y), (x, y), (x, y), True, 16, t.preprocess.size)
    t.loop.train_calls(iter(feeds.train(0, 0, 0)), tf.constant(2, tf.int32))
    feeds.evaluate(t.loop, "test", 2)
    report[f"train call {policy}"] = all_reduces(t.loop.train_calls)
    report[f"eval call {policy}"] = sorted({d for f in t.loop._eval_fns.values() for d in all_reduces(f)})
    report[f"synchronized BatchNorm {policy}"] = any(getattr(layer, "synchronized", False)
                                                     for layer in t.model._flatten_layers())
keras.mixed_precision.set_global_policy("float32")
print(json.dumps(report))
'''


def test_the_installed_tensorflow_refuses_int32_and_bfloat16_all_reduces_on_gpus():
    """The rule the graphs below are held to is the installed build's, not a remembered one."""
    spec = importlib.util.find_spec("tensorflow")
    lib = glob.glob(os.path.join(os.path.dirname(spec.origin), "libtensorflow_framework.so*"))
    assert lib, "libtensorflow_framework.so not found next to tensorflow"
    with open(lib[0], "rb") as f:
        blob = f.read()
    for dtype in ("DT_INT32", "DT_BFLOAT16"):
        assert f"Collective all-reduce does not support datatype {dtype} on DEVICE_GPU".encode() in blob
    assert b"Collective all-reduce does not support datatype DT_FLOAT on DEVICE_GPU" not in blob


def _traced(model: str) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", WORKER, model], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def traced():
    return _traced("tiny")


def test_the_stop_flag_is_all_reduced_as_float32_and_any_replicas_signal_stops_all(traced):
    assert traced["stop flag"] == ["float32"]
    assert traced["stop flag, no signal"] is False and traced["stop flag, SIGTERM"] is True


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16", "float32"])
def test_training_and_evaluation_all_reduce_only_dtypes_gpus_take(traced, policy):
    assert traced[f"synchronized BatchNorm {policy}"]  # its moments are all-reduced too
    for part in ("train call", "eval call"):
        dtypes = traced[f"{part} {policy}"]
        assert dtypes, f"{part}: no all-reduce traced (the check would prove nothing)"
        assert not set(dtypes) & set(GPU_REFUSED), f"{part} under {policy} all-reduces {dtypes}"
