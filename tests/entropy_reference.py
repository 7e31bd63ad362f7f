"""The coder's distribution written plainly in float64 numpy: the reference the compiled kernel
(codec/kernel.py) is tested against, and the host step as bpcbench computed it before the kernel
(benchmarks/test_host_step.py measures both).

Row-wise: w = exp(l - max l) over the vocabulary, then n_escapes columns sharing ESCAPE_MASS of
the total, then zero padding to n_blocks x block; the coder's tables are the block sums and the
chosen block's entries. Each function materialises rows x alphabet float64 arrays: fine for a
test, what the kernel exists to avoid.
"""

from __future__ import annotations

import numpy as np

from bpcbench.codec.entropy_model import ESCAPE_MASS, TwoLevel


def weights(logits: np.ndarray, n_escapes: int) -> np.ndarray:
    """rows x (vocab + escapes): exp(l - max l), then the escape columns."""
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    if not n_escapes:
        return x
    esc = x.sum(axis=1) * (ESCAPE_MASS / (1 - ESCAPE_MASS) / n_escapes)
    return np.concatenate([x, np.repeat(esc[:, None], n_escapes, axis=1)], axis=1)


def blocked(w: np.ndarray, factor: TwoLevel) -> np.ndarray:
    """rows x n_blocks x block, zero padded."""
    padded = np.zeros((len(w), factor.n_blocks * factor.block))
    padded[:, : w.shape[1]] = w
    return padded.reshape(len(w), factor.n_blocks, factor.block)


def ideal_bits(w: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """-log2 p(symbol) per row, from unnormalised weights."""
    return np.log2(w.sum(axis=1)) - np.log2(w[np.arange(len(symbols)), symbols])


def plain_nats(logits: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """-ln p(symbol) under the plain softmax over the vocabulary (no escapes)."""
    w = weights(logits, 0)
    return np.log(w.sum(axis=1)) - np.log(w[np.arange(len(symbols)), symbols])


def kld(lb: np.ndarray, lq: np.ndarray) -> np.ndarray:
    """KL(base || level) in nats per row, over the vocabulary."""
    lpb = np.asarray(lb, np.float64)
    lpb = lpb - lpb.max(axis=1, keepdims=True)
    lpb -= np.log(np.exp(lpb).sum(axis=1, keepdims=True))
    lpq = np.asarray(lq, np.float64)
    lpq = lpq - lpq.max(axis=1, keepdims=True)
    lpq -= np.log(np.exp(lpq).sum(axis=1, keepdims=True))
    return (np.exp(lpb) * (lpb - lpq)).sum(axis=1)


class StepTables:
    """The coded step's tables as compress and decompress built them before the kernel: one float64
    buffer of rows x padded alphabet reused from step to step, block sums over its blocked view."""

    def __init__(self, n_symbols: int, n_escapes: int):
        self.factor = TwoLevel.for_alphabet(n_symbols)
        self.n_escapes = n_escapes
        self._buf = np.zeros((0, self.factor.n_blocks * self.factor.block))

    def weights(self, logits: np.ndarray) -> np.ndarray:
        rows, n_vocab = logits.shape
        if len(self._buf) < rows:
            self._buf = np.zeros((rows, self._buf.shape[1]))
        out = self._buf[:rows, : n_vocab + self.n_escapes]
        w = out[:, :n_vocab]
        np.subtract(logits, logits.max(axis=1, keepdims=True), out=w, dtype=np.float64)
        np.exp(w, out=w)
        if self.n_escapes:
            out[:, n_vocab:] = (w.sum(axis=1) * (ESCAPE_MASS / (1 - ESCAPE_MASS) / self.n_escapes))[:, None]
        return out

    def tables(self, rows: int):
        """(block table, function giving the chosen blocks' entries)."""
        b = self._buf[:rows].reshape(rows, self.factor.n_blocks, self.factor.block)
        return b.sum(axis=2), lambda blocks: b[np.arange(len(blocks)), blocks]
