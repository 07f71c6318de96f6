"""User-facing errors: one line on stderr, a non-zero exit, no traceback."""
import functools
import sys


class EngineError(Exception):
    """A problem with the user's input or environment, reported as one line."""


# Exit codes a script can tell apart.
EXIT_USAGE = 2          # bad input: paths, names, flags, data
EXIT_DIVERGED = 3       # training produced a non-finite loss
EXIT_PREEMPTED = 75     # stopped by SIGTERM after a checkpoint (EX_TEMPFAIL: run again with --resume)
EXIT_INTERRUPTED = 130  # Ctrl-C


class Diverged(EngineError):
    """The loss became non-finite; the last good checkpoint is kept."""
    exit_code = EXIT_DIVERGED


class Preempted(EngineError):
    """SIGTERM (a scheduler's preemption notice): the run checkpointed at a step boundary and stopped."""
    exit_code = EXIT_PREEMPTED
    label = "preempted"


def cli(main):
    """Wrap a CLI entry point so that EngineError becomes `error: ...` and an exit code."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except EngineError as e:
            code = getattr(e, "exit_code", EXIT_USAGE)
            print(f"{getattr(e, 'label', 'error')}: {' '.join(str(e).split())}", file=sys.stderr)
            sys.exit(code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper
