"""Score match-mixer designs offline (#25) on benchmarks/mix_dump.py's dumps, in seconds a corpus.

An integer copy of bpcbench-mix/1's match model and mixer (codec/mixing.py before the n-gram model) with
switches for the variants tried (docs/measurements.md, "Mixing in a match model"); with no switch ("base")
it reproduces benchmarks/mix_gain.py's figures of bpcbench-mix/1.

    PYTHONPATH=src python benchmarks/mix_lab.py /tmp/mixdump/alice29-0.npz@8268 /tmp/mixdump/iso3166-1-0.npz \
        --set ord_ctx=2,orders=2 --set apm=1

FILE.npz@N scores the first N tokens only. Switches (name=value, comma-separated): rate (learning rate),
nomatch_top (predict the LLM's top token where no match), apm (an APM stage on q by the hit counter),
apm_rate, apm_w (its share in quarters), ctx2 (an order-2 context model's token as an input; 2: also as
the prediction where no match), two (the occurrence before the last as an input), ord_ctx (1: hit counts
and weight sets per match order; 2: hit counts only; 3: weight sets only), rate0 (a faster start),
conf3 (three confidence edges), big (hash tables 2**big times larger), orders (ORDER_SETS).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from numba import njit

from bpcbench.codec import mixing

ONE = 1 << 16
ST_MAX = mixing._ST_MAX
SQUASH, STRETCH = mixing.SQUASH, mixing.STRETCH

# parameter vector indices
P_RATE, P_NOMATCH_TOP, P_APM, P_APM_RATE, P_CTX2, P_TWO, P_ORD_CTX, P_RATE0, P_APM_W, P_CONF3, P_BIG = range(11)
N_PAR = 11


@njit(cache=True)
def _hash(hist, end, k, mask):
    h = np.uint64(0x9E3779B97F4A7C15)
    for i in range(end - k, end):
        h = (h ^ np.uint64(hist[i] + 1)) * np.uint64(0x100000001B3)
    return np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))


@njit(cache=True)
def _bucket(edges, v):
    b = 0
    while b < edges.shape[0] and v > edges[b]:
        b += 1
    return b


@njit(cache=True)
def _p16(p):
    v = np.int64(p * ONE) if p < 1.0 else ONE - 1
    return min(ONE - 1, max(1, v))


@njit(cache=True)
def _lookup(cand, pcand, i, c, target, ptarget):
    for j in range(cand.shape[1]):
        if cand[i, j] == c:
            return pcand[i, j]
    if c == target:
        return ptarget
    return pcand[i, 63] * 0.5  # not stored: below the 64th


@njit(cache=True)
def run(tokens, bits, ptop, cand, pcand, orders, par, squash, stretch, out, lgsize, outq, outc, outpc):
    n = tokens.shape[0]
    size = 1 << lgsize
    mask = size - 1
    tables = np.zeros((orders.shape[0], size), dtype=np.int64)
    tables2 = np.zeros((orders.shape[0], size), dtype=np.int64)  # the occurrence before the last
    hist = tokens
    len_edges = np.array([3, 8, 16])
    conf_edges = np.array([int(0.5 * ONE), int(0.9 * ONE)]) if par[P_CONF3] == 0 else np.array(
        [int(0.3 * ONE), int(0.6 * ONE), int(0.9 * ONE)])
    n_len, n_conf = 4, conf_edges.shape[0] + 1
    n_src = 3
    n_ord = orders.shape[0] if par[P_ORD_CTX] else 1
    nctx = n_src * n_len * n_conf * 2 * n_ord * 2
    n_in = 5
    weights = np.zeros((nctx, n_in), dtype=np.int64)
    for c in range(nctx):
        weights[c, 0] = ONE
    counts = np.zeros((n_src * n_len * n_ord, 2), dtype=np.int64)
    # order-2 context model: hashed (last successor, confidence)
    cm_tok = np.full(1 << 20, -1, dtype=np.int64)
    cm_n = np.zeros(1 << 20, dtype=np.int64)
    # apm: per context 33 interpolation points over stretch
    n_apm = n_src * n_len * n_ord * 2
    apm = np.zeros((n_apm, 33), dtype=np.int64)
    for a in range(n_apm):
        for j in range(33):
            apm[a, j] = squash[min(2 * ST_MAX, max(0, (j - 16) * 2 * ST_MAX // 32 + ST_MAX))] * 16
    mptr, mlen, mord = 0, 0, 0
    x = np.zeros(n_in, dtype=np.int64)
    seen = 0
    for i in range(n):
        target = tokens[i]
        ptarget = 2.0 ** -bits[i]
        # --- the match model
        if mlen == 0:
            for o in range(orders.shape[0]):
                k = orders[o]
                if i < k:
                    continue
                p = tables[o, _hash(hist, i, k, mask)]
                if p <= 0:
                    continue
                m = 0
                while m < 64 and p - 1 - m >= 0 and hist[p - 1 - m] == hist[i - 1 - m]:
                    m += 1
                if m >= k:
                    mptr, mlen, mord = p, m, o
                    break
        c, src = -1, 0
        if mlen > 0:
            c = hist[mptr]
        # second candidate: the occurrence before (if it predicts differently) -- input only
        c2 = -1
        if par[P_TWO] and mlen > 0:
            k = orders[mord]
            p = tables2[mord, _hash(hist, i, k, mask)]
            if p > 0 and hist[p] != c:
                c2 = hist[p]
        # context model
        hctx = -1
        ctok = -1
        if par[P_CTX2] and i >= 2:
            hctx = ((hist[i - 1] * 1000003) ^ (hist[i - 2] * 7919 + 17)) & ((1 << 20) - 1)
            ctok = cm_tok[hctx]
        if c < 0 and ctok >= 0 and par[P_CTX2] == 2:
            c, src = ctok, 1
        if c < 0 and par[P_NOMATCH_TOP]:
            c, src = cand[i, 0], 2
        if c >= 0:
            pc = _lookup(cand, pcand, i, c, target, ptarget)
            length = mlen if src == 0 else 0
            lb = _bucket(len_edges, length)
            oc = mord if (par[P_ORD_CTX] and src == 0) else 0
            occ = oc if par[P_ORD_CTX] in (1, 2) else 0
            ocw = oc if par[P_ORD_CTX] in (1, 3) else 0
            ci = (src * n_len + lb) * n_ord + occ
            hits, sn = counts[ci, 0], counts[ci, 1]
            x[0] = stretch[_p16(pc)]
            x[1] = stretch[min(ONE - 1, max(1, ((2 * hits + 1) << 16) // (2 * sn + 2)))]
            x[2] = 256
            x[3] = 0
            if ctok >= 0:
                cn = min(cm_n[hctx], 15)
                x[3] = (256 * (cn + 1)) if ctok == c else -(256 * (cn + 1)) // 2
            x[4] = 0
            if c2 >= 0:
                x[4] = 256
            top = 1 if c == cand[i, 0] else 0
            ctx = ((((src * n_len + lb) * n_conf + _bucket(conf_edges, _p16(ptop[i]))) * 2 + top) * n_ord + ocw) * 2 \
                + (1 if c2 >= 0 else 0)
            dot = 0
            for j in range(n_in):
                dot += x[j] * weights[ctx, j]
            d = min(ST_MAX, max(-ST_MAX, dot >> 16))
            q = squash[d + ST_MAX]
            qa = q
            if par[P_APM]:
                a = ci * 2 + top
                s = d + ST_MAX  # 0 .. 2 ST_MAX
                pos = s * 32
                lo = pos // (2 * ST_MAX)
                if lo >= 32:
                    lo = 31
                fr = pos - lo * 2 * ST_MAX  # 0 .. 2 ST_MAX
                pa = (apm[a, lo] * (2 * ST_MAX - fr) + apm[a, lo + 1] * fr) // (2 * ST_MAX) // 16
                w = par[P_APM_W]
                qa = (q * (4 - w) + pa * w) // 4
                qa = min(ONE - 1, max(1, qa))
            hit = target == c
            qf = qa / ONE
            outq[i], outc[i], outpc[i] = qf, c, pc
            if hit:
                out[i] = -math.log2(qf)
            else:
                out[i] = -math.log2(ptarget * (1 - qf) / max(1 - pc, 2.0 ** -40))
            # learn
            err = (ONE if hit else 0) - q
            rate = par[P_RATE]
            if par[P_RATE0] > 0:
                rate = max(rate, par[P_RATE0] * 1024 // (1024 + seen))
            for j in range(n_in):
                weights[ctx, j] += (x[j] * err * rate) >> 18
            counts[ci, 0] += 1 if hit else 0
            counts[ci, 1] += 1
            if counts[ci, 1] > 255:
                counts[ci, 0] //= 2
                counts[ci, 1] //= 2
            if par[P_APM]:
                tgt = (ONE if hit else 0) * 16
                r = par[P_APM_RATE]
                apm[a, lo] += ((tgt - apm[a, lo]) * (2 * ST_MAX - fr) // (2 * ST_MAX)) >> r
                apm[a, lo + 1] += ((tgt - apm[a, lo + 1]) * fr // (2 * ST_MAX)) >> r
            seen += 1
        else:
            out[i] = bits[i]
        # --- learn the match model
        if mlen > 0:
            if hist[mptr] == target:
                mptr += 1
                mlen += 1
            else:
                mlen = 0
        for o in range(orders.shape[0]):
            k = orders[o]
            if i >= k:
                hh = _hash(hist, i, k, mask)
                tables2[o, hh] = tables[o, hh]
                tables[o, hh] = i
        if hctx >= 0:
            if cm_tok[hctx] == target:
                cm_n[hctx] += 1
            elif cm_n[hctx] > 0:
                cm_n[hctx] //= 2
            else:
                cm_tok[hctx] = target
    return 0


def params(**kw) -> np.ndarray:
    p = np.zeros(N_PAR, dtype=np.int64)
    p[P_RATE] = 16
    p[P_APM_RATE] = 6
    p[P_APM_W] = 2
    for k, v in kw.items():
        p[globals()[f"P_{k.upper()}"]] = v
    return p


def score(d, par, orders=None, extra=None) -> tuple[float, float, int]:
    orders = ORDER_SETS[0] if orders is None else orders
    out = np.zeros(len(d["tokens"]))
    if extra is None:
        extra = (np.zeros(len(out)), np.zeros(len(out), dtype=np.int64), np.zeros(len(out)))
    extra[1][:] = -1
    lg = max(8, min((len(out) - 1).bit_length(), 20)) + par[P_BIG]  # the codec's table size, one lane
    run(d["tokens"], d["bits"], d["ptop"], d["cand"], d["pcand"], np.asarray(orders, dtype=np.int64), par,
        SQUASH, STRETCH, out, lg, *extra)
    return math.fsum(d["bits"]), math.fsum(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("--set", action="append", default=[], help="name=value,... one variant each")
    args = ap.parse_args()
    data = []
    for s in args.dumps:
        path, _, nt = s.partition("@")
        d = dict(np.load(path))
        if nt:
            d = {k: (v[: int(nt)] if v.ndim else v) for k, v in d.items()}
        data.append((s, d))
    for spec in ["base"] + args.set:
        kw = {} if spec == "base" else {k: int(v) for k, v in (t.split("=") for t in spec.split(","))}
        orders = kw.pop("orders", None)
        par = params(**kw)
        row = []
        for s, d in data:
            plain, mixed = score(d, par, ORDER_SETS[orders or 0])
            row.append(f"{s.split('/')[-1].replace('.npz', '')} {100 * (mixed / plain - 1):+.3f}%")
        print(f"{spec:40s} " + "  ".join(row), flush=True)


ORDER_SETS = {0: np.array([24, 12, 6, 3, 2, 1]), 1: np.array([32, 16, 8, 4, 2, 1]),
              2: np.array([24, 12, 6, 4, 3, 2, 1]), 3: np.array([16, 8, 5, 3, 2])}

if __name__ == "__main__":
    main()
