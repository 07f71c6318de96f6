"""`engine` (and `python -m engine`): one command with a subcommand per tool.

    engine train ...      engine/train/cli.py      (python -m engine.train)
    engine export ...     engine/export/cli.py     (python -m engine.export)
    engine evaluate ...   engine/evaluate.py       (python -m engine.evaluate)
    engine predict ...    engine/predict.py
    engine report ...     engine/report.py
    engine probe ...      engine/probe.py
    engine launch ...     engine/launch.py
    engine gpucheck       engine/gpucheck.py

Each subcommand is imported only when it is run, so `engine --help` and `engine SUBCOMMAND --help`
answer without loading TensorFlow.
"""
from __future__ import annotations

import importlib
import sys

from engine import __version__

SUBCOMMANDS = {
    "train": ("engine.train.cli", "train a model (flags: engine train --help)"),
    "export": ("engine.export.cli", "export a run to SavedModel, ONNX, TensorRT or OpenVINO"),
    "evaluate": ("engine.evaluate", "accuracy and speed of an export, and agreement between two"),
    "predict": ("engine.predict", "class names and probabilities for PNG/JPEG images"),
    "report": ("engine.report", "one table of runs' metrics, mean ± std over seeds, config differences"),
    "probe": ("engine.probe", "linear probe of frozen backbone features (scikit-learn)"),
    "launch": ("engine.launch", "N local multi-worker training processes"),
    "gpucheck": ("engine.gpucheck", "run every GPU path on this machine's GPU, one line each"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: engine {{{','.join(SUBCOMMANDS)}}} ...   (engine SUBCOMMAND --help for its flags)", "",
             "A performance-optimised TensorFlow training engine for CIFAR-10 image classifiers.", "",
             "subcommands:"]
    lines += [f"  {name:{width}s}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this message and exit", "  --version   print the engine's version"]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"engine {__version__}")
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"error: engine: unknown subcommand {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return module.main(argv[1:])


def entry():
    """The `engine` console script."""
    sys.exit(main())
