"""Where an ideal row's time goes (issue #22: SmolLM2's ideal row at 0.83 of `llama-bench -p 256 -d 1536`).

One `cross_entropy` call, policy lanes, context 2048, with its parts timed in the same process:
tokenizing, every `llama_decode` (grouped by the depth it starts at, the first one after a slide
apart), the slides, and the rest (scoring, the generator, copies). Then, back to back, a bare
loop of the same calls (the same tokens, positions and slides, every token's logits, nothing
scored) and one `llama_decode` of 256 tokens at depth 1536 on a fresh context: the prefill
`side_by_side.py` compares against. Run from a checkout:

    PYTHONPATH=src python benchmarks/ideal_breakdown.py -m smollm2-135m -t 2 --bytes 30000

The depth profile is what the plan asks for, not a choice of this script: a lane's first
`context` tokens start at depth 0, 256, ..., then every block starts at 1536 or 1792 (a quarter
of the window dropped at each slide), where llama-bench's prefill always starts at 1536.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np

from bpcbench.codec import cross_entropy
from bpcbench.codec.session import Session, Settings
from bpcbench.corpora import load_manifest, take_prefix
from bpcbench.llama import lanes
from bpcbench.llama.binding import Batch, usable_cores
from side_by_side import bare_prefill  # benchmarks/ is on sys.path when this runs as a script


class Clock:
    """Wraps Batch.decode, StreamEvaluator.slide and the tokenizer; sums seconds per kind."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self.after_slide = False

    def wrap(self, owner, name: str, kind, slides: bool = False):
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            k = kind(args) if callable(kind) else kind
            self.seconds[k] += time.perf_counter() - t0
            self.calls[k] += 1
            self.after_slide = self.after_slide or slides
            return out

        setattr(owner, name, timed)
        return inner

    def decode_kind(self, args) -> str:
        batch, n = args[0], args[2]
        band = int(batch.pos[0]) // 256 * 256  # Gemma's blocks are 64 rows: its depths, in bands of 256
        kind = f"decode from depth {band}–{band + 255}" + (" after a slide" if self.after_slide else "") + f", n {n}"
        self.after_slide = False
        return kind


def bare(session: Session, lane: np.ndarray, threads: int, context: int, discard: int) -> tuple[float, float]:
    """(seconds of the same decode calls with nothing scored, tokens/s of one 256 block at depth 1536 with
    every token's logits, as side_by_side.py times it); `lane` is the text's model input, one lane (texts
    under the plan's min_lane_tokens)."""
    model = session.model
    with lanes.StreamEvaluator(model, context=context, discard=discard, threads=threads) as ev:
        t0 = time.perf_counter()
        for _ in ev.blocks(lane):
            pass
        same = time.perf_counter() - t0
    tokens = np.concatenate([[model.start_token], lane]).astype(np.int32)
    return same, bare_prefill(model.path, tokens, threads, all_logits=True, reps=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default="smollm2-135m")
    p.add_argument("-t", "--threads", type=int, default=usable_cores())
    p.add_argument("--bytes", type=int, default=30000, help="prefix of alice29 (default 30,000, the issue's)")
    a = p.parse_args(argv)
    data = take_prefix(load_manifest()["alice29"].read_bytes(), a.bytes)
    settings = Settings(context=2048, threads=a.threads)
    with Session(a.model) as session:
        cross_entropy.cross_entropy(data[:300], session, settings)  # numba's kernels load from their cache
        clock = Clock()
        decode = clock.wrap(Batch, "decode", clock.decode_kind)
        slide = clock.wrap(lanes._Window, "slide", "slide", slides=True)
        tokenize = clock.wrap(type(session.vocab), "tokenize", "tokenize")
        try:
            st = cross_entropy.cross_entropy(data, session, settings)
        finally:
            Batch.decode, lanes._Window.slide, type(session.vocab).tokenize = decode, slide, tokenize
        resolved = settings.resolved(session.model)
        lane = np.asarray(session.vocab.model_input(session.vocab.tokenize(data).tokens), dtype=np.int32)
        same, at1536 = bare(session, lane, a.threads, resolved.context, resolved.discard)
    load = os.getloadavg()[0]
    print(f"{a.model}, {a.bytes:,} B, {st.n_tokens:,} tokens, threads {a.threads}, load average {load:.2f}")
    print(f"ideal row: {st.seconds:.2f} s, {st.n_tokens / st.seconds:.1f} tok/s")
    print("| part | calls | s | share of the row | s per call |")
    print("|---|--:|--:|--:|--:|")
    for kind in sorted(clock.seconds, key=lambda k: -clock.seconds[k]):
        s, n = clock.seconds[kind], clock.calls[kind]
        print(f"| {kind} | {n} | {s:.3f} | {s / st.seconds:.1%} | {s / n * 1e3:.1f} ms |")
    rest = st.seconds - sum(clock.seconds.values())
    print(f"| the rest (scoring, generator, copies) | | {rest:.3f} | {rest / st.seconds:.1%} | |")
    print(f"bare loop of the same calls, nothing scored: {same:.2f} s, {st.n_tokens / same:.1f} tok/s "
          f"(the row at {same / st.seconds:.2f} of it)")
    print(f"one 256 block at depth 1536, every token's logits: {at1536:.1f} tok/s "
          f"(the row at {st.n_tokens / st.seconds / at1536:.2f}, the same calls' loop at "
          f"{st.n_tokens / same / at1536:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
