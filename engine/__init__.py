"""engine: a performance-optimised TensorFlow 2 training engine for CIFAR-10 classifiers."""
import os
import sys

__version__ = "0.1.0"


def _import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up chatter (CUDA stub notices, oneDNN banners) kept off
    stderr, so that a user's error is the one line they see. Python exceptions still propagate.
    Set TF_CPP_MIN_LOG_LEVEL=0 and ENGINE_TF_VERBOSE=1 to see everything TensorFlow says."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ.get("ENGINE_TF_VERBOSE"):
        import tensorflow  # noqa: F401
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (embedded interpreters): just import
        import tensorflow  # noqa: F401
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_import_tensorflow_quietly()
