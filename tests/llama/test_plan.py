"""The one plan and its evaluator: layouts, waves, and what the step is shown, on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from bpcbench.errors import BpcError
from bpcbench.llama.lanes import (
    MAX_PLAN_LANES,
    PREFILL_BLOCK,
    PREFILL_LOGITS_BYTES,
    LaneEvaluator,
    make_plan,
    plan_chunks,
    plan_lanes,
    prefill_block,
)


def test_a_lanes_plan_is_one_wave_and_a_chunks_plan_never_slides():
    lanes = plan_lanes(1000, 7, 100, 64, 16)
    assert lanes.width == lanes.n_lanes == 7 and len(lanes.waves()) == 1
    chunks = plan_chunks(1000, 64, 7)
    assert chunks.n_lanes == 16 and max(chunks.lengths) <= 64 and chunks.discard == 0
    assert [w.tolist() for w in chunks.waves()] == [list(range(7)), list(range(7, 14)), [14, 15]]
    assert chunks.context_lengths().max() == max(chunks.lengths)  # from BOS, no slide


def test_width_is_kept_to_the_lanes_so_alike_plans_compare_equal():
    """A header may write the format's default width wherever the plan comes out the same."""
    assert plan_lanes(100, 5, 40, 16, 4) == plan_lanes(100, 32, 40, 16, 4)  # 3 lanes either way
    assert plan_chunks(30, 16, 8) == plan_chunks(30, 16, 32) and plan_chunks(30, 16, 8).width == 2
    assert plan_lanes(0, 8, 10, 16, 4).width == 1


@pytest.mark.parametrize("policy, changes, message", [
    ("chunks", {"context": 1}, "at least 2 tokens"),
    ("chunks", {"context": 2, "n_tokens": 2 * MAX_PLAN_LANES + 2}, "more lanes than a plan may have"),
    ("lanes", {"width": 257}, "more lanes than llama.cpp allows"),
    ("lanes", {"discard": 16}, "discard must be between"),
    ("llama-perplexity", {}, "the coder's plans are lanes, chunks"),
])
def test_impossible_plans_are_refused(policy, changes, message):
    args = {"n_tokens": 100, "width": 4, "min_lane_tokens": 10, "context": 16, "discard": 4} | changes
    with pytest.raises(BpcError, match=message):
        make_plan(policy, args.pop("n_tokens"), **args)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_every_wave_starts_from_an_empty_cache(tiny_session, width):
    """Four copies of one chunk, `width` at a time: each copy is shown the same positions in order
    and, wherever its wave has the same shape, gets bit-identical logits."""
    piece = tiny_session.vocab.tokenize(b"The quick brown fox jumps over the lazy dog.").tokens[:12]
    tokens = np.tile(piece, 4)
    plan = plan_chunks(len(tokens), len(piece), width)
    assert plan.lengths == (len(piece),) * 4
    offs, seen, rows = plan.offsets(), [], {}

    def step(ids, t, logits):
        seen.extend((int(i), t) for i in ids)
        for i, row in zip(ids, logits):
            rows.setdefault(int(i), []).append(row.copy())
        return tokens[offs[ids] + t]

    with LaneEvaluator(tiny_session.model, lanes=plan.width, context=plan.context, threads=1) as ev:
        ev.run(plan, step)
    assert sorted(seen) == [(i, t) for i in range(4) for t in range(len(piece))]
    first = [int(w[0]) for w in plan.waves()]
    full = [w for w in plan.waves() if len(w) == width]
    for a, b in zip(full, full[1:]):  # waves of the same shape: lane k of each is the same evaluation
        for i, j in zip(a, b):
            assert all(np.array_equal(x, y) for x, y in zip(rows[int(i)], rows[int(j)]))
    assert first == list(range(0, 4, width))


def test_the_measuring_evaluators_logits_per_call_are_bounded_by_bytes():
    assert prefill_block(49_152) == PREFILL_BLOCK == 256  # SmolLM2: 48 MiB, unchanged
    assert prefill_block(262_144) == 64  # Gemma 3: 64 MiB instead of 256
    assert prefill_block(512) == 256 and prefill_block(1 << 40) == 1
    assert all(prefill_block(v) * 4 * v <= PREFILL_LOGITS_BYTES for v in (49_152, 151_936, 262_144))
