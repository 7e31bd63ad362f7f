"""Bench matrices around the tiny test model, for the runner, nightly and merge tests."""

from __future__ import annotations

import json


def tiny_matrix(name: str, corpora: list[str], max_bytes: int, extra: str = "") -> str:
    """A matrix whose model is `tiny.gguf` beside the TOML file (tests link it there)."""
    return f"""
[run]
name = "{name}"
models = ["tiny.gguf"]
corpora = {json.dumps(corpora)}
baselines = ["gzip-9", "zstd-22-long"]
measure = "ideal"
context = [64]
min_lane_tokens = 256
width = 8
threads = 1
max_bytes = {max_bytes}
""" + extra
