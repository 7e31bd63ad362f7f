"""The host's share of a ladder's wall time (issue #22: below 10% on the reference configuration).

Runs `bpcbench ladder ARGS` in this process with every `llama_decode` (Batch.decode) and every
`llama_model_quantize` (quantizer.quantize_file) call timed as an interval; base and level decode
at the same time in two threads, so what counts as llama.cpp's time is the union of those
intervals, and the host's share is the rest of the wall time (our scoring, tokenizing, GGUF
headers and hashes, model loads, reports, imports after start-up). Timers, not a profiler: a
profiler would inflate the Python side it measures.
The reference configuration is `make ladder`, i.e. no arguments:

    PYTHONPATH=src python benchmarks/ladder_share.py -- --out /tmp/ladder-share

Levels already in the quantized cache cost no quantizing; the line says how many were cached.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from bpcbench import quantize
from bpcbench.cli import main as cli_main
from bpcbench.llama import quantizer
from bpcbench.llama.binding import Batch


class Intervals:
    """(start, end, kind) of every wrapped call, from any thread."""

    def __init__(self):
        self.spans: list[tuple[float, float, str]] = []
        self._lock = threading.Lock()

    def wrap(self, owner, name: str, kind: str, results: list | None = None):
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                out = inner(*args, **kwargs)
                if results is not None:
                    results.append(out)
                return out
            finally:
                with self._lock:
                    self.spans.append((t0, time.perf_counter(), kind))

        setattr(owner, name, timed)
        return inner

    def union(self, kinds: set[str] | None = None) -> float:
        """Seconds during which at least one call of `kinds` (all, if None) was running."""
        total, end = 0.0, float("-inf")
        for a, b, _ in sorted(s for s in self.spans if kinds is None or s[2] in kinds):
            if b > end:
                total += b - max(a, end)
                end = b
        return total

    def summed(self, kind: str) -> tuple[int, float]:
        spans = [b - a for a, b, k in self.spans if k == kind]
        return len(spans), sum(spans)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ladder_args", nargs="*", help="arguments of `bpcbench ladder` (after --)")
    a = p.parse_args(argv)
    spans = Intervals()
    decode = spans.wrap(Batch, "decode", "llama_decode")
    reports: list = []
    quant = spans.wrap(quantizer, "quantize_file", "quantize")
    reporting = spans.wrap(quantize, "quantize", "report", reports)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        rc = cli_main(["ladder", *a.ladder_args])
    finally:
        wall = time.perf_counter() - t0
        Batch.decode, quantizer.quantize_file, quantize.quantize = decode, quant, reporting
    llama = spans.union({"llama_decode", "quantize"})
    n_dec, s_dec = spans.summed("llama_decode")
    n_q, s_q = spans.summed("quantize")
    print(f"ladder {' '.join(a.ladder_args)}: exit {rc}, wall {wall:.1f} s, load average {load0:.2f} at the "
          f"start, {os.getloadavg()[0]:.2f} at the end")
    n_r, s_r = spans.summed("report")
    print(f"llama_decode: {n_dec} calls, {s_dec:.1f} s summed over both threads; llama_model_quantize: {n_q} "
          f"calls, {s_q:.1f} s; quantize.quantize (the call, its header and hashes): {n_r} calls "
          f"({sum(r.cached for r in reports)} cached), {s_r:.1f} s")
    print(f"llama.cpp busy (union of both): {llama:.1f} s; the host alone: {wall - llama:.1f} s = "
          f"{(wall - llama) / wall:.1%} of the wall time")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
