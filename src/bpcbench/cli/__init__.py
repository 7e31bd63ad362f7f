"""Command line: parses arguments and calls library functions; no logic of its own.

Every BpcError becomes one line on stderr and a non-zero exit; nothing half-written is
left behind because every output goes through atomic_open. A command whose optional extra
is not installed (cli/extras.py) is refused before it starts, with the pip line to run.
SIGTERM and SIGINT end a run the same way (one line, exit 143 or 130) at any moment: their
handlers are installed before the command modules, which import numpy and llama.cpp (most of a
second), are imported at all.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from bpcbench import __version__
from bpcbench.errors import BpcError, StdoutFailed, Terminated, catch_signals, interruption, restore_signals

__all__ = ["Terminated", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too ('bpcbench: error: ...', exit 2), like every other bad input."""

    def error(self, message: str):
        where = self.prog.removeprefix("bpcbench").strip()
        raise BpcError(f"{where + ': ' if where else ''}{message} (see {self.prog} -h)")


def build_parser() -> argparse.ArgumentParser:
    # here, not at the top: main() installs the signal handlers before these heavy imports run
    from bpcbench.cli import bench, codec, data, ladder, lossy

    parser = _Parser(
        prog="bpcbench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress files with a language model and an arithmetic coder, and measure how many bits\n"
                    "per byte (quantized) models need on real text, against gzip, bzip2, xz, zstd and brotli\n"
                    "on the same bytes.",
        epilog="examples:\n"
               "  bpcbench compress notes.txt --stats     # writes notes.txt.bpcz\n"
               "  bpcbench decompress notes.txt.bpcz -o notes.copy.txt\n"
               "  bpcbench bench --quick                  # a few minutes; results/<run-id>/summary.md\n"
               "  bpcbench report results/<run-id>        # re-render a run's tables and plots\n"
               "\n"
               "bench, merge, nightly, ladder and lossy write into --out DIR; `bpcbench COMMAND -h` lists the\n"
               "options of each command.\n"
               "Units: kB = 1000 bytes, MB = 10^6 bytes, MiB = 2^20 bytes (memory).")
    parser.add_argument("--version", action="version", version=f"bpcbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    codec.register(sub)
    bench.register(sub)
    ladder.register(sub)
    lossy.register(sub)
    data.register(sub)
    return parser


def _flush_stdout() -> None:
    """Flush stdout now, where a full disk or a closed pipe is one line, not an 'Exception ignored'
    at interpreter exit; afterwards stdout is /dev/null so that exit's own flush has nothing to fail."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise StdoutFailed(f"cannot write to stdout: {e.strerror}") from None


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}  # what a print() onto a full stdout raises


def _stdout_broken() -> bool:
    """Whether stdout fails to flush (what it could not write is still in its buffer)."""
    try:
        _flush_stdout()
    except (OSError, BpcError):
        return True
    return False


def _silence_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    previous = catch_signals()
    try:
        from bpcbench.cli import extras  # inside the try: a signal while it imports is one line too

        args = build_parser().parse_args(argv)
        extras.require(args.command)
        code = args.func(args) or 0
        _flush_stdout()
        return code
    except BpcError as e:
        if isinstance(e, StdoutFailed):
            _silence_stdout()
        print(f"bpcbench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        line, code = interruption(e)
        print(f"bpcbench: {line}", file=sys.stderr)
        return code
    except BrokenPipeError:  # the reader went away (`| head`): no message, as cat and gzip
        _silence_stdout()
        return 1
    except OSError as e:  # print() onto a full stdout (models --json > /dev/full) is one line too
        if not (_stdout_broken() or e.errno in _FULL):
            raise
        _silence_stdout()
        print(f"bpcbench: error: cannot write the output: {e.strerror}", file=sys.stderr)
        return 2
    finally:
        restore_signals(previous)


if __name__ == "__main__":
    sys.exit(main())
