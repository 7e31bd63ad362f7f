"""Logits -> the probability tables the coder uses, and the ideal cost of each token.

Blocks of positions at a time, in float64 numpy: no Python loop over positions or the
vocabulary. Weights are left unnormalised (exp(logit - max)); constriction rescales each
table exactly, and the ideal cost uses the same numbers, so both measure one distribution.

Why two levels: constriction's Categorical gives every symbol at least 2**-24 of the
probability mass so that any symbol stays codable. Over a 49,152-token vocabulary that
floor takes 0.3% of the mass from the real token on every step (~0.004 bits/token, about
0.1% of the file); over 262,144 tokens, 1.6%. Coding a token as (block, index within
block), with blocks of ~sqrt(V) symbols, is the same distribution exactly, but each table
has only ~sqrt(V) entries, so the floor costs ~100x less. It is also faster to build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Total probability given to escape symbols (bytes no token spells). Small enough to cost
# ~2e-5 bits per ordinary token, large enough to stay far above the coder's 2**-24 floor.
ESCAPE_MASS = 2.0**-16


def with_escapes(weights: np.ndarray, n_escapes: int) -> np.ndarray:
    """Append n_escapes columns sharing ESCAPE_MASS of each row's total weight."""
    if not n_escapes:
        return weights
    rows, n_vocab = weights.shape
    out = np.empty((rows, n_vocab + n_escapes), dtype=np.float64)
    out[:, :n_vocab] = weights
    _escapes(out, n_vocab)
    return out


def _escapes(out: np.ndarray, n_vocab: int) -> None:
    n_escapes = out.shape[1] - n_vocab
    if n_escapes:
        out[:, n_vocab:] = (out[:, :n_vocab].sum(axis=1) * (ESCAPE_MASS / (1 - ESCAPE_MASS) / n_escapes))[:, None]


def weights(logits: np.ndarray, n_escapes: int, out: np.ndarray | None = None) -> np.ndarray:
    """The coder's (unnormalised) table over the whole alphabet: tokens, then escapes.

    With `out` (rows x at least vocab + escapes, float64) the table is written there and its
    first vocab + escapes columns are returned: a step that reuses one buffer allocates nothing
    the size of the vocabulary (a fresh 400 kB array per row costs page faults: StepTables).
    """
    logits = np.asarray(logits)
    rows, n_vocab = logits.shape
    if out is None:
        out = np.empty((rows, n_vocab + n_escapes), dtype=np.float64)
    out = out[:rows, : n_vocab + n_escapes]
    w = out[:, :n_vocab]
    np.subtract(logits, logits.max(axis=1, keepdims=True), out=w, dtype=np.float64)
    np.exp(w, out=w)
    _escapes(out, n_vocab)
    return out


