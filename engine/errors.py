"""User-facing errors: one line on stderr, a non-zero exit, no traceback."""
import errno
import functools
import sys


class EngineError(Exception):
    """A problem with the user's input or environment, reported as one line."""


# Exit codes a script can tell apart.
EXIT_USAGE = 2          # bad input: paths, names, flags, data
EXIT_DIVERGED = 3       # training produced a non-finite loss
EXIT_PREEMPTED = 75     # stopped by SIGTERM after a checkpoint (EX_TEMPFAIL: run again with --resume)
EXIT_INTERRUPTED = 130  # Ctrl-C


class Interrupted(EngineError):
    """Ctrl-C (SIGINT): the run checkpointed at a step boundary and stopped, as for SIGTERM."""
    exit_code = EXIT_INTERRUPTED
    label = "interrupted"


class Diverged(EngineError):
    """The loss became non-finite; the last good checkpoint is kept."""
    exit_code = EXIT_DIVERGED


class Preempted(EngineError):
    """SIGTERM (a scheduler's preemption notice): the run checkpointed at a step boundary and stopped."""
    exit_code = EXIT_PREEMPTED
    label = "preempted"


def is_disk_full(e: BaseException) -> bool:
    """Whether an error (an OSError, or TensorFlow's ResourceExhaustedError from a saver) is a full disk."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left on device" in text or "Disk quota exceeded" in text


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
        except Exception as e:
            if not is_disk_full(e):
                raise
            print(f"error: no space left on the device ({' '.join(str(e).split())[:200]}); free some space and "
                  f"run the command again", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def warn_on_stderr(message: str) -> None:
    """The default `warn` of the engine's library calls: `warning: ...` on stderr (a notebook may pass its own)."""
    print(f"warning: {message}", file=sys.stderr)
