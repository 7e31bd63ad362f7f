"""The distribution the coder uses, from logits: the rule, its two-level layout, and its costs.

The rule, per row: weights exp(l - max l) over the vocabulary, left unnormalised (constriction
rescales each table exactly, and the ideal cost uses the same numbers, so both measure one
distribution); then the escape symbols, sharing ESCAPE_MASS of the total; then zero padding to
whole blocks. codec/kernel.py computes it, compiled, row by row (each weight as exp32(l - m_b) *
exp(m_b - max l), m_b its block's max: within ~1e-7 relative of exp(l - max l), and the same bits
in encoder and decoder on any number of threads); this module says what it is and
hands out the arrays each path needs (`StepTables` for the coder, `ideal` for ideal rows,
`pair_scores` for the ladder). tests/entropy_reference.py writes the same rule in float64 numpy.

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

from bpcbench.codec import kernel

# Total probability given to escape symbols (bytes no token spells). Small enough to cost
# ~2e-5 bits per ordinary token, large enough to stay far above the coder's 2**-24 floor.
ESCAPE_MASS = 2.0**-16


def escape_factor(n_escapes: int) -> float:
    """Each escape symbol's weight per unit of the tokens' total weight."""
    return ESCAPE_MASS / (1 - ESCAPE_MASS) / n_escapes if n_escapes else 0.0


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

    def tables(self, weights: np.ndarray):
        """(block table, function giving the inner tables for chosen blocks) of whole tables
        (`weights`, as the lossy codec edits them)."""
        rows, n = weights.shape
        blocked = np.zeros((rows, self.n_blocks * self.block))
        blocked[:, :n] = weights
        blocked = blocked.reshape(rows, self.n_blocks, self.block)
        return blocked.sum(axis=2), lambda blocks: blocked[np.arange(len(blocks)), blocks]

    def split(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(symbols, self.block)

    def join(self, blocks: np.ndarray, within: np.ndarray) -> np.ndarray:
        return (blocks * self.block + within).astype(np.int32)


def _rows(logits: np.ndarray) -> np.ndarray:
    """The kernel's input: C-contiguous float32 rows. llama.cpp's logits already are (no copy is made);
    anything else (a test's float64 rows) is converted, which can round it."""
    return np.ascontiguousarray(logits, dtype=np.float32)


def _layout(n_vocab: int, n_escapes: int) -> tuple[TwoLevel, float]:
    return TwoLevel.for_alphabet(n_vocab + n_escapes), escape_factor(n_escapes)


def weights(logits: np.ndarray, n_escapes: int) -> np.ndarray:
    """Whole tables, rows x (vocab + escapes) float64, entry for entry what the coder's blocks hold
    (for the lossy codec, which edits them; the lossless paths never build them)."""
    logits = _rows(logits)
    f, esc = _layout(logits.shape[1], n_escapes)
    out = np.empty((len(logits), logits.shape[1] + n_escapes))
    kernel.full_weights(logits, n_escapes, esc, f.block, f.n_blocks, out)
    return out


def ideal_bits(weights: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """-log2 p(symbol) per row of whole tables (`weights`)."""
    return np.log2(weights.sum(axis=1)) - np.log2(weights[np.arange(len(symbols)), symbols])


def ideal(logits: np.ndarray, symbols: np.ndarray, n_escapes: int) -> tuple[np.ndarray, np.ndarray]:
    """(-log2 p under the coder's distribution, -ln p under the plain softmax over the vocabulary)
    of each row's symbol; an escape symbol's -ln p is its coder cost in nats. The bits are those the
    encoder's step reports for the same row (StepTables.encoder)."""
    logits = _rows(logits)
    f, esc = _layout(logits.shape[1], n_escapes)
    bits, nats = np.empty(len(logits)), np.empty(len(logits))
    kernel.ideal(logits, np.asarray(symbols, dtype=np.int64), n_escapes, esc, f.block, f.n_blocks, bits, nats)
    return bits, nats


def pair_scores(lb: np.ndarray, lq: np.ndarray, symbols: np.ndarray, n_escapes: int):
    """Base and level rows side by side: (bits under each as `ideal` gives them, KL(base || level)
    in nats over the vocabulary, whether both rank the same token first)."""
    lb, lq = _rows(lb), _rows(lq)
    f, esc = _layout(lb.shape[1], n_escapes)
    rows = len(lb)
    bits_b, bits_q, kld, same = np.empty(rows), np.empty(rows), np.empty(rows), np.empty(rows, dtype=np.bool_)
    kernel.pair_scores(lb, lq, np.asarray(symbols, dtype=np.int64), n_escapes, esc, f.block, f.n_blocks,
                       bits_b, bits_q, kld, same)
    return bits_b, bits_q, kld, same


class StepTables:
    """One step's coder tables, in buffers reused from step to step (sized by the widest step).

    The encoder gets the block table, its symbols' blocks and their ideal bits in one call; the
    decoder the block table, then, once it has decoded the blocks, their entries. Both come from
    the same compiled loops over the same logits, so encoder and decoder read identical tables.
    Views returned are valid until the next call.
    """

    def __init__(self, n_symbols: int, n_escapes: int):
        self.factor = TwoLevel.for_alphabet(n_symbols)
        self.n_escapes = n_escapes
        self._esc = escape_factor(n_escapes)
        self._grow(0)
        self._logits = None

    def _grow(self, rows: int) -> None:
        if rows and rows <= len(self._outer):
            return
        self._outer, self._inner = np.empty((rows, self.factor.n_blocks)), np.empty((rows, self.factor.block))
        self._max = np.empty((rows, self.factor.n_blocks), dtype=np.float32)  # the blocks' max logits
        self._escape, self._bits = np.empty(rows), np.empty(rows)

    def encoder(self, logits: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block table, the symbols' blocks' entries, -log2 p of each symbol)."""
        logits, rows = _rows(logits), len(logits)
        self._grow(rows)
        outer, inner, bits = self._outer[:rows], self._inner[:rows], self._bits[:rows]
        kernel.encoder_tables(logits, np.asarray(symbols, dtype=np.int64), self.n_escapes, self._esc,
                              self.factor.block, outer, inner, bits)
        return outer, inner, bits

    def block_table(self, logits: np.ndarray) -> np.ndarray:
        """The decoder's first table; `entries` then gives the chosen blocks' entries."""
        self._logits, rows = _rows(logits), len(logits)
        self._grow(rows)
        kernel.coder_tables(self._logits, self.n_escapes, self._esc, self.factor.block, self._outer[:rows],
                            self._max[:rows], self._escape[:rows])
        return self._outer[:rows]

    def entries(self, blocks: np.ndarray) -> np.ndarray:
        """The entries of each row's block `blocks[r]`, under the logits of the last `block_table`."""
        rows = len(blocks)
        inner = self._inner[:rows]
        kernel.chosen_entries(self._logits, self._max[:rows], self._escape[:rows], self.n_escapes,
                              np.asarray(blocks, dtype=np.int64), self.factor.block, inner)
        return inner


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


# The decoder's work is its tokens, so a file may claim only as many as its payload pays for: at
# most TOKENS_PER_PAYLOAD_BYTE a byte beyond the first SLACK_TOKENS, i.e. one bit a token on
# average, checked before any model or KV cache is allocated; the encoder always pays it (zero
# padding, payload_bytes_needed). A floor per token would not do: constriction's leaky
# Categorical keeps every entry of an n-entry table at >= 2**-24, so a token of the two-level
# tables (two tables of ~256 entries) costs at least ~4e-5 bits, which lets a 4 KiB payload claim
# ~800 M tokens; and a floor the encoder paid on every token would cost every text, since a
# well-predicted token costs far less than a bit. On average the rule costs real text nothing
# (docs/measurements.md: several bits a token); only freak inputs (a megabyte of one repeated
# token), which zstd wins anyway, pay padding. bpcbench <= 0.4.0 allowed 512 a byte and 4,096
# free, so a forged 4 KiB file could claim 2.1 M tokens (hours); now 33.8 k, the order of what a
# real 4 KiB payload holds.
TOKENS_PER_PAYLOAD_BYTE = 8
SLACK_TOKENS = 1024


def max_tokens(payload_bytes: int) -> int:
    """The most tokens a payload of this size may claim."""
    return TOKENS_PER_PAYLOAD_BYTE * payload_bytes + SLACK_TOKENS


def payload_bytes_needed(spent_bits: float, n_tokens: int) -> int:
    """The shortest payload the decoder accepts: its allowance covers `spent_bits` with half the
    slack to spare, and it may claim `n_tokens` (max_tokens)."""
    by_bits = int(np.ceil((spent_bits - PAYLOAD_SLACK_BITS / 2) / 8))
    by_tokens = -(-(n_tokens - SLACK_TOKENS) // TOKENS_PER_PAYLOAD_BYTE)
    return max(0, by_bits, by_tokens)
