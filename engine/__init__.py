"""engine: a performance-optimised TensorFlow 2 training engine for CIFAR-10 classifiers.

Importing the package imports no TensorFlow: the command-line tools answer `--help` at once and
load TensorFlow only when they need it (engine.cli.import_tensorflow_quietly).
"""

__version__ = "0.3.0.dev0"
