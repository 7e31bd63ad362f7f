"""Flags that several commands share, each defined and validated once.

Values are checked by argparse itself (the `type=` functions below), so a bad value is one
usage line and exit 2 before any command runs, and commands never re-check them.
"""

from __future__ import annotations

import argparse

from bpcbench.codec.session import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_CONTEXT_CAP,
    DEFAULT_MIN_LANE_TOKENS,
    DEFAULT_WIDTH,
    POLICIES,
)
from bpcbench.llama.binding import usable_cores
from bpcbench.llama.lanes import MAX_LANES


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


def add_gpu_layers(p: argparse.ArgumentParser, help: str = "layers to offload to a GPU build (default 0)") -> None:
    p.add_argument("-ngl", "--n-gpu-layers", type=non_negative_int, dest="n_gpu_layers", help=help)


def add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", choices=POLICIES, help="how the text is cut: lanes (default) or the old disjoint chunks")
    p.add_argument("--min-lane-tokens", type=positive_int, dest="min_lane_tokens",
                   help=f"a lane per this many tokens, up to --width lanes (default {DEFAULT_MIN_LANE_TOKENS})")


def add_context(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--context", type=positive_int,
                   help=f"lanes: KV window per lane (default the model's training context, at most {DEFAULT_CONTEXT_CAP}); "
                        f"chunks: tokens per chunk (default {DEFAULT_CHUNK_TOKENS})")


def lane_count(text: str) -> int:
    """argparse type: 1 … MAX_LANES (llama.cpp refuses more sequences in one context)."""
    value = positive_int(text)
    if value > MAX_LANES:
        raise argparse.ArgumentTypeError(f"{value} is more lanes than llama.cpp allows ({MAX_LANES})")
    return value


def add_width(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=lane_count,
                   help=f"most lanes evaluated together per llama_decode call, a speed setting (default {DEFAULT_WIDTH})")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


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
