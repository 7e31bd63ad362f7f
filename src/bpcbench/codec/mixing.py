"""What the file repeats, beside what the model predicts: an online match model mixed with the LLM (#25).

The match model (codec/mix_models.py) predicts one token c with a match length L. The mixer (paq/lpaq's
logistic mixing, in the stretch domain st(p) = ln(p / (1 - p))): inputs st(p_llm(c)), st(the hit rate learned for L's
bucket and the order that started the match) and a bias; one weight set per context (L's bucket x the LLM's confidence
bucket x whether c is the LLM's top token); output q, the probability that the next token is c. The distribution coded
is the LLM's with c's share set to q: p'(c) = q, p'(x) = (1 - q) p(x) / (1 - p(c)), which in the coder's unnormalised
weights is one entry changed (w'(c) = q / (1 - q) (total - w(c))) and so one block sum: no pass over the vocabulary
beyond the one the coder's tables already make (kernel.coder_tables). A token without a prediction is coded by the LLM
alone. The weights start at (1, 0, 0), q = p(c): the mixer starts as the LLM and learns from there.

Then the n-gram model (codec/mix_models.py) is mixed in linearly over its NG_K successors of the context: p''(x) =
(1 - lam) p'(x) + lam n(x) / N, in the coder's weights lam / (1 - lam) * total * n(x) / N added to at most NG_K
entries (their block sums); lam per (order, the LLM's confidence), the best so far.

Bit-exact on both ends: the mixer is integer arithmetic (probabilities in 16 bits, stretch in 1/256 nat, weights
16.16 fixed point) with tables computed once here and hashed into the codec fingerprint (`build`); its only float
inputs are p(c) = w(c) / total and 1 / total, IEEE divisions of the kernel's own numbers. The n-gram's additions and
its code lengths' probabilities are IEEE products and sums in a fixed order, the same on both ends. Both ends call
the same loops in the same order with the same numbers (the decoder learns a token once decoded).

The lanes of a plan share what is learned (mix/3: mixer weights, hit counts, the n-gram's tables and losses), read
as the previous step left it; the match model follows a lane's own history, in slots (lane id % width) reset when a
lane starts. Memory is bounded by the plan's width and longest lane (at most 2**21 match entries per order over all
slots, 2**17 n-gram contexts per order), never by anything else a file says.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numba import njit

from bpcbench.codec import entropy_model
from bpcbench.codec import mix_models as models
from bpcbench.codec.mix_models import (COST, JIT, MAX_VERIFY, N_LAM, N_ORD, NG_COUNT_LIMIT, NG_K, NG_LAMBDA, NG_ORDERS,
                                       NG_PENALTY, ORDERS)
from bpcbench.errors import BpcError

VERSION = "bpcbench-mix/3"  # bump whenever a change here can change a table's bits
MODES = ("none", "match")  # the container's mix ids are indices into this tuple: append only
_PROB_BITS, _ONE = models.PROB_BITS, models.ONE
_bucket, _prob16 = models.bucket, models.prob16
_ST_MAX = 11 * 256  # stretch clamp: 11 nats, p from 1.7e-5 to 1 - 1.7e-5
# hit-rate buckets of the match length: 1-3, 4-8, 9-16, > 16 (few buckets and weight sets learn fast enough
# for files of a few thousand tokens; twelve buckets and seven confidence buckets gained a third as much)
_LEN_EDGES = np.array([3, 8, 16], dtype=np.int64)
N_LEN = len(_LEN_EDGES) + 1
# the LLM's confidence: its top token's probability (1 / total, since the top weight is exp(0))
_CONF_EDGES = np.array([int(f * _ONE) for f in (0.5, 0.9)], dtype=np.int64)
N_CONF = len(_CONF_EDGES) + 1
N_CTX = N_LEN * N_CONF * 2
N_IN = 3
W_INIT = np.array([_ONE, 0, 0], dtype=np.int64)  # q = p_llm(c) until something is learned
LEARNING_RATE = 16  # weight step = x * err * rate / 2**18 (about rate / 1024 in real units)
COUNT_LIMIT = 255  # hit counts are halved beyond this, so the rate follows the file


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """squash (stretch units -> 16-bit probability) and stretch (16-bit probability -> stretch units),
    rounded to integers; their hash is in `build`, so a machine whose libm rounded one differently would be
    refused, never decode wrong."""
    d = np.arange(-_ST_MAX, _ST_MAX + 1)
    squash = np.array([min(_ONE - 1, max(1, round(_ONE / (1 + math.exp(-x / 256))))) for x in d.tolist()])
    p = np.arange(_ONE)
    stretch = np.array([0] + [min(_ST_MAX, max(-_ST_MAX, round(256 * math.log(k / (_ONE - k)))))
                              for k in p[1:].tolist()])
    return squash.astype(np.int64), stretch.astype(np.int64)


SQUASH, STRETCH = _tables()


def build() -> dict:
    """What must match for a mixed file to decode: this module's version, parameters and tables."""
    h = hashlib.sha256()
    for a in (SQUASH, STRETCH, COST, ORDERS, _LEN_EDGES, _CONF_EDGES, W_INIT, NG_ORDERS, NG_LAMBDA):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"{MAX_VERIFY},{LEARNING_RATE},{COUNT_LIMIT},{NG_K},{NG_PENALTY},{NG_COUNT_LIMIT}".encode())
    return {"mix": VERSION, "tables": h.hexdigest()[:16]}


