"""Logits -> the probabilities the coder uses, and the ideal cost of each token.

Blocks of positions at a time, in float64 numpy: no Python loop over positions or the
vocabulary. The probabilities are left unnormalised (exp(logit - max)); constriction
rescales them exactly, and the ideal cost uses the same numbers, so the two measure the
same distribution.
"""

from __future__ import annotations

import numpy as np

LOG2E = 1.4426950408889634


def unnormalised_probabilities(logits: np.ndarray) -> np.ndarray:
    """exp(logits - rowmax) as float64, shape (positions, vocab)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    return x


# Total probability given to escape symbols (bytes no token spells). Small enough to cost
# ~2e-5 bits per ordinary token, large enough to stay above the coder's 2**-24 floor.
ESCAPE_MASS = 2.0**-16


def with_escapes(weights: np.ndarray, n_escapes: int) -> np.ndarray:
    """Append n_escapes columns sharing ESCAPE_MASS of each row's total weight."""
    if not n_escapes:
        return weights
    rows, n_vocab = weights.shape
    out = np.empty((rows, n_vocab + n_escapes), dtype=np.float64)
    out[:, :n_vocab] = weights
    out[:, n_vocab:] = (weights.sum(axis=1) * (ESCAPE_MASS / (1 - ESCAPE_MASS) / n_escapes))[:, None]
    return out


def ideal_bits(weights: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """-log2 p(symbol) per position, from unnormalised weights."""
    rows = np.arange(len(symbols))
    total = weights.sum(axis=1)
    return np.log2(total) - np.log2(weights[rows, symbols])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Natural-log probabilities in float64 (for KL divergence between two models)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
