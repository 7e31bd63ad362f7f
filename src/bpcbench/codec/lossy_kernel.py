"""The compiled loops of the lossy codec (codec/lossy.py): the forgiven set F, its flag and the tables outside it.

For threshold tau (bits) a row's forgiven set is F = {greedy} ∪ {x : -log2 p(x) <= tau}, with p the
coder's own distribution (codec/entropy_model.py, the tables codec/kernel.py makes). Per row, in
one thread, from the logits alone (so both ends compute the same bits):

* the greedy token: the highest logit among the tokens allowed to be guessed (`allowed`: those
  that spell at least one byte), the first of equals;
* the cut: x is in F when its weight w(x) >= total * 2**-tau (tau = inf: every symbol), with
  2**-tau from kernel._exp, which uses + and x alone (no libm, whose last bit may differ);
* the block sums of the weights outside F (F's entries zeroed, then kernel's fixed-order sums),
  and P(store) = their total / the total, clamped to [floor, 1 - floor];
* the entries of one block with F's entries zeroed (the stored token's block).

A stored token then costs -log2 P(store) - log2(w(x) / rest) = -log2 p(x) (up to the floor), a
kept one -log2 P(keep) = -log2 p(F): at tau = 0, F = {greedy} and the file costs the lossless bits.

These loops reuse kernel.py's per-element helpers (its exp, its fixed-order sums, its table
layout), so a table here is entry for entry what the lossless coder would build, minus F.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from bpcbench.codec.kernel import _INLINE, _JIT, _LN2, _entries, _exp, _fixed_sum, _row_tables, _total, _weight

VERSION = "bpcbench-lossy-kernel/1"  # bump whenever a change here can change a table's bits


@njit(**_INLINE)
def _greedy(row, allowed):
    """The first highest logit among allowed tokens (-1 if none is allowed)."""
    k = -1
    for i in range(row.shape[0]):
        if allowed[i] and (k < 0 or row[i] > row[k]):
            k = i
    return k


@njit(**_INLINE)
def _forgive(entries, lo, g, cut):
    """Zero the members of F among `entries` (symbols lo, lo + 1, ...): greedy g and weights >= cut."""
    for j in range(entries.shape[0]):
        if entries[j] >= cut or lo + j == g:
            entries[j] = 0.0


@njit(**_JIT)
def _row(row, allowed, n_escapes, esc_factor, block, tau, floor, outer, scratch):
    """outer = the block sums outside F; -> (max logit, escape weight, cut, greedy, P(store), weight outside F)."""
    m, esc, _ = _row_tables(row, n_escapes, esc_factor, block, outer, scratch)
    total = _total(outer)
    cut = 0.0 if math.isinf(tau) else total * _exp(-tau * _LN2)
    g = _greedy(row, allowed)
    for b in range(outer.shape[0]):
        _entries(row, m, esc, n_escapes, b, block, scratch)
        _forgive(scratch, b * block, g, cut)
        outer[b] = _fixed_sum(scratch, block)
    rest = _total(outer)
    p_store = rest / total
    p_store = floor if p_store < floor else (1.0 - floor if p_store > 1.0 - floor else p_store)
    return m, esc, cut, g, p_store, rest


@njit(parallel=True, **_JIT)
def encoder_tables(logits, allowed, truth, n_escapes, esc_factor, block, tau, floor, flags, outer, inner, greedy,
                   stored):
    """The encoder's step: flags[r] = (P(keep), P(store)); whether truth[r] is outside F (stored[r]);
    if so the block sums outside F (outer[r]) and its block's entries outside F (inner[r])."""
    for r in prange(logits.shape[0]):
        scratch = np.empty(block)
        m, esc, cut, g, p_store, _ = _row(logits[r], allowed, n_escapes, esc_factor, block, tau, floor, outer[r],
                                          scratch)
        flags[r, 0], flags[r, 1] = 1.0 - p_store, p_store
        greedy[r] = g
        s = truth[r]
        w = _weight(logits[r], m, esc, s)  # the same number as its entry in the tables
        stored[r] = not (s == g or w >= cut)
        if stored[r]:
            b = s // block
            _entries(logits[r], m, esc, n_escapes, b, block, inner[r])
            _forgive(inner[r], b * block, g, cut)


@njit(parallel=True, **_JIT)
def decoder_tables(logits, allowed, n_escapes, esc_factor, block, tau, floor, flags, outer, row_max, row_esc,
                   row_cut, greedy, rest):
    """The decoder's first tables: the flags and the block sums outside F, as `encoder_tables` gives
    them; what `chosen_entries` needs kept per row."""
    for r in prange(logits.shape[0]):
        scratch = np.empty(block)
        m, esc, cut, g, p_store, left = _row(logits[r], allowed, n_escapes, esc_factor, block, tau, floor,
                                             outer[r], scratch)
        flags[r, 0], flags[r, 1] = 1.0 - p_store, p_store
        row_max[r], row_esc[r], row_cut[r], greedy[r], rest[r] = m, esc, cut, g, left


@njit(parallel=True, **_JIT)
def chosen_entries(logits, rows, row_max, row_esc, row_cut, greedy, n_escapes, blocks, block, inner):
    """inner[i] = the entries outside F of block blocks[i] of row rows[i] (after `decoder_tables`)."""
    for i in prange(rows.shape[0]):
        r = rows[i]
        _entries(logits[r], row_max[r], row_esc[r], n_escapes, blocks[i], block, inner[i])
        _forgive(inner[i], blocks[i] * block, greedy[r], row_cut[r])
