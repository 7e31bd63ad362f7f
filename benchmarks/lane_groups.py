"""One lane group against two (#22 item 3): `python benchmarks/lane_groups.py [--bytes N] [--lanes W] [-t T] [-ngl N]`.

Compresses and decompresses the same bytes with `--lane-groups` 1 and 2, alternately, back to
back in one process (so the ratios, not the absolute times, are the result on a shared machine),
checks each round trip, and times three things in each pass: the wall time, the time inside
llama_decode (whichever thread calls it) and the time inside the encoder's or the decoder's
step (the host's work per position). With two groups a group's llama_decode runs in a worker
thread while the main thread steps the other group, so part of the decode time is hidden:
`hidden` is the time llama_decode and a step ran at once, over the time inside llama_decode.
`host share` is the steps' time over the wall time. On a CPU whose cores llama.cpp already
uses, the split calls cost more than the overlap hides; the case for two groups is a GPU.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

from bpcbench.codec import compress as codec
from bpcbench.codec import steps
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Session, Settings
from bpcbench.corpora import resolve
from bpcbench.llama import binding


class Intervals:
    """(start, end) of every llama_decode call and every step, from any thread."""

    def __init__(self):
        self.decode, self.step, self._lock = [], [], threading.Lock()

    def wrap(self, owner, name: str, into: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                with self._lock:
                    getattr(self, into).append((t0, time.perf_counter()))

        setattr(owner, name, timed)

    def take(self) -> tuple[float, float, float]:
        """(seconds in llama_decode, seconds in steps, seconds both ran at once), then cleared."""
        d, s = sorted(self.decode), sorted(self.step)
        both = sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in d for s2, e2 in _near(s, s1, e1))
        out = (sum(e - s_ for s_, e in d), sum(e - s_ for s_, e in s), both)
        self.decode, self.step = [], []
        return out


def _near(intervals, start, end):
    """The intervals of a sorted list that can meet [start, end] (a step is shorter than a pass)."""
    starts = np.fromiter((a for a, _ in intervals), float, len(intervals))
    lo = max(0, int(np.searchsorted(starts, start)) - 2)
    hi = int(np.searchsorted(starts, end))
    return intervals[lo:hi]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", default="alice29")
    ap.add_argument("--bytes", type=int, default=3000)
    ap.add_argument("--lanes", type=int, default=7)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of (1 group, 2 groups)")
    args = ap.parse_args()
    data = resolve(args.corpus).read_bytes()[: args.bytes]
    marks = Intervals()
    marks.wrap(binding.Batch, "decode", "decode")
    marks.wrap(steps.EncoderStep, "__call__", "step")
    marks.wrap(steps.DecoderStep, "__call__", "step")
    print(f"{args.model}, {args.corpus}[:{args.bytes}], {args.lanes} lanes, -t {args.threads}, "
          f"-ngl {args.n_gpu_layers}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print("| groups | pass | wall s | in llama_decode s | in steps s | host share | hidden |\n"
          "|--:|---|--:|--:|--:|--:|--:|")
    with Session(args.model, n_gpu_layers=args.n_gpu_layers) as session:
        n = len(session.vocab.tokenize(data).tokens)
        base = Settings(width=args.lanes, min_lane_tokens=max(1, -(-n // args.lanes)), threads=args.threads,
                        n_gpu_layers=args.n_gpu_layers)
        codec.compress(data[:200], session, base, fallback=False)  # warm: kernels compiled, evaluator made
        marks.take()
        for _ in range(args.repeats):
            for groups in (1, 2):
                s = Settings(**{**base.__dict__, "lane_groups": groups})
                t0 = time.perf_counter()
                blob, stats = codec.compress(data, session, s, fallback=False)
                row(groups, "compress", time.perf_counter() - t0, marks.take())
                t0 = time.perf_counter()
                out, _ = decompress(blob, session, settings=s)
                row(groups, "decompress", time.perf_counter() - t0, marks.take())
                assert out == data and stats.lanes == args.lanes, "round trip failed"
                print(f"|  | file | {len(blob):,} B |  |  |  |  |")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def row(groups: int, direction: str, wall: float, marks: tuple[float, float, float]) -> None:
    decode, step, both = marks
    print(f"| {groups} | {direction} | {wall:.2f} | {decode:.2f} | {step:.2f} | {step / wall:.1%} | "
          f"{both / decode:.1%} |")


if __name__ == "__main__":
    main()
