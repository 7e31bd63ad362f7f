"""Dump what mixer experiments need (#25), from ONE llama.cpp pass per corpus on the ideal path's own
blocks (as benchmarks/mix_gain.py): per token the target symbol, the LLM's exact coder bits for it,
its top-probability (1 / row total), the K most probable symbols with their probabilities, and the
probabilities of the recent successors of the order-1 and order-2 contexts (the tokens any match or
context model could predict), so mixer variants are scored offline in seconds (benchmarks/mix_lab.py).

    PYTHONPATH=src python benchmarks/mix_dump.py alice29:0 iso3166-1:0 --out /tmp/mixdump -t 1

Writes OUT/NAME.npz: tokens (n), bits (n), ptop (n), cand (n x C symbol ids, -1 = none), pcand (n x C).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from bpcbench.codec import entropy_model, kernel
from bpcbench.codec.cross_entropy import ideal_plan
from bpcbench.codec.session import Session, Settings
from bpcbench.llama.lanes import StreamEvaluator
from mix_gain import corpus_spec  # benchmarks/ is on sys.path when this runs as a script

TOP_K = 64
SUCC_1, SUCC_2 = 32, 16  # recent distinct successors kept per order-1 / order-2 context


def successors(tokens: np.ndarray) -> np.ndarray:
    """Per position i: the distinct tokens that followed earlier occurrences of tokens[i-1] and of
    tokens[i-2:i], most recent first (order 2 first), -1 padded."""
    out = np.full((len(tokens), SUCC_1 + SUCC_2), -1, dtype=np.int64)
    s1: dict[int, list[int]] = {}
    s2: dict[tuple[int, int], list[int]] = {}
    toks = tokens.tolist()
    for i in range(len(toks)):
        row: list[int] = []
        if i >= 2:
            row += s2.get((toks[i - 2], toks[i - 1]), [])
        if i >= 1:
            row += [t for t in s1.get(toks[i - 1], []) if t not in row]
        out[i, : len(row)] = row[: out.shape[1]]
        t = toks[i]
        if i >= 1:
            lst = s1.setdefault(toks[i - 1], [])
            if t in lst:
                lst.remove(t)
            lst.insert(0, t)
            del lst[SUCC_1:]
        if i >= 2:
            lst = s2.setdefault((toks[i - 2], toks[i - 1]), [])
            if t in lst:
                lst.remove(t)
            lst.insert(0, t)
            del lst[SUCC_2:]
    return out


def dump(session: Session, data: bytes, threads: int) -> dict:
    settings = Settings(threads=threads).resolved(session.model)
    tokens = np.asarray(session.vocab.tokenize(data).tokens, dtype=np.int64)
    plan = ideal_plan(len(tokens), settings)
    n_esc = len(session.vocab.escape_bytes)
    n = len(tokens)
    succ = successors(tokens)
    ncand = TOP_K + succ.shape[1]
    cand = np.full((n, ncand), -1, dtype=np.int32)
    pcand = np.zeros((n, ncand), dtype=np.float64)
    bits, ptop = np.zeros(n), np.zeros(n)
    kernel.set_threads(threads)
    with StreamEvaluator(session.model, context=plan.context, discard=plan.discard, threads=threads) as ev:
        for first, logits in ev.blocks(session.vocab.model_input(tokens)):
            sym = tokens[first : first + len(logits)]
            rows = slice(first, first + len(sym))
            bits[rows] = entropy_model.ideal(logits, sym, n_esc)[0]
            w = entropy_model.weights(logits, n_esc)
            total = w.sum(axis=1)
            ptop[rows] = w.max(axis=1) / total
            top = np.argpartition(-w, TOP_K, axis=1)[:, :TOP_K]
            r = np.arange(len(sym))[:, None]
            order = np.argsort(-w[r, top], axis=1)
            top = top[r, order]
            cand[rows, :TOP_K] = top
            pcand[rows, :TOP_K] = w[r, top] / total[:, None]
            sc = succ[rows]
            cand[rows, TOP_K:] = sc
            pcand[rows, TOP_K:] = np.where(sc >= 0, w[r, np.maximum(sc, 0)] / total[:, None], 0.0)
            print(f"  {first + len(sym)}/{n}", flush=True)
    return {"tokens": tokens, "bits": bits, "ptop": ptop, "cand": cand, "pcand": pcand,
            "nbytes": np.array(len(data))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpora", nargs="+", help="NAME:BYTES (0 = whole file)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with Session(args.model) as session:
        for spec in args.corpora:
            name, n, data = corpus_spec(spec)
            r = dump(session, data, args.threads)
            np.savez(args.out / f"{name}-{n or 0}.npz", **r)
            print(f"{name}: {len(r['tokens'])} tokens, llm {r['bits'].sum() / len(data):.5f} bits/byte", flush=True)


if __name__ == "__main__":
    main()
