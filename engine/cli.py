"""What every command-line tool shares: an argparse that fails in one line, value types, and a quiet
TensorFlow import."""
from __future__ import annotations

import argparse
import os
import sys

from engine.errors import EngineError


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every flag's default, except where there is none to show (an empty or absent value) or
    the help text already says it."""

    def _get_help_string(self, action):
        nothing = action.default is None or action.default == "" or action.default is False
        if nothing and not isinstance(action, argparse.BooleanOptionalAction) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def _format_action_invocation(self, action):
        if isinstance(action, Switch):
            return f"{action.option_strings[0]} [{action.metavar}], {action.option_strings[1]}"
        return super()._format_action_invocation(action)


class Switch(argparse.Action):
    """An on/off/auto flag: --amp (on), --amp auto|on|off, --no-amp (off)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string.startswith("--no-"):
            if value is not None:
                parser.error(f"{option_string} takes no value")
            value = False
        setattr(namespace, self.dest, True if value is None else value)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is our one line and exit code 2 (no usage block), and `--help` shows
    the defaults. Every CLI uses it."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", DefaultsFormatter)
        kw.setdefault("allow_abbrev", False)  # --epoch is not --epochs: a misspelt flag is an error
        super().__init__(*args, **kw)

    def error(self, message):
        raise EngineError(f"{self.prog}: {message}")


def integer(s: str) -> int:
    """A non-negative int (argparse type)."""
    v = int(s)
    if v < 0:
        raise ValueError(s)
    return v


def number(s: str) -> float:
    """A finite float (argparse type)."""
    v = float(s)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(s)
    return v


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA stub notices, oneDNN banners) kept off
    stderr, so that a user's error is the one line they see. Python exceptions still propagate.
    Set TF_CPP_MIN_LOG_LEVEL=0 and ENGINE_TF_VERBOSE=1 to see everything TensorFlow says. What those logs
    would say about a GPU TensorFlow cannot use (no CUDA libraries, an old driver) the CLIs that run models
    say in one line instead: engine.devices.warn_gpu_setup (that layer, above this one, reads the driver)."""
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
