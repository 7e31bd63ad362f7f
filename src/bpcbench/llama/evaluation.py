"""Measurement only: windows fed as they are from position 0, for the ideal policies of other tools.

The coder's plan and evaluator are in llama/lanes.py (`Plan`, `LaneEvaluator`), and so is the
ideal path of its own plans (`StreamEvaluator`). What is left here is `PrefillEvaluator`, which
codec/policies.py uses to score the windows of llama-perplexity and lm-evaluation-harness:
a window need not start with the start token and only some of its rows are scored, which no
lane does. It prefills many tokens per llama_decode call, so its logits differ in their last
bits from the coder's one-token-per-lane calls: it measures, it never codes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bpcbench.llama.binding import Batch, Closeable, Context, Model, logits_rows
from bpcbench.llama.lanes import PREFILL_BLOCK, prefill_block


class PrefillEvaluator(Closeable):
    """One window at a time, in blocks of up to `block` tokens, in a context of `context` KV cells
    (the longest window's length)."""

    def __init__(self, model: Model, *, context: int, threads: int, block: int = PREFILL_BLOCK):
        self.model = model
        self.block = max(1, min(prefill_block(model.n_vocab, block), context))
        self.ctx = Context(model, n_seq=1, n_ctx_per_seq=context, n_batch=self.block, threads=threads)
        self.batch = Batch(self.block)
        self.batch.set_seq_ids([0] * self.block)
        self.batch.logits[:] = 1

    def window(self, inputs: np.ndarray, first_row: int, n_rows: int) -> Iterator[tuple[int, np.ndarray]]:
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
