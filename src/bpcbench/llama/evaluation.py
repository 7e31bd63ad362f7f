"""Model probabilities from llama.cpp, evaluated so that encoder and decoder see the same logits.

Lockstep: the token stream is cut into independent chunks (each starting from the start
token) and up to `width` chunks advance together, one token per chunk per llama_decode
call. The batch always has exactly `width` rows (finished or absent chunks are padded
with the start token), so the decoder, which learns each chunk's next token only after
decoding it, issues exactly the batches the encoder issued. A prefill of many tokens per
call would be faster but gives different logits, which a decoder cannot reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from bpcbench.llama.binding import Batch, Closeable, Context, Model, logits_rows

MIN_WIDTH = 8


@dataclass(frozen=True)
class Plan:
    """How a token stream is cut and batched; everything the decoder must reproduce."""

    chunk_lengths: tuple[int, ...]
    width: int
    chunk_tokens: int

    @property
    def lengths(self) -> tuple[int, ...]:
        return self.chunk_lengths

    @property
    def n_tokens(self) -> int:
        return int(sum(self.chunk_lengths))

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.chunk_lengths)]).astype(np.int64)


def plan_chunks(n_tokens: int, chunk_tokens: int, max_width: int) -> Plan:
    """Balanced chunks of at most chunk_tokens; with many chunks, a multiple of the width.

    Equal lengths keep every row of a lockstep batch busy; the width shrinks to the number
    of chunks for short inputs (never below MIN_WIDTH, the smallest batch whose logits were
    seen not to depend on the other rows).
    """
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be >= 1")
    max_width = max(MIN_WIDTH, max_width)
    n_chunks = -(-n_tokens // chunk_tokens) if n_tokens else 0
    width = min(max_width, max(MIN_WIDTH, n_chunks))
    if n_chunks > width:
        n_chunks = -(-n_chunks // width) * width
        n_chunks = min(n_chunks, n_tokens)
    base, extra = divmod(n_tokens, n_chunks) if n_chunks else (0, 0)
    lengths = tuple([base + 1] * extra + [base] * (n_chunks - extra))
    return Plan(lengths, width, chunk_tokens)


# step(chunk_ids, position, logits_rows) -> the tokens those chunks hold at that position
StepFn = Callable[[np.ndarray, int, np.ndarray], np.ndarray]


class LockstepEvaluator(Closeable):
    def __init__(self, model: Model, *, width: int, chunk_tokens: int, threads: int):
        self.model = model
        self.width = width
        self.ctx = Context(model, n_seq=width, n_ctx_per_seq=chunk_tokens, n_batch=width, threads=threads)
        self.batch = Batch(width)
        self.batch.set_seq_ids(range(width))
        self.batch.logits[:] = 1

    def run(self, plan: Plan, step: StepFn, on_step: Callable[[int], None] | None = None) -> None:
        """Drive all chunks of `plan`; `step` consumes each position's logits and names its tokens."""
        assert plan.width == self.width
        lengths = np.asarray(plan.chunk_lengths, dtype=np.int64)
        start = self.model.start_token
        n_vocab = self.model.n_vocab
        W = self.width
        for first in range(0, len(lengths), W):
            ids = np.arange(first, min(first + W, len(lengths)))
            lens = np.zeros(W, dtype=np.int64)
            lens[: len(ids)] = lengths[ids]
            self.ctx.clear()
            inputs = np.full(W, start, dtype=np.int32)
            for t in range(int(lens.max())):
                self.batch.token[:W] = inputs
                self.batch.pos[:W] = t
                self.batch.decode(self.ctx, W)
                active = np.nonzero(lens > t)[0]
                logits = logits_rows(self.ctx, W, n_vocab)[active]
                tokens = step(ids[active], t, logits)
                inputs[:] = start
                inputs[active] = tokens
                if on_step:
                    on_step(len(active))

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()


class PrefillEvaluator(Closeable):
    """The fast path when only cross-entropy is wanted (no decoder has to follow).

    Each chunk is evaluated as one sequence in blocks of up to `block` tokens per
    llama_decode call, which is several times faster than lockstep on a CPU. Its logits
    differ slightly from lockstep's (different batch shapes), so it measures but never codes.
    """

    def __init__(self, model: Model, *, chunk_tokens: int, threads: int, block: int = 256):
        self.model = model
        self.block = max(1, min(block, chunk_tokens))
        self.ctx = Context(model, n_seq=1, n_ctx_per_seq=chunk_tokens, n_batch=self.block, threads=threads)
        self.batch = Batch(self.block)
        self.batch.set_seq_ids([0] * self.block)
        self.batch.logits[:] = 1

    def blocks(self, chunk: np.ndarray):
        """Yield (first position, logits rows) for one chunk fed from BOS; row i predicts chunk[first + i]."""
        inputs = np.concatenate([[self.model.start_token], chunk[:-1]]).astype(np.int32)
        yield from self.window(inputs, 0, len(chunk))

    def window(self, inputs: np.ndarray, first_row: int, n_rows: int):
        """Feed `inputs` as they are from position 0, in blocks of `block` tokens, asking for logits
        only at rows first_row … first_row + n_rows − 1 (as llama-perplexity does); yield (index of
        the first of those rows counted from first_row, logits rows)."""
        self.ctx.clear()
        end = first_row + n_rows
        for first in range(0, end, self.block):
            n = min(self.block, end - first)
            pos = np.arange(first, first + n)
            self.batch.token[:n] = inputs[first : first + n]
            self.batch.pos[:n] = pos
            self.batch.logits[:n] = pos >= first_row
            self.batch.decode(self.ctx, n)
            k = int(np.count_nonzero(pos >= first_row))
            if k:
                yield first + n - k - first_row, logits_rows(self.ctx, k, self.model.n_vocab)

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()
