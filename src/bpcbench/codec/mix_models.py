"""The predictors `--mix match` mixes with the LLM (#25, codec/mixing.py mixes them): the token match
model (per lane) and the token n-gram model (shared by the lanes), compiled; and the fixed-point rules
both share.

The match model: hashes of the last k tokens (k in ORDERS, longest first) -> the last position that
context occurred; when none is active, the longest order that hits and whose context really matches
(checked token by token, so a hash collision predicts nothing) starts a match, which then follows the
earlier occurrence token by token until it predicts wrong.

The n-gram model: per order of NG_ORDERS, hashed contexts (tagged, so a collision starts the context
afresh) -> their NG_K most frequent successors with counts (the least frequent makes room for a new
one); the code length each lambda of NG_LAMBDA would have given, summed per (order, confidence) in 1/256
bit from COST, chooses the lambda.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# context lengths hashed, longest first; measured against (24, 12, 6, 3, 2, 1) and others: docs/measurements.md
ORDERS = np.array([24, 12, 6, 4, 3, 2, 1], dtype=np.int64)
N_ORD = len(ORDERS)
MAX_VERIFY = 64  # tokens compared backwards when a match starts
PROB_BITS = 16
ONE = 1 << PROB_BITS
# The token n-gram model (after the match mix): per order, hashed contexts -> their NG_K most frequent
# successors with counts; the distribution coded is (1 - lam) p' + lam * counts / sum, over those few tokens
# only (one entry and one block sum each). lam is chosen per (order, LLM confidence) as the one of NG_LAMBDA
# whose summed code length on the file so far is least (the others start NG_PENALTY behind lam = 0, so a
# file where the LLM knows better never pays more than a few bits for trying).
NG_ORDERS = np.array([3, 2, 1], dtype=np.int64)
NG_K = 8
NG_LAMBDA = np.array([0.0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4])
N_LAM = len(NG_LAMBDA)
NG_PENALTY = 8 * 256  # in the cost table's units, 1/256 bit
NG_COUNT_LIMIT = 4095  # a context's counts are halved beyond this
# nogil: the lane evaluator's worker thread runs llama_decode while a step runs these (llama/lanes.py);
# releasing the GIL changes no instruction of the loops, so no bit of a table (mixing.py's loops too)
JIT = {"cache": True, "fastmath": False, "nogil": True}
# -log2 of a 16-bit probability in 1/256 bit, rounded (hashed into the fingerprint by mixing.build)
COST = np.array([round(-256 * math.log2(max(1, k) / ONE)) for k in range(ONE)], dtype=np.int64)


@njit(**JIT)
def hash_full(hist, end, k):
    h = np.uint64(0x9E3779B97F4A7C15)
    for i in range(end - k, end):
        h = (h ^ np.uint64(hist[i] + 1)) * np.uint64(0x100000001B3)
    return np.int64((h ^ (h >> np.uint64(29))) & np.uint64(0x3FFFFFFFFFFFFFFF))


@njit(**JIT)
def hash(hist, end, k, mask):
    return hash_full(hist, end, k) & mask


@njit(**JIT)
def bucket(edges, v):
    b = 0
    while b < edges.shape[0] and v > edges[b]:
        b += 1
    return b


@njit(**JIT)
def predict(hist, pos, mptr, mlen, mord, tables, s, orders):
    """(predicted token or -1, match length) for slot s, starting a match if none is active (mord[s]: the
    order that started it)."""
    if mlen[s] == 0:
        mask = tables.shape[2] - 1
        p0 = pos[s]
        for o in range(orders.shape[0]):
            k = orders[o]
            if p0 < k:
                continue
            p = tables[s, o, hash(hist[s], p0, k, mask)]
            if p <= 0:
                continue
            n = 0
            while n < MAX_VERIFY and p - 1 - n >= 0 and hist[s, p - 1 - n] == hist[s, p0 - 1 - n]:
                n += 1
            if n >= k:
                mptr[s], mlen[s], mord[s] = p, n, o
                break
    if mlen[s] == 0:
        return -1, 0
    return hist[s, mptr[s]], mlen[s]


@njit(**JIT)
def learn_match(hist, pos, mptr, mlen, tables, s, orders, symbol):
    """Slot s saw `symbol`: follow or end the match, append it, index the contexts that precede it."""
    if mlen[s] > 0:
        if hist[s, mptr[s]] == symbol:
            mptr[s] += 1
            mlen[s] = min(mlen[s] + 1, 1 << 30)
        else:
            mlen[s] = 0
    j = pos[s]
    hist[s, j] = symbol
    pos[s] = j + 1
    mask = tables.shape[2] - 1
    for o in range(orders.shape[0]):
        k = orders[o]
        if j >= k:
            tables[s, o, hash(hist[s], j, k, mask)] = j


@njit(**JIT)
def prob16(p):
    v = np.int64(p * ONE) if p < 1.0 else ONE - 1
    return min(ONE - 1, max(1, v))


@njit(**JIT)
def ng_find(hs, p0, ng_tag, o):
    """The bucket of the order-o context before position p0 of a lane's history hs, or -1 where never seen."""
    k = NG_ORDERS[o]
    if p0 < k:
        return -1
    h = hash_full(hs, p0, k)
    b = h & (ng_tag.shape[1] - 1)
    return b if ng_tag[o, b] == (h | 1) else -1


