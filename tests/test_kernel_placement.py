"""Every op of every registered model's traced train step (with augmentation, float16 + loss
scaling: the GPU --amp path of compute capability 7.x) and TTA eval step has a GPU kernel in the
installed TensorFlow's kernel registry. That registry is the GPU one: the wheel is the CUDA build.
Without XLA, an op with no GPU kernel silently runs on the host, with copies every step."""
import pytest
import tensorflow as tf

from engine import models
from engine.gpucheck import missing_gpu_kernels


def test_the_installed_tensorflow_is_the_cuda_build():
    assert tf.sysconfig.get_build_info()["is_cuda_build"]


@pytest.mark.parametrize("model", models.names())
def test_every_op_of_the_train_and_eval_steps_has_a_gpu_kernel(model):
    assert missing_gpu_kernels(model) == {}
