"""Flags that several commands share, each defined and validated once.

Values are checked by argparse itself (the `type=` functions below), so a bad value is one
usage line and exit 2 before any command runs, and commands never re-check them.
"""

from __future__ import annotations

import argparse
import sys

from bpcbench.codec import mixing
from bpcbench.codec.session import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_CONTEXT_CAP,
    DEFAULT_MIN_LANE_TOKENS,
    DEFAULT_WIDTH,
    POLICIES,
)
from bpcbench.llama.binding import usable_cores
from bpcbench.llama.lanes import MAX_LANE_GROUPS, MAX_LANES


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive (an integer >= 1), got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (rejects nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def thread_count(text: str) -> int:
    """argparse type: 1 … the usable cores (more only slows llama.cpp down, and far more crashes it)."""
    value = positive_int(text)
    if value > usable_cores():
        raise argparse.ArgumentTypeError(f"{value} is more than the {usable_cores()} usable core(s) of this machine")
    return value


def add_threads(p: argparse.ArgumentParser, help: str = "CPU threads for llama.cpp") -> None:
    p.add_argument("-t", "--threads", type=thread_count, help=help)


def job_count(text: str) -> int:
    """argparse type: 1 … the usable cores (each worker gets at least one of them)."""
    value = positive_int(text)
    if value > usable_cores():
        raise argparse.ArgumentTypeError(f"{value} jobs are more than the {usable_cores()} usable core(s) "
                                         "of this machine")
    return value


def add_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", type=job_count, default=1,
                   help="cells measured at once, each in a worker process of its own; a model cell that sets no "
                        "threads gets the measurement threads // JOBS (results.csv's threads column), with the "
                        "same bits as a one-job run on those threads (default 1)")


def add_gpu_layers(p: argparse.ArgumentParser, help: str = "layers to offload to a GPU build (default 0)") -> None:
    p.add_argument("-ngl", "--n-gpu-layers", type=non_negative_int, dest="n_gpu_layers", help=help)


def add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", choices=POLICIES,
                   help="how the text is cut: lanes (default; a few long lanes, each with a sliding window) "
                   "or chunks (disjoint pieces of at most --context tokens, each from BOS)")
    p.add_argument("--min-lane-tokens", type=positive_int, dest="min_lane_tokens",
                   help=f"a lane per this many tokens, up to --width lanes (default {DEFAULT_MIN_LANE_TOKENS})")


def add_mix(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mix", choices=mixing.MODES,
                   help="mix the model's distribution with an online match model of the file's own repetitions "
                        "(match), or not (none, the default); the file records it")


def add_context(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--context", type=positive_int,
                   help=f"lanes: KV window per lane (default the model's training context, "
                        f"at most {DEFAULT_CONTEXT_CAP}); chunks: tokens per chunk (default {DEFAULT_CHUNK_TOKENS})")


def lane_count(text: str) -> int:
    """argparse type: 1 … MAX_LANES (llama.cpp refuses more sequences in one context)."""
    value = positive_int(text)
    if value > MAX_LANES:
        raise argparse.ArgumentTypeError(f"{value} is more lanes than llama.cpp allows ({MAX_LANES})")
    return value


def add_width(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=lane_count,
                   help="most lanes evaluated together per llama_decode call, a speed setting "
                        f"(default {DEFAULT_WIDTH})")


def add_lane_groups(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lane-groups", type=int, choices=range(1, MAX_LANE_GROUPS + 1), dest="lane_groups",
                   help="feed each position's lanes as this many alternating llama_decode calls, one group's "
                        "running while the host codes the other's: 2 for a GPU, where the model leaves the "
                        "CPU idle (default 1; the file records it and the decoder follows)")


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=help)


OUTPUT_FORMATS = ("csv", "json", "md")  # bench and ladder: which files a run writes besides its CSV


def output_formats(text: str) -> frozenset[str]:
    """argparse type: a comma-separated subset of OUTPUT_FORMATS; the CSV is always written."""
    given = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in given if f not in OUTPUT_FORMATS]
    if unknown or not given:
        what = f"unknown format {unknown[0]!r}" if unknown else "no format given"
        raise argparse.ArgumentTypeError(f"{what} (choose from {', '.join(OUTPUT_FORMATS)}, comma-separated)")
    return frozenset(given) | {"csv"}


def add_formats(p: argparse.ArgumentParser, csv: str, json: str, md: str) -> None:
    p.add_argument("--format", type=output_formats, default=frozenset(OUTPUT_FORMATS), dest="formats",
                   metavar="LIST",
                   help=f"comma-separated outputs to write: csv = {csv} (always written), json = {json}, "
                        f"md = {md} (default {','.join(OUTPUT_FORMATS)})")


class _Deprecated(argparse.Action):
    """An old spelling of a flag: stores into the new flag's dest and warns once on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"bpcbench: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str) -> None:
    """`old` still works like `new` (hidden from -h, warns when used)."""
    p.add_argument(old, action=_Deprecated, dest=dest, new=new)


def add_force(p: argparse.ArgumentParser, what: str = "an existing output") -> None:
    p.add_argument("-f", "--force", action="store_true", help=f"overwrite {what}")


def add_thresholds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bpb-threshold", type=non_negative_float, default=0.5,
                   help="flag bits/byte worse by more than this many percent (default 0.5), if significant")
    p.add_argument("--speed-threshold", type=non_negative_float, default=10.0,
                   help="flag compress/decompress speed lower by more than this many percent (default 10)")


def model_overrides(args: argparse.Namespace) -> dict:
    """--threads / --n-gpu-layers that were given, as matrix or ladder overrides."""
    return {k: getattr(args, k) for k in ("threads", "n_gpu_layers") if getattr(args, k, None) is not None}