@njit(**JIT)
def ng_choose(hs, p0, ng_tag, ng_cnt):
    """(order index, bucket, count sum) of the longest context seen before with counts; order -1: none."""
    for o in range(NG_ORDERS.shape[0]):
        b = ng_find(hs, p0, ng_tag, o)
        if b < 0:
            continue
        n = 0
        for j in range(NG_K):
            n += ng_cnt[o, b, j]
        if n > 0:
            return o, b, n
    return -1, 0, 0


@njit(**JIT)
def ng_lambda(ng_loss, key):
    best = 0
    for lam in range(1, N_LAM):
        if ng_loss[key, lam] < ng_loss[key, best]:
            best = lam
    return best


@njit(**JIT)
def ng_patch(outer_row, before, block, ng_tok, ng_cnt, o, b, n, lam):
    """Add lam / (1 - lam) * count / n of the row's total (`before`) to each successor's weight (their
    block sums); -> the factor per count."""
    if lam == 0:
        return 0.0
    a = NG_LAMBDA[lam] / (1.0 - NG_LAMBDA[lam]) * before / n
    for j in range(NG_K):
        c = ng_cnt[o, b, j]
        if c > 0:
            t = ng_tok[o, b, j]
            outer_row[t // block] += a * c
    return a


@njit(**JIT)
def ng_count(ng_cnt, ng_tok, o, b, symbol):
    for j in range(NG_K):
        if ng_cnt[o, b, j] > 0 and ng_tok[o, b, j] == symbol:
            return ng_cnt[o, b, j]
    return 0


@njit(**JIT)
def ng_score(ng_tok, ng_cnt, ng_loss, cost, symbol, chosen, wpre, before):
    """What each lam would have cost `symbol` under the context `chosen` (order, bucket, count sum, loss row),
    with p'(symbol) = wpre / before: added to the loss row. Nothing where no context was chosen (order -1:
    then wpre and before are not read)."""
    o, b, n, key = chosen[0], chosen[1], chosen[2], chosen[3]
    if o < 0:
        return
    pprime = wpre / before
    pn = ng_count(ng_cnt, ng_tok, o, b, symbol) / n
    for lam in range(N_LAM):
        ng_loss[key, lam] += cost[prob16((1.0 - NG_LAMBDA[lam]) * pprime + NG_LAMBDA[lam] * pn)]


@njit(**JIT)
def ng_learn(hs, j, ng_tag, ng_tok, ng_cnt, symbol):
    """A lane saw `symbol` at position j of its history hs (the context still before j): the successor
    counts of every order's context."""
    for oo in range(NG_ORDERS.shape[0]):
        k = NG_ORDERS[oo]
        if j < k:
            continue
        h = hash_full(hs, j, k)
        bb = h & (ng_tag.shape[1] - 1)
        if ng_tag[oo, bb] != (h | 1):  # a new context (or another hashed here): start it afresh
            ng_tag[oo, bb] = h | 1
            ng_cnt[oo, bb, :] = 0
        low = 0
        found = -1
        for jj in range(NG_K):
            c = ng_cnt[oo, bb, jj]
            if c > 0 and ng_tok[oo, bb, jj] == symbol:
                found = jj
                break
            if c < ng_cnt[oo, bb, low]:
                low = jj
        if found < 0:  # the least frequent successor makes room
            found = low
            ng_tok[oo, bb, found] = symbol
            ng_cnt[oo, bb, found] = 0
        ng_cnt[oo, bb, found] += 1
        if ng_cnt[oo, bb, found] > NG_COUNT_LIMIT:
            for jj in range(NG_K):
                ng_cnt[oo, bb, jj] //= 2


def ng_start(ng_loss: np.ndarray) -> None:
    """Before the first lane: lam = 0 ahead of the others by NG_PENALTY."""
    ng_loss[:, 0] = 0
    ng_loss[:, 1:] = NG_PENALTY
