"""Lanes: contiguous segments of the token stream, each with its own sliding KV window.

The token stream is cut into W contiguous segments (lanes), W = min(width, ⌈n / min_lane⌉),
balanced to within one token. Every lane starts from the start token (BOS) and keeps its KV
cache across its whole segment; when a lane's cache holds `context` tokens (BOS included)
it slides: the `discard` oldest tokens after BOS are dropped and the rest move back, so
every token is predicted from between context − discard and context tokens of history
(fewer at the start of a lane, its cold start).

Lockstep: each llama_decode call holds one token of every lane still running, never
padding. The decoder learns a lane's next token only after decoding it, so it cannot
prefill; but it issues exactly the calls the encoder issued (same rows, positions, slides),
which is all that bit-exactness needs.

Sliding uses llama.cpp's own KV shift (llama_memory_seq_rm + llama_memory_seq_add; llama.cpp
re-rotates the keys) where the model's memory can shift; elsewhere the kept tokens are
evaluated again from BOS. Both ends take the same branch (the container records which).

`stream` is the fast path for the ideal measurement of the same policy: one lane over the
whole text, evaluated in blocks that end exactly where the lane slides, so each token has
the same context as in a one-lane codec run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bpcbench.errors import BpcError
from bpcbench.llama.binding import Batch, Closeable, Context, Model, logits_rows

MAX_LANES = 256  # llama.cpp refuses a context with more sequences (LLAMA_MAX_SEQ in this build)
REEVAL_BLOCK = 256  # tokens per llama_decode call when kept tokens are evaluated again
PREFILL_BLOCK = 256


@dataclass(frozen=True)
class LanePlan:
    """Everything the decoder must reproduce: lane lengths (in stream order) and the window."""

    lengths: tuple[int, ...]
    context: int  # KV cells per lane, BOS included
    discard: int  # tokens dropped at each slide

    @property
    def n_tokens(self) -> int:
        return int(sum(self.lengths))

    @property
    def n_lanes(self) -> int:
        return len(self.lengths)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def context_lengths(self) -> np.ndarray:
        """Tokens in the KV cache (BOS included) when each token of the stream is predicted."""
        return np.concatenate([window_context(n, self.context, self.discard) for n in self.lengths] or [[]])


def window_context(n: int, context: int, discard: int) -> np.ndarray:
    """Context of tokens 0 … n−1 of one lane: 1, 2, …, context, then context − discard + 1 … context again.

    >>> window_context(7, 4, 2).tolist()
    [1, 2, 3, 4, 3, 4, 3]
    """
    t = np.arange(n, dtype=np.int64)
    slid = context - discard + 1 + (t - context) % discard
    return np.where(t < context, t + 1, slid)


def check_window(context: int, discard: int) -> None:
    if context < 2:
        raise BpcError(f"context must be at least 2 tokens (BOS and one more), got {context}")
    if not 1 <= discard <= context - 1:
        raise BpcError(f"discard must be between 1 and context − 1 = {context - 1}, got {discard}")


def default_discard(context: int) -> int:
    """A quarter of the window: every token keeps at least 3/4 of `context` once the lane is warm."""
    return max(1, context // 4)


def plan_lanes(n_tokens: int, width: int, min_lane_tokens: int, context: int, discard: int) -> LanePlan:
    """W = min(width, ⌈n / min_lane_tokens⌉) contiguous lanes, longer ones first, lengths within one.

    >>> plan_lanes(10, 4, 3, 8, 2).lengths
    (3, 3, 2, 2)
    >>> plan_lanes(10, 32, 100, 8, 2).lengths
    (10,)
    """
    if width < 1 or min_lane_tokens < 1:
        raise BpcError("width and min_lane_tokens must be positive")
    check_window(context, discard)
    lanes = min(width, -(-n_tokens // min_lane_tokens)) if n_tokens else 0
    base, extra = divmod(n_tokens, lanes) if lanes else (0, 0)
    return LanePlan(tuple([base + 1] * extra + [base] * (lanes - extra)), context, discard)


# step(lane ids, position in lane, logits rows) -> the tokens those lanes hold at that position
StepFn = Callable[[np.ndarray, int, np.ndarray], np.ndarray]


class _Window(Closeable):
    """A context whose sequences slide: by KV shift where possible, else by evaluating again."""

    def __init__(self, model: Model, *, n_seq: int, context: int, n_batch: int, threads: int, shift: bool | None):
        self.model = model
        self.ctx = Context(model, n_seq=n_seq, n_ctx_per_seq=context, n_batch=n_batch, threads=threads)
        self.shift = self.ctx.can_shift if shift is None else shift
        if self.shift and not self.ctx.can_shift:
            raise BpcError("this model's KV cache cannot shift, but the file was coded with KV shifts")
        if not self.shift and n_batch < REEVAL_BLOCK:  # evaluating kept tokens again needs a larger batch
            self.ctx.close()
            self.ctx = Context(model, n_seq=n_seq, n_ctx_per_seq=context, n_batch=REEVAL_BLOCK, threads=threads)
        self._reeval = None if self.shift else Batch(REEVAL_BLOCK)

    def slide(self, seq: int, kv: int, discard: int, history: np.ndarray) -> int:
        """Drop `discard` tokens after BOS from a full sequence; -> its new length. `history`
        is every token the sequence was fed after BOS (used when the cache cannot shift)."""
        if self.shift:
            self.ctx.forget(seq, 1, 1 + discard)
            self.ctx.shift(seq, 1 + discard, -discard)
            return kv - discard
        kept = np.concatenate([[self.model.start_token], history[len(history) - (kv - 1 - discard):]])
        self.ctx.forget(seq, 0, -1)
        b = self._reeval
        b.set_seq_ids([seq] * b.capacity)
        b.logits[:] = 0
        for first in range(0, len(kept), b.capacity):
            n = min(b.capacity, len(kept) - first)
            b.token[:n] = kept[first : first + n]
            b.pos[:n] = np.arange(first, first + n)
            b.decode(self.ctx, n)
        return len(kept)

    def close(self) -> None:
        if self._reeval is not None:
            self._reeval.close()
        self.ctx.close()


class LaneEvaluator(_Window):
    def __init__(self, model: Model, *, lanes: int, context: int, threads: int, shift: bool | None = None):
        super().__init__(model, n_seq=max(1, lanes), context=context, n_batch=max(1, lanes), threads=threads,
                         shift=shift)
        self.lanes = max(1, lanes)
        self.batch = Batch(self.lanes)
        self.batch.logits[:] = 1

    def run(self, plan: LanePlan, step: StepFn, on_step: Callable[[int], None] | None = None) -> None:
        """Drive every lane of `plan`; `step` consumes each position's logits and names its tokens."""
        lengths = np.asarray(plan.lengths, dtype=np.int64)
        if not len(lengths):
            return
        assert len(lengths) <= self.lanes
        fed = np.zeros((len(lengths), int(lengths.max())), dtype=np.int32)  # inputs after BOS, per lane
        kv = np.zeros(len(lengths), dtype=np.int64)
        inputs = np.full(len(lengths), self.model.start_token, dtype=np.int32)
        self.ctx.clear()
        for t in range(int(lengths.max())):
            active = np.nonzero(lengths > t)[0]
            for j in active[kv[active] == plan.context]:
                kv[j] = self.slide(int(j), int(kv[j]), plan.discard, fed[j, : t - 1])
            n = len(active)
            self.batch.set_seq_ids(active.tolist())
            self.batch.token[:n] = inputs[active]
            self.batch.pos[:n] = kv[active]
            self.batch.decode(self.ctx, n)
            kv[active] += 1
            tokens = step(active, t, logits_rows(self.ctx, n, self.model.n_vocab))
            inputs[active] = tokens
            fed[active, t] = tokens
            if on_step:
                on_step(n)

    def close(self) -> None:
        self.batch.close()
        super().close()


