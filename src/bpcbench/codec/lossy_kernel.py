"""The compiled loops of the lossy codec (codec/lossy.py): the forgiven set F, its flag and the tables outside it.

For threshold tau (bits) a row's forgiven set is F = {greedy} ∪ {x : -log2 p(x) <= tau}, with p the
coder's own distribution (codec/entropy_model.py, the tables codec/kernel.py makes). Per row, in
one thread, from the logits alone (so both ends compute the same bits):

* the row's tables as the lossless coder makes them (kernel.row_tables: one pass over the float32
  logits, exp32 in 16 lanes, fixed-order float64 sums), and its block maxima;
* the greedy token: the highest logit among the tokens allowed to be guessed (`allowed`: those
  that spell at least one byte), the first of equals (the row's first argmax, found from the block
  maxima, unless it is a token that spells nothing: then one scan of the row);
* the cut: x is in F when its weight w(x) >= total * 2**-tau (tau = inf: every symbol), 2**-tau by
  kernel.exp64, which uses + and x alone (no libm, whose last bit may differ);
* the block sums outside F: a block that may hold a member of F (the greedy token's, one whose
  largest weight or escape weight reaches the cut) is summed again from its entries with F's
  zeroed, in index order; every other block keeps the lossless sum. P(store) = their total / the
  total, clamped to [floor, 1 - floor];
* the entries of one block with F's entries zeroed (the stored token's block).

So the lossy step reads the logits once more than the lossless one only in the few blocks F
touches (at tau = 0 one block), and no number here depends on the threads.

A stored token then costs -log2 P(store) - log2(w(x) / rest) = -log2 p(x) (up to the floor), a
kept one -log2 P(keep) = -log2 p(F): at tau = 0, F = {greedy} and the file costs the lossless bits.

numba caches these functions by this file alone: a kernel.py change that moves bits (its VERSION,
which OVER_KERNEL must repeat) needs this VERSION bumped too, which edits this file and recompiles it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from bpcbench.codec.kernel import (
    INLINE,
    JIT,
    LN2,
    block_entries,
    block_scale,
    exp64,
    first_argmax,
    row_tables,
    total,
    weight,
)
from bpcbench.codec.kernel_ir import exp32

VERSION = "bpcbench-lossy-kernel/2"  # 2: over kernel/2's tables; bump whenever a change can change a table's bits
# the kernel.py build these functions were compiled against, spelled out here so that bumping
# kernel.VERSION fails tests/codec/test_kernel.py until this file is edited, and so recompiled
OVER_KERNEL = "bpcbench-kernel/2"


@njit(**INLINE)
def _greedy(row, bmax, m, block, allowed):
    """The first highest logit among allowed tokens (-1 if none is allowed)."""
    k = first_argmax(row, bmax, m, block)
    if allowed[k]:
        return k
    k = -1
    for i in range(row.shape[0]):
        if allowed[i] and (k < 0 or row[i] > row[k]):
            k = i
    return k


@njit(**INLINE)
def _forgive(entries, lo, g, cut):
    """Zero the members of F among `entries` (symbols lo, lo + 1, ...): greedy g and weights >= cut."""
    for j in range(entries.shape[0]):
        if entries[j] >= cut or lo + j == g:
            entries[j] = 0.0


@njit(**INLINE)
def _forgiven_entries(row, bmax, m, esc, n_escapes, b, block, g, cut, out):
    """Block b's entries with F's zeroed, into out[:block]."""
    block_entries(row, bmax[b], block_scale(bmax[b], m), esc, n_escapes, b, block, out)
    _forgive(out, b * block, g, cut)


@njit(**JIT)
def _row(row, allowed, n_escapes, esc_factor, block, tau, floor, outer, bmax, scratch):
    """outer = the block sums outside F, bmax the block maxima; -> (max logit, escape weight, cut, greedy,
    P(store), weight outside F)."""
    m, esc, _ = row_tables(row, n_escapes, esc_factor, block, outer, bmax)
    whole = total(outer)
    g = _greedy(row, bmax, m, block, allowed)
    n_vocab = row.shape[0]
    if math.isinf(tau):  # every symbol is forgiven
        cut = 0.0
        outer[:] = 0.0
    else:
        cut = whole * exp64(-tau * LN2)
        for b in range(outer.shape[0]):
            lo = b * block
            touched = g // block == b or (lo + block > n_vocab and lo < n_vocab + n_escapes and esc >= cut)
            if lo < n_vocab and not touched:  # the block's largest weight, entry for entry its max token's
                touched = exp32(bmax[b], bmax[b]) * block_scale(bmax[b], m) >= cut
            if touched:
                _forgiven_entries(row, bmax, m, esc, n_escapes, b, block, g, cut, scratch)
                s = 0.0
                for j in range(block):
                    s += scratch[j]
                outer[b] = s
    rest = total(outer)
    p_store = rest / whole
    p_store = floor if p_store < floor else (1.0 - floor if p_store > 1.0 - floor else p_store)
    return m, esc, cut, g, p_store, rest


@njit(parallel=True, **JIT)
def encoder_tables(logits, allowed, truth, n_escapes, esc_factor, block, tau, floor, flags, outer, inner, greedy,
                   stored):
    """The encoder's step: flags[r] = (P(keep), P(store)); whether truth[r] is outside F (stored[r]);
    if so the block sums outside F (outer[r]) and its block's entries outside F (inner[r])."""
    for r in prange(logits.shape[0]):
        bmax, scratch = np.empty(outer.shape[1], dtype=np.float32), np.empty(block)
        m, esc, cut, g, p_store, _ = _row(logits[r], allowed, n_escapes, esc_factor, block, tau, floor, outer[r],
                                          bmax, scratch)
        flags[r, 0], flags[r, 1] = 1.0 - p_store, p_store
        greedy[r] = g
        s = truth[r]
        w = weight(logits[r], bmax, m, esc, block, s)  # the same number as its entry in the tables
        stored[r] = not (s == g or w >= cut)
        if stored[r]:
            _forgiven_entries(logits[r], bmax, m, esc, n_escapes, s // block, block, g, cut, inner[r])


@njit(parallel=True, **JIT)
def decoder_tables(logits, allowed, n_escapes, esc_factor, block, tau, floor, flags, outer, row_bmax, row_esc,
                   row_cut, greedy, rest):
    """The decoder's first tables: the flags and the block sums outside F, as `encoder_tables` gives
    them; what `chosen_entries` needs kept per row (block maxima, escape weight, cut)."""
    for r in prange(logits.shape[0]):
        scratch = np.empty(block)
        _, esc, cut, g, p_store, left = _row(logits[r], allowed, n_escapes, esc_factor, block, tau, floor, outer[r],
                                             row_bmax[r], scratch)
        flags[r, 0], flags[r, 1] = 1.0 - p_store, p_store
        row_esc[r], row_cut[r], greedy[r], rest[r] = esc, cut, g, left


@njit(parallel=True, **JIT)
def chosen_entries(logits, rows, row_bmax, row_esc, row_cut, greedy, n_escapes, blocks, block, inner):
    """inner[i] = the entries outside F of block blocks[i] of row rows[i] (after `decoder_tables`)."""
    for i in prange(rows.shape[0]):
        r = rows[i]
        bmax = row_bmax[r]
        _forgiven_entries(logits[r], bmax, bmax.max(), row_esc[r], n_escapes, blocks[i], block, greedy[r],
                          row_cut[r], inner[i])
