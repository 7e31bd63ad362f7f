"""What the match model gains on top of the LLM (#25): ideal bits of the LLM alone and of `--mix match`,
from ONE llama.cpp pass per corpus (the ideal path's own blocks, so both columns are exactly what
`cross_entropy` gives with mix none and match), and the host time of each scorer.

    PYTHONPATH=src python benchmarks/mix_gain.py alice29:30000 typing-extensions:16000 iso3166-1:16000

NAME:BYTES measures that prefix (0: the whole file); the model is smollm2-135m unless --model.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bpcbench.codec import entropy_model, kernel, mixing
from bpcbench.codec.cross_entropy import ideal_plan
from bpcbench.codec.session import Session, Settings
from bpcbench.corpora import resolve, take_prefix
from bpcbench.llama.lanes import StreamEvaluator


def measure(session: Session, data: bytes, threads: int) -> dict:
    settings = Settings(threads=threads).resolved(session.model)
    tokens = session.vocab.tokenize(data).tokens
    plan = ideal_plan(len(tokens), settings)  # policy lanes: one lane over the whole text
    n_esc = len(session.vocab.escape_bytes)
    mixed = mixing.step_tables("match", session.vocab.n_symbols, n_esc, 1, len(tokens))
    plain_bits, mixed_bits = np.zeros(len(tokens)), np.zeros(len(tokens))
    seconds = {"llm_s": 0.0, "plain_s": 0.0, "mixed_s": 0.0}
    kernel.set_threads(threads)
    with StreamEvaluator(session.model, context=plan.context, discard=plan.discard, threads=threads) as ev:
        blocks = ev.blocks(session.vocab.model_input(tokens))
        while True:
            t0 = time.perf_counter()
            try:
                first, logits = next(blocks)
            except StopIteration:
                break
            t1 = time.perf_counter()
            sym = tokens[first : first + len(logits)]
            plain_bits[first : first + len(sym)] = entropy_model.ideal(logits, sym, n_esc)[0]
            t2 = time.perf_counter()
            mixed_bits[first : first + len(sym)] = mixed.score(logits, sym, 0)
            t3 = time.perf_counter()
            for k, dt in (("llm_s", t1 - t0), ("plain_s", t2 - t1), ("mixed_s", t3 - t2)):
                seconds[k] += dt
    return {"tokens": len(tokens), "plain": math.fsum(plain_bits), "mixed": math.fsum(mixed_bits), **seconds}


def corpus_spec(spec: str) -> tuple[str, str, bytes]:
    """NAME:BYTES -> (name, the BYTES as written, the prefix; 0 or none: the whole file)."""
    name, _, n = spec.partition(":")
    full = resolve(name).read_bytes()
    return name, n, take_prefix(full, int(n)) if n and int(n) else full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpora", nargs="+", help="NAME:BYTES (0 = whole file)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with Session(args.model) as session:
        for spec in args.corpora:
            name, _, data = corpus_spec(spec)
            r = measure(session, data, args.threads)
            per = {k: 1e3 * r[f"{k}_s"] / max(1, r["tokens"]) for k in ("llm", "plain", "mixed")}
            cost = (per["llm"] + per["mixed"]) / (per["llm"] + per["plain"]) - 1
            print(f"{name} ({len(data):,} bytes, {r['tokens']:,} tokens): llm {r['plain'] / len(data):.5f} bits/byte, "
                  f"llm+match {r['mixed'] / len(data):.5f} ({100 * (r['mixed'] / r['plain'] - 1):+.2f}%); "
                  f"ms per token: llama.cpp {per['llm']:.2f}, LLM scoring {per['plain']:.3f}, mixed scoring "
                  f"{per['mixed']:.3f} -> per-token cost {100 * cost:+.1f}%",
                  flush=True)


if __name__ == "__main__":
    main()