class StreamEvaluator(_Window):
    """One lane over a whole text, prefilled in blocks that end where the lane slides."""

    def __init__(self, model: Model, *, context: int, threads: int, block: int = PREFILL_BLOCK):
        self.block = max(1, min(block, context))
        super().__init__(model, n_seq=1, context=context, n_batch=self.block, threads=threads, shift=None)
        self.batch = Batch(self.block)
        self.batch.set_seq_ids([0] * self.block)
        self.batch.logits[:] = 1

    def blocks(self, tokens: np.ndarray, context: int, discard: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first index, logits rows); row i predicts tokens[first + i]."""
        inputs = np.concatenate([[self.model.start_token], tokens[:-1]]).astype(np.int32)
        self.ctx.clear()
        kv, first = 0, 0
        while first < len(tokens):
            if kv == context:
                kv = self.slide(0, kv, discard, inputs[1:first])
            n = min(self.block, len(tokens) - first, context - kv)
            self.batch.token[:n] = inputs[first : first + n]
            self.batch.pos[:n] = np.arange(kv, kv + n)
            self.batch.decode(self.ctx, n)
            yield first, logits_rows(self.ctx, n, self.model.n_vocab)
            kv += n
            first += n

    def close(self) -> None:
        self.batch.close()
        super().close()
