"""`python -m bpcbench` and the `bpcbench` command.

The signal handlers come first, before `bpcbench.cli` (and through it numpy and llama.cpp) is
imported, and stay until the process is gone: a SIGTERM or SIGINT at any moment after the
interpreter reaches this file ends the run with one line and exit 143 or 130. The interpreter's
own start, before this file runs, is beyond any handler's reach.
"""

import os
import sys

from bpcbench.errors import catch_signals, exit_on_signals, interruption


def run() -> int:
    catch_signals()  # not at import: a spawned worker re-imports this module and keeps its own handlers
    try:
        from bpcbench.cli import main

        code = main()
    except KeyboardInterrupt as e:  # while bpcbench.cli imports, or between main's own handlers
        line, code = interruption(e)
        print(f"bpcbench: {line}", file=sys.stderr)
    return code


def _exit(code: int) -> None:
    """Leave now, the outputs complete and flushed, without the interpreter's shutdown: there the
    handlers are reset to the default (a signal then kills the process, exit -2/-15, no line) and
    __del__ methods free llama.cpp objects in no set order. A signal from here on exits at once."""
    exit_on_signals()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or 1  # a reader gone, or a full disk, after the last write main() made
    os._exit(code)


def console_main() -> None:
    """The `bpcbench` command (pyproject.toml's entry point), the same as `python -m bpcbench`."""
    _exit(run())


if __name__ == "__main__":  # not when a spawned worker re-imports the main module
    console_main()