def ideal_bits(weights: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """-log2 p(symbol) per position, from unnormalised weights."""
    rows = np.arange(len(symbols))
    total = weights.sum(axis=1)
    return np.log2(total) - np.log2(weights[rows, symbols])


@dataclass(frozen=True)
class TwoLevel:
    """A symbol s is coded as (s // block, s % block), each against its own small table."""

    n_symbols: int
    block: int

    @classmethod
    def for_alphabet(cls, n_symbols: int) -> "TwoLevel":
        block = 1 << max(1, int(np.ceil(np.log2(max(2.0, np.sqrt(n_symbols))))))
        return cls(n_symbols, block)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_symbols // self.block)

    def _blocked(self, weights: np.ndarray) -> np.ndarray:
        rows, n = weights.shape
        padded = self.n_blocks * self.block
        if n != padded:  # zero weights for the padding: never coded, never chosen
            weights = np.concatenate([weights, np.zeros((rows, padded - n))], axis=1)
        return weights.reshape(rows, self.n_blocks, self.block)

    def tables(self, weights: np.ndarray):
        """(block table, function giving the inner tables for chosen blocks)."""
        blocked = self._blocked(weights)
        outer = blocked.sum(axis=2)

        def inner(blocks: np.ndarray) -> np.ndarray:
            return blocked[np.arange(len(blocks)), blocks]

        return outer, inner

    def split(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(symbols, self.block)

    def join(self, blocks: np.ndarray, within: np.ndarray) -> np.ndarray:
        return (blocks * self.block + within).astype(np.int32)


class StepTables:
    """One step's coder tables from its logits, in one buffer reused from step to step.

    Written by hand rather than with `weights` and `TwoLevel.tables` alone because those
    allocate vocabulary-sized arrays per row (the float64 copy, the shifted copy, the table,
    then its zero-padded copy), and fresh 400 kB arrays cost page faults on every step
    (benchmarks/test_range_coder_speed.py::test_step_tables). The padding columns of the buffer
    stay zero, so the blocked view is a reshape, and the numbers are the ones `weights` +
    `TwoLevel.tables` give (tests/codec/test_codec.py checks equality).
    """

    def __init__(self, n_symbols: int, n_escapes: int):
        self.factor = TwoLevel.for_alphabet(n_symbols)
        self.n_escapes = n_escapes
        self._buf = np.zeros((0, self.factor.n_blocks * self.factor.block))

    def weights(self, logits: np.ndarray) -> np.ndarray:
        """The table over the alphabet (a view into the buffer: valid until the next call)."""
        rows = len(logits)
        if len(self._buf) < rows:
            self._buf = np.zeros((rows, self._buf.shape[1]))
        return weights(logits, self.n_escapes, out=self._buf)

    def tables(self, weights: np.ndarray):
        """(block table, inner-table function) of the table the last `weights` call returned."""
        return self.factor.tables(self._buf[: len(weights)])


# constriction's Categorical(perfect=False) moves each entry of an n-entry table by at most a
# few units of 2**-24 (the leaky floor and the rounding of its cumulative table); the bound below
# allows 16x that, so it stays under what the coder really charges.
_QUANTIZATION_SLACK = 2.0**-20
_RELATIVE_SLACK = 2.0**-10
PAYLOAD_SLACK_BITS = 256  # the decoder's allowance beyond 8 x payload bytes; the encoder keeps half of it spare


def min_code_bits(table: np.ndarray, chosen: np.ndarray) -> float:
    """What the range coder spent on `chosen` under `table` (one row per position), from below.

    Both ends sum it over the file. The decoder refuses a file once the sum passes 8 x payload
    bytes + PAYLOAD_SLACK_BITS, so a forged token count stops when the payload is spent, not hours
    later. The encoder makes that true of every file it writes (payload_bytes_needed): a range
    coder cannot code more information than its payload holds, except for a lucky final interval,
    and trimming trailing zero bytes can make that luck large (a text of token 0 codes to zeros).
    """
    rows = np.arange(len(chosen))
    p = table[rows, chosen] / table.sum(axis=1)
    q = np.minimum(1.0, p * (1 + _RELATIVE_SLACK) + table.shape[1] * _QUANTIZATION_SLACK)
    return float(-np.log2(q).sum())


# A payload byte may stand for at most this many tokens (beyond the first SLACK_TOKENS): a header
# claiming more is refused before any model or KV cache is allocated. Real text costs ~1 bit per
# token, so only a freak file (a megabyte of one repeated token) needs the encoder's zero padding.
TOKENS_PER_PAYLOAD_BYTE = 512
SLACK_TOKENS = 4096


def max_tokens(payload_bytes: int) -> int:
    """The most tokens a payload of this size may claim."""
    return TOKENS_PER_PAYLOAD_BYTE * payload_bytes + SLACK_TOKENS


def payload_bytes_needed(spent_bits: float, n_tokens: int) -> int:
    """The shortest payload the decoder accepts: its allowance covers `spent_bits` with half the
    slack to spare, and it may claim `n_tokens` (max_tokens)."""
    by_bits = int(np.ceil((spent_bits - PAYLOAD_SLACK_BITS / 2) / 8))
    by_tokens = -(-(n_tokens - SLACK_TOKENS) // TOKENS_PER_PAYLOAD_BYTE)
    return max(0, by_bits, by_tokens)
