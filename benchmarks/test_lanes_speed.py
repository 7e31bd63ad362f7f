"""Lanes against bare llama_decode loops: the codec's own per-step work must not be what limits it.

Targets (issue "Long context at full speed"): one lane coding a text ≥ 90% of a bare
one-token-per-call llama_decode loop on the same model and context; W lanes ≥ 85% of a bare
W-row loop. `make bench-micro` prints tokens/s (extra_info) for each; compare the pairs.
"""

from __future__ import annotations

import pytest

from bpcbench.codec.compress import compress
from bpcbench.codec.session import Settings
from bpcbench.corpora import load_manifest
from bpcbench.llama.binding import Batch, Context, logits_rows

STEPS = 256
THREADS = 1  # the shared 2-core machine: one spinning thread per measurement


def _bare_loop(model, lanes: int, steps: int) -> None:
    """llama_decode with `lanes` rows of one token each, logits read back, nothing else."""
    with Context(model, n_seq=lanes, n_ctx_per_seq=steps + 1, n_batch=lanes, threads=THREADS) as ctx, \
            Batch(lanes) as batch:
        batch.set_seq_ids(range(lanes))
        batch.logits[:] = 1
        for t in range(steps):
            batch.token[:lanes] = 100 + t % 50
            batch.pos[:lanes] = t
            batch.decode(ctx, lanes)
            logits_rows(ctx, lanes, model.n_vocab)[:, :1].copy()


@pytest.mark.parametrize("lanes", [1, 8])
def test_bare_decode_loop(benchmark, session, lanes):
    benchmark.pedantic(lambda: _bare_loop(session.model, lanes, STEPS), rounds=2, iterations=1)
    benchmark.extra_info["tokens"] = STEPS * lanes


@pytest.mark.parametrize("lanes", [1, 8])
def test_lanes_coding(benchmark, session, lanes):
    data = load_manifest()["alice29"].read_bytes()
    tokens = session.vocab.tokenize(data).tokens[: STEPS * lanes]
    text = session.vocab.detokenize(tokens)
    s = Settings(context=STEPS + 1, width=lanes, min_lane_tokens=STEPS, threads=THREADS)
    _, stats = compress(text, session, s)
    assert stats.lanes == lanes
    benchmark.pedantic(lambda: compress(text, session, s), rounds=2, iterations=1)
    benchmark.extra_info["tokens"] = stats.n_tokens