@njit(**JIT)
def _hit_index(length, order):
    """The hit-rate counter of a match: its length bucket x the order that started it."""
    return _bucket(_LEN_EDGES, length) * N_ORD + order


@njit(**JIT)
def _confidence(total):
    """The LLM's confidence bucket: its top token's probability is 1 / total (the top weight is exp(0))."""
    return _bucket(_CONF_EDGES, _prob16(1.0 / total))


@njit(**JIT)
def _mix(weights, counts, length, order, wc, total, top, squash, stretch, x):
    """-> (q in 16 bits, weight set); x gets the inputs (the learning step needs them back)."""
    lb = _bucket(_LEN_EDGES, length)
    hi = _hit_index(length, order)
    hits, seen = counts[hi, 0], counts[hi, 1]
    x[0] = stretch[_prob16(wc / total)]
    x[1] = stretch[min(_ONE - 1, max(1, ((2 * hits + 1) << _PROB_BITS) // (2 * seen + 2)))]
    x[2] = 256
    ctx = (lb * N_CONF + _confidence(total)) * 2 + (1 if top else 0)
    dot = 0
    for i in range(N_IN):
        dot += x[i] * weights[ctx, i]
    d = min(_ST_MAX, max(-_ST_MAX, dot >> 16))
    return squash[d + _ST_MAX], ctx


@njit(**JIT)
def _learn_mix(weights, counts, length, order, ctx, q, x, hit):
    err = ((1 << _PROB_BITS) if hit else 0) - q
    for i in range(N_IN):
        weights[ctx, i] += (x[i] * err * LEARNING_RATE) >> 18
    hi = _hit_index(length, order)
    counts[hi, 0] += 1 if hit else 0
    counts[hi, 1] += 1
    if counts[hi, 1] > COUNT_LIMIT:
        counts[hi, 0] //= 2
        counts[hi, 1] //= 2


@njit(**JIT)
def _reset(slots, lanes, owner, pos, mptr, mlen, mord, tables):
    """Clear the match model's slot of every lane that starts here (what is learned stays)."""
    for r in range(lanes.shape[0]):
        s = slots[r]
        if owner[s] != lanes[r]:
            owner[s], pos[s], mptr[s], mlen[s], mord[s] = lanes[r], 0, 0, 0, 0
            tables[s, :, :] = 0


@njit(**JIT)
def _row_total(row):
    t = 0.0
    for b in range(row.shape[0]):
        t += row[b]
    return t


@njit(**JIT)
def _patch(outer_row, block, c, wc, total, q):
    """Give token c the share q of the row (one block sum changes); -> c's new weight."""
    rest = max(total - wc, total * 2.0**-40)  # what the other symbols weigh (never 0: q < 1 stays codable)
    wn = q / (_ONE - q) * rest
    b = c // block
    outer_row[b] = (outer_row[b] - wc) + wn
    return wn


@njit(**JIT)
def _mix_row(hs, j, outer_row, block, pred, length, order, wc, weights, counts, squash, stretch, x, ng_tag, ng_tok,
             ng_cnt, ng_loss, ng_row, w_row):
    """One row of the mixed distribution, the coder's and the ideal path's alike: the match model's token given
    its share q (one block sum changes; its new weight in w_row[0]), then the n-gram's successors added (ng_row:
    order, bucket, count sum, loss row, lam; w_row[1:]: the factor per count and the total before).
    -> (q, weight set); j is the row's position in its lane's history hs."""
    total = _row_total(outer_row)
    q, ctx = 0, 0
    if pred >= 0:
        q, ctx = _mix(weights, counts, length, order, wc, total, wc == 1.0, squash, stretch, x)
        w_row[0] = _patch(outer_row, block, pred, wc, total, q)
    o, b, n = models.ng_choose(hs, j, ng_tag, ng_cnt)
    key = o * N_CONF + _confidence(total)
    ng_row[0], ng_row[1], ng_row[2], ng_row[3], ng_row[4] = o, b, n, key, 0
    if o >= 0:
        lam = models.ng_lambda(ng_loss, key)
        ng_row[4] = lam
        w_row[2] = _row_total(outer_row)
        w_row[1] = models.ng_patch(outer_row, w_row[2], block, ng_tok, ng_cnt, o, b, n, lam)
    return q, ctx


@njit(**JIT)
def _step_predict(slots, hist, pos, mptr, mlen, mord, tables, pred, length, order):
    for r in range(slots.shape[0]):
        pred[r], length[r] = models.predict(hist, pos, mptr, mlen, mord, tables, slots[r], ORDERS)
        order[r] = mord[slots[r]]


@njit(**JIT)
def _step_mix(slots, pred, length, order, wc, outer, block, weights, counts, squash, stretch, xs, ctxs, qs, wnew,
              hist, pos, ng_tag, ng_tok, ng_cnt, ng_loss, ng):
    """The coder's step: each row's mixed distribution (_mix_row), what learning needs kept in qs, ctxs, xs, ng."""
    for r in range(slots.shape[0]):
        s = slots[r]
        qs[r], ctxs[r] = _mix_row(hist[s], pos[s], outer[r], block, pred[r], length[r], order[r], wc[r], weights,
                                  counts, squash, stretch, xs[r], ng_tag, ng_tok, ng_cnt, ng_loss, ng[r], wnew[r])


@njit(**JIT)
def _step_inner(blocks, pred, wnew, block, inner, pre, ng, ng_tok, ng_cnt):
    """The decoded (or coded) block's entries, mixed as the block table was; `pre` keeps them before the n-gram."""
    for r in range(blocks.shape[0]):
        if pred[r] >= 0 and pred[r] // block == blocks[r]:
            inner[r, pred[r] % block] = wnew[r, 0]
        pre[r, :] = inner[r, :]
        if ng[r, 0] >= 0 and ng[r, 4] > 0:
            o, b = ng[r, 0], ng[r, 1]
            for j in range(NG_K):
                c = ng_cnt[o, b, j]
                t = ng_tok[o, b, j]
                if c > 0 and t // block == blocks[r]:
                    inner[r, t % block] += wnew[r, 1] * c


@njit(**JIT)
def _step_learn(slots, symbols, pred, length, order, ctxs, qs, xs, weights, counts, hist, pos, mptr, mlen, tables,
                pre, block, wnew, ng, ng_tag, ng_tok, ng_cnt, ng_loss, cost):
    """Every row learns, in row order: the mixer and the n-gram's losses first (each row's as the step saw the
    tables), then the n-gram's counts and the row's own match model."""
    for r in range(slots.shape[0]):
        if pred[r] >= 0:
            _learn_mix(weights, counts, length[r], order[r], ctxs[r], qs[r], xs[r], symbols[r] == pred[r])
        models.ng_score(ng_tok, ng_cnt, ng_loss, cost, symbols[r], ng[r], pre[r, symbols[r] % block], wnew[r, 2])
    for r in range(slots.shape[0]):
        s = slots[r]
        models.ng_learn(hist[s], pos[s], ng_tag, ng_tok, ng_cnt, symbols[r])
        models.learn_match(hist, pos, mptr, mlen, tables, s, ORDERS, symbols[r])


@njit(**JIT)
def _block_predict(s, symbols, hist, pos, mptr, mlen, mord, tables, pred, length, order):
    """Ideal path, one lane's consecutive tokens (all known): each prediction, then the token learned."""
    for r in range(symbols.shape[0]):
        pred[r], length[r] = models.predict(hist, pos, mptr, mlen, mord, tables, s, ORDERS)
        order[r] = mord[s]
        models.learn_match(hist, pos, mptr, mlen, tables, s, ORDERS, symbols[r])


@njit(**JIT)
def _block_mix(s, symbols, pred, length, order, wc, wx, outer, block, weights, counts, squash, stretch, bits, hist,
               start, ng_tag, ng_tok, ng_cnt, ng_loss, cost):
    """Ideal path: -log2 p'(token) row by row, the mixer learning after each, as the coder's step does
    (`start`: the lane position of the first row; hist already holds the rows' tokens)."""
    x, ng_row, w_row = np.empty(N_IN, dtype=np.int64), np.empty(5, dtype=np.int64), np.empty(3)
    for r in range(symbols.shape[0]):
        sym, j = symbols[r], start + r
        q, ctx = _mix_row(hist[s], j, outer[r], block, pred[r], length[r], order[r], wc[r], weights, counts, squash,
                          stretch, x, ng_tag, ng_tok, ng_cnt, ng_loss, ng_row, w_row)
        w = wx[r]
        if pred[r] >= 0:
            hit = sym == pred[r]
            if hit:
                w = w_row[0]
            _learn_mix(weights, counts, length[r], order[r], ctx, q, x, hit)
        o = ng_row[0]
        add = w_row[1] * models.ng_count(ng_cnt, ng_tok, o, ng_row[1], sym) if o >= 0 and ng_row[4] > 0 else 0.0
        bits[r] = math.log2(_row_total(outer[r])) - math.log2(w + add)
        models.ng_score(ng_tok, ng_cnt, ng_loss, cost, sym, ng_row, w, w_row[2])
        models.ng_learn(hist[s], j, ng_tag, ng_tok, ng_cnt, sym)


_TABLE_ENTRIES = 1 << 21  # hash entries per order over all slots: the state's size, whatever a file says
_NG_ENTRIES = 1 << 17  # n-gram contexts per order, shared by the lanes (NG_K successors each)


class MatchTables:
    """entropy_model.StepTables with the match model mixed in, for the lanes of one plan.

    The same calls as StepTables, told which lanes the rows are, plus `learn` (the decoder's,
    once it has decoded the step's tokens; `encoder` learns by itself). `score` is the ideal
    path's: one lane's consecutive rows, tokens known.
    """

    def __init__(self, plain, width: int, longest: int):
        self.plain, self.factor = plain, plain.factor
        self.width = max(1, width)
        longest = max(1, longest)
        need = (longest - 1).bit_length()
        size = 1 << max(8, min(need, (_TABLE_ENTRIES // self.width).bit_length() - 1))
        ng_size = 1 << max(6, min((self.width * longest - 1).bit_length(), _NG_ENTRIES.bit_length() - 1))
        self.hist = np.zeros((self.width, longest), dtype=np.int32)
        self.tables = np.zeros((self.width, N_ORD, size), dtype=np.int32)
        self.owner = np.full(self.width, -1, dtype=np.int64)
        self.pos, self.mptr, self.mlen, self.mord = (np.zeros(self.width, dtype=np.int64) for _ in range(4))
        self.counts = np.zeros((N_LEN * N_ORD, 2), dtype=np.int64)
        self.weights = np.tile(W_INIT, (N_CTX, 1))
        self.ng_tag = np.zeros((len(NG_ORDERS), ng_size), dtype=np.int64)
        self.ng_tok, self.ng_cnt = (np.zeros((len(NG_ORDERS), ng_size, NG_K), dtype=np.int32) for _ in range(2))
        self.ng_loss = np.zeros((len(NG_ORDERS) * N_CONF, N_LAM), dtype=np.int64)
        models.ng_start(self.ng_loss)
        self._row = None

    def _state(self):
        return self.hist, self.pos, self.mptr, self.mlen, self.mord, self.tables

    def _ng(self):
        return self.ng_tag, self.ng_tok, self.ng_cnt, self.ng_loss

    def _begin(self, lanes: np.ndarray, rows: int):
        lanes = np.asarray(lanes, dtype=np.int64)
        slots = lanes % self.width
        _reset(slots, lanes, self.owner, self.pos, self.mptr, self.mlen, self.mord, self.tables)
        pred, length, order = (np.empty(rows, dtype=np.int64) for _ in range(3))
        return slots, pred, length, order

    def _chosen(self, pred: np.ndarray) -> np.ndarray:
        """The LLM's weight of each row's predicted token (0 where none), from the last block table."""
        blocks, within = self.factor.split(np.maximum(pred, 0))
        inner = self.plain.entries(blocks)
        return np.where(pred >= 0, inner[np.arange(len(pred)), within], 0.0)

    def block_table(self, logits: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        slots, pred, length, order = self._begin(lanes, len(logits))
        _step_predict(slots, *self._state(), pred, length, order)
        outer = self.plain.block_table(logits)
        wc = self._chosen(pred)
        rows = len(logits)
        xs, ng, wnew = np.zeros((rows, N_IN), dtype=np.int64), np.zeros((rows, 5), dtype=np.int64), np.zeros((rows, 3))
        ctxs, qs = np.zeros((2, rows), dtype=np.int64)
        _step_mix(slots, pred, length, order, wc, outer, self.factor.block, self.weights, self.counts, SQUASH,
                  STRETCH, xs, ctxs, qs, wnew, self.hist, self.pos, *self._ng(), ng)
        self._row = (slots, pred, length, order, xs, ctxs, qs, wnew, ng, None)
        return outer

    def entries(self, blocks: np.ndarray) -> np.ndarray:
        inner = self.plain.entries(blocks)
        _, pred, _, _, _, _, _, wnew, ng, _ = self._row
        pre = np.empty_like(inner)
        _step_inner(np.asarray(blocks, dtype=np.int64), pred, wnew, self.factor.block, inner, pre, ng, self.ng_tok,
                    self.ng_cnt)
        self._row = self._row[:-1] + (pre,)
        return inner

    def learn(self, symbols: np.ndarray) -> None:
        slots, pred, length, order, xs, ctxs, qs, wnew, ng, pre = self._row
        _step_learn(slots, np.asarray(symbols, dtype=np.int64), pred, length, order, ctxs, qs, xs, self.weights,
                    self.counts, self.hist, self.pos, self.mptr, self.mlen, self.tables, pre, self.factor.block, wnew,
                    ng, *self._ng(), COST)

    def encoder(self, logits: np.ndarray, symbols: np.ndarray, lanes: np.ndarray):
        """(block table, the symbols' blocks' entries, -log2 p' of each symbol), then learns them."""
        outer = self.block_table(logits, lanes)
        blocks, within = self.factor.split(np.asarray(symbols))
        inner = self.entries(blocks)
        bits = np.log2(outer.sum(axis=1)) - np.log2(inner[np.arange(len(within)), within])
        self.learn(symbols)
        return outer, inner, bits

    def score(self, logits: np.ndarray, symbols: np.ndarray, lane: int) -> np.ndarray:
        """Ideal bits of one lane's consecutive rows under the mixed distribution, learning as it goes."""
        symbols = np.asarray(symbols, dtype=np.int64)
        slots, pred, length, order = self._begin(np.array([lane]), len(symbols))
        s, start = int(slots[0]), int(self.pos[slots[0]])
        _block_predict(s, symbols, *self._state(), pred, length, order)
        outer = self.plain.block_table(logits)
        wc = self._chosen(pred)
        blocks, within = self.factor.split(symbols)
        wx = self.plain.entries(blocks)[np.arange(len(symbols)), within]
        bits = np.empty(len(symbols))
        _block_mix(s, symbols, pred, length, order, wc, wx, outer, self.factor.block, self.weights, self.counts,
                   SQUASH, STRETCH, bits, self.hist, start, *self._ng(), COST)
        return bits

    def digest(self) -> str:
        """A hash of the whole state (what both ends must agree on after a file)."""
        h = hashlib.sha256()
        for a in (self.hist, self.tables, self.owner, self.pos, self.mptr, self.mlen, self.mord, self.counts,
                  self.weights, *self._ng()):
            h.update(a.tobytes())
        return h.hexdigest()[:16]


class Plain:
    """The LLM alone, behind MatchTables' calls."""

    def __init__(self, plain):
        self.plain, self.factor = plain, plain.factor

    def encoder(self, logits, symbols, lanes):
        return self.plain.encoder(logits, symbols)

    def block_table(self, logits, lanes):
        return self.plain.block_table(logits)

    def entries(self, blocks):
        return self.plain.entries(blocks)

    def learn(self, symbols) -> None:
        pass

    def digest(self) -> str:
        return ""


def step_tables(mode: str, n_symbols: int, n_escapes: int, width: int, longest: int):
    """The coder's step tables under a mix mode (MODES)."""
    from_llm = entropy_model.StepTables(n_symbols, n_escapes)
    if mode == "none":
        return Plain(from_llm)
    if mode == "match":
        return MatchTables(from_llm, width, longest)
    raise BpcError(f"unknown mix mode {mode!r} (known: {', '.join(MODES)})")
