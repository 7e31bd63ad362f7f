"""Command line: parses arguments and calls library functions; no logic of its own.

Every BpcError becomes one line on stderr and a non-zero exit; nothing half-written is
left behind because every output goes through atomic_open. A command whose optional extra
is not installed (cli/extras.py) is refused before it starts, with the pip line to run.
"""

from __future__ import annotations

import argparse
import signal
import sys

from bpcbench import __version__
from bpcbench.cli import bench, codec, data, extras, ladder, lossy
from bpcbench.errors import BpcError


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too ('bpcbench: error: ...', exit 2), like every other bad input."""

    def error(self, message: str):
        where = self.prog.removeprefix("bpcbench").strip()
        raise BpcError(f"{where + ': ' if where else ''}{message} (see {self.prog} -h)")


def build_parser() -> argparse.ArgumentParser:
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every temp file is removed on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (main() called from a library): no handler
        previous = None
    try:
        args = build_parser().parse_args(argv)
        extras.require(args.command)
        return args.func(args) or 0
    except BpcError as e:
        print(f"bpcbench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print("bpcbench: terminated" if isinstance(e, Terminated) else "bpcbench: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
