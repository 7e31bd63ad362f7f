"""Tokens/s of lockstep evaluation at several widths against a bare llama_decode loop.

The bare loop is llama.cpp doing what its perplexity tool does: one sequence, 512 tokens
per llama_decode call, logits for every position. The codec pays for lockstep (one token
per sequence per call) with smaller matrix products; the target is >= 75% of the bare loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from bpcbench.llama.evaluation import PrefillEvaluator
from bpcbench.llama.lanes import LaneEvaluator, plan_chunks

TOKENS = 512


def test_bare_prefill_loop(benchmark, smollm2):
    inputs = (np.arange(TOKENS) % 5000 + 100).astype(np.int32)
    ev = PrefillEvaluator(smollm2, context=TOKENS, threads=2, block=TOKENS)

    def run():
        for _ in ev.window(inputs, 0, TOKENS):
            pass

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["tokens"] = TOKENS
    ev.close()


@pytest.mark.parametrize("width", [1, 8, 32])
def test_lockstep(benchmark, smollm2, width):
    steps = max(4, TOKENS // width)
    plan = plan_chunks(steps * width, steps, width)  # `width` lanes of `steps` tokens: one wave
    ev = LaneEvaluator(smollm2, lanes=plan.width, context=plan.context, threads=2)
    feed = np.full(width, 100, dtype=np.int32)

    def step(ids, t, logits):
        return feed[: len(ids)]

    benchmark.pedantic(lambda: ev.run(plan, step), rounds=2, iterations=1)
    benchmark.extra_info["tokens"] = steps * width
    ev.close()
