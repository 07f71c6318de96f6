"""Every (op, dtype) of every registered model's training graph as a GPU machine traces it has a GPU
kernel in the installed TensorFlow's kernel registry (the wheel is the CUDA build, so that registry is
the GPU one). Without XLA an op with no GPU kernel silently runs on the host, with copies every step.

The graph is the one models.build makes where TensorFlow lists a GPU (devices.gpus() faked here):
Keras's own BatchNorm and GELU, none of the CPU-only rewrites. Traced: the per-call driver (iterator,
step counter, lookahead, divergence checks) with the train step it calls and the recipe's
augmentation, and the TTA eval step, under both --amp policies a GPU trains in (bfloat16 from
compute capability 8.0, float16 + loss scaling below), with the environment a user has (no
ENGINE_AMP / ENGINE_XLA: --amp and --xla auto), as `python -m engine.gpucheck` runs it."""
import keras
import pytest
import tensorflow as tf

from engine import devices, gpucheck, models
from engine.gpucheck import KERNEL_POLICIES, missing_gpu_kernels


@pytest.fixture
def gpu_graph(monkeypatch):
    """The environment of a user's GPU machine, as far as the traced graph goes."""
    monkeypatch.delenv("ENGINE_AMP", raising=False)
    monkeypatch.delenv("ENGINE_XLA", raising=False)
    monkeypatch.setattr(devices, "gpus", lambda: ["fake GPU:0"])


def test_the_installed_tensorflow_is_the_cuda_build():
    assert tf.sysconfig.get_build_info()["is_cuda_build"]


@pytest.mark.parametrize("policy", KERNEL_POLICIES)
@pytest.mark.parametrize("model", models.names())
def test_every_op_of_the_gpu_training_and_eval_graphs_has_a_gpu_kernel(gpu_graph, model, policy):
    assert missing_gpu_kernels(model, policy) == {}


def test_the_sweep_traces_the_gpu_graph_with_its_driver(gpu_graph, monkeypatch):
    """What is swept: Keras's own BatchNorm (no FusedBatchNormV3, the CPU rewrite), the driver's
    iterator and step counter, and the loss-scaling skip checks under float16."""
    seen = []
    monkeypatch.setattr(gpucheck, "_missing", lambda g: seen.append(
        {n.op for n in list(g.node) + [n for f in g.library.function for n in f.node_def]}) or {})
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # a library caller's own policy
    try:
        missing_gpu_kernels("airbench-muon", "mixed_float16")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # not the swept one, nor float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
    driver, evaluate = seen
    assert {"IteratorGetNext", "AssignVariableOp", "Rsqrt", "SquaredDifference"} <= driver  # (the step counter: assigned its next position)
    assert "IsFinite" in driver  # the loss-scaling checks of float16
    assert not {"FusedBatchNormV3", "FusedBatchNormGradV3"} & (driver | evaluate)


def test_the_registry_check_reports_an_op_without_a_gpu_kernel():
    """The check can fail: a string op (host-only in TensorFlow) in a graph is reported, with its dtypes."""
    g = tf.function(lambda s, x: (tf.strings.length(s), tf.matmul(x, x))).get_concrete_function(
        tf.TensorSpec([2], tf.string), tf.TensorSpec([2, 2], tf.float16)).graph.as_graph_def()
    missing = gpucheck._missing(g)
    assert [op for op, _ in missing] == ["StringLength"], missing
