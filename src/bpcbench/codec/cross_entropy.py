"""Cross-entropy without coding: Σ −log2 p over tokens, per byte of input, on the fast path.

Uses the same tokenization and chunk plan as the codec, so the number is the one the
coder approaches; only the batch shapes (and therefore the last bits of the logits) differ.
"""

from __future__ import annotations

import time

import numpy as np

from bpcbench.codec import entropy_model
from bpcbench.codec.compress import Stats
from bpcbench.codec.session import Session, Settings
from bpcbench.llama.evaluation import PrefillEvaluator


def cross_entropy(data: bytes, session: Session, settings: Settings | None = None, progress=None) -> Stats:
    settings = settings or Settings()
    t0 = time.perf_counter()
    tok, plan = session.prepare(data, settings)
    tokens, offs = tok.tokens, plan.offsets()
    n_escapes = len(session.vocab.escape_bytes)
    chunk_bits = np.zeros(len(plan.chunk_lengths))
    if progress is not None:
        progress.reset(total=plan.n_tokens)
    if plan.chunk_lengths:
        with PrefillEvaluator(session.model, chunk_tokens=settings.chunk_tokens, threads=settings.threads) as ev:
            for i in range(len(plan.chunk_lengths)):
                chunk = tokens[offs[i] : offs[i + 1]]
                for first, logits in ev.blocks(session.vocab.model_input(chunk)):
                    symbols = chunk[first : first + len(logits)]
                    weights = entropy_model.weights(logits, n_escapes)
                    chunk_bits[i] += entropy_model.ideal_bits(weights, symbols).sum()
                    if progress is not None:
                        progress.update(len(logits))
    return Stats.measured(data, tok, plan, chunk_bits, session.vocab, t0)
