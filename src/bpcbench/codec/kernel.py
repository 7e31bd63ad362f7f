"""The compiled loops behind entropy_model: logits rows -> coder tables, ideal bits, ladder scores.

What they compute is entropy_model's rule (weights exp(l - max l), escape columns, two-level
blocks); this module is only how, fast: one pass over each row's float32 logits as llama.cpp
wrote them, 16 lanes at a time, rows split between threads (`prange`), nothing the size of
rows x vocabulary in float64.

Why numba: it compiles at first use on the user's machine from plain Python, so installing
bpcbench needs no C compiler and CI builds nothing; `cache=True` keeps the machine code between
processes. A C extension or Rust would need a toolchain at install or a wheel per platform.

The inner loops (`block_max`, `block_sum`, `block_dot`, and `exp32`, one lane of them) are LLVM
IR in codec/kernel_ir.py, which says why; element-wise loops (a block's entries) stay plain
numba over `exp32`, which vectorizes them with the same per-element operations.

How a row is priced, block by block (a block is the coder's: ~sqrt(vocabulary) tokens, 1-4 KiB
of logits that stay in L1 while they are used): the block's max m_b, then
S_b = sum exp32(l - m_b) over its tokens, summed in float64. A token's weight is
exp32(l - m_b) * E_b with E_b = exp64(m_b - m), m the row's max: exp(l - m) within ~1e-7
relative, and the block sums are S_b * E_b, so the logits are read from memory once. exp32 is
float32 (x = n ln2 + r, a degree-6 polynomial; 16 lanes per AVX-512 vector, where float64
degree 12 without fusing took 5x longer); the sums are float64, so an ideal cost of 1e-4 bits is
still accurate to 1e-6 of itself (each weight's error is relative, the sums add none that counts).

Bit-exact by construction, whatever the threads:
* a row is computed by one thread, start to end; threads split rows, never a sum;
* every sum runs in one fixed order (element i of a block into lane i % 16, the lanes combined
  in a fixed tree, the tail and the blocks added in index order); `fastmath=False` forbids the
  compiler to reorder or contract float operations, and the fused multiply-adds are explicit
  (`llvm.fma`, one rounding by definition, on any CPU);
* exp is computed here from IEEE operations alone, not by a libm whose last bit may differ
  between builds, and its arguments are clamped so that no subnormal number ever appears
  (flush-to-zero settings of a thread cannot matter).
The coder's tables therefore depend on IEEE arithmetic alone; `build()` still names the
compiler and the CPU target, which the container fingerprint includes (codec/session.py).
"""

from __future__ import annotations

import math

import llvmlite
import llvmlite.binding
import numba
import numpy as np
from numba import njit, prange

from bpcbench.codec.kernel_ir import LANES, bits_of, block_dot, block_max, block_sum, double_of, exp32

# bump whenever a change here or in codec/kernel_ir.py can change a table's bits (editing this file also
# makes numba recompile: its cache of these functions is keyed by this file alone)
VERSION = "bpcbench-kernel/2"

# float64 exp, for the blocks' scales E_b only (one per block)
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: n * _LN2_HI is exact for |n| < 2**21
_LN2_LO = 1.90821492927058770002e-10
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52: x + _SHIFTER rounds x to an integer (nearest even)
# a block's scale is at least exp(-600) ~ 3e-261, a token's exp32 at least exp(-80) ~ 2e-35: their
# product stays a normal float64
_SCALE_FLOOR = -600.0
# 1/k! for k = 2 .. 12: Taylor's series of exp on |r| <= ln2/2 (truncation < 2e-16 relative)
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12 = (1.0 / math.factorial(k) for k in range(2, 13))
# nogil: the lane evaluator's worker thread runs llama_decode while a step runs these (llama/lanes.py);
# releasing the GIL changes no instruction of the loops, so no bit of a table
_JIT = {"cache": True, "fastmath": False, "nogil": True}
# the per-element helpers are inlined into the loops that call them, so those loops vectorize
_INLINE = {"inline": "always", **_JIT}


def build() -> dict:
    """What compiled these loops: kernel version, numba, llvmlite and the CPU target."""
    return {"kernel": VERSION, "numba": numba.__version__, "llvmlite": llvmlite.__version__,
            "cpu": numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name(),
            "cpu_features": numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()}


def set_threads(n: int) -> None:
    """Threads the kernels split rows across (results never depend on it)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))



# ---- per-block and per-row helpers (numba) ----


@njit(**_INLINE)
def _exp64(x):
    """exp(x) for x <= 0, within ~2 ulp, from + and x only: x = n ln2 + r, exp(r) by Horner."""
    x = x if x > _SCALE_FLOOR else _SCALE_FLOOR  # also maps NaN to the floor
    t = x * _LOG2E + _SHIFTER
    n = t - _SHIFTER
    r = (x - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r  # Estrin's scheme: the same sum as Horner's, in a shorter chain of dependent operations
    r4 = r2 * r2
    lo = ((1.0 + r) + r2 * (_C2 + _C3 * r)) + r4 * ((_C4 + _C5 * r) + r2 * (_C6 + _C7 * r))
    hi = ((_C8 + _C9 * r) + r2 * (_C10 + _C11 * r)) + r4 * _C12
    p = lo + (r4 * r4) * hi
    return p * double_of((bits_of(t) - bits_of(_SHIFTER) + 1023) << 52)


@njit(**_INLINE)
def _scale(mb, m):
    """E_b = exp(m_b - m): what a block's exp32 weights are multiplied by."""
    return _exp64(np.float64(mb) - np.float64(m))


@njit(**_INLINE)
def _tokens_in(n_vocab, b, block):
    return max(0, min(block, n_vocab - b * block))


@njit(**_INLINE)
def _escapes_in(n_vocab, n_escapes, b, block):
    lo, hi = b * block, (b + 1) * block
    return max(0, min(hi, n_vocab + n_escapes) - max(lo, n_vocab))


@njit(**_INLINE)
def _tokens_sum(row, lo, n, mb):
    """S_b: the whole chunks in 16 lanes, then the tail in index order."""
    s = block_sum(row, lo, n, mb)
    for i in range(lo + n - n % LANES, lo + n):
        s += exp32(row[i], mb)
    return s


@njit(**_JIT)
def _row_tables(row, n_escapes, esc_factor, block, outer, bmax):
    """The row's block sums into outer and block maxima into bmax;
    -> (max logit, escape weight, sum of the tokens' weights)."""
    n_vocab, n_blocks = row.shape[0], outer.shape[0]
    m = np.float32(-np.inf)
    for b in range(n_blocks):  # the one pass over the logits
        n = _tokens_in(n_vocab, b, block)
        mb = block_max(row, b * block, n)
        bmax[b] = mb
        outer[b] = _tokens_sum(row, b * block, n, mb) if n else 0.0
        m = mb if mb > m else m
    vocab = 0.0
    for b in range(n_blocks):
        outer[b] *= _scale(bmax[b], m)
        vocab += outer[b]
    esc = vocab * esc_factor
    for b in range(n_vocab // block, n_blocks):  # escapes are added after the tokens, k of them at once
        outer[b] += esc * _escapes_in(n_vocab, n_escapes, b, block)
    return m, esc, vocab


@njit(**_INLINE)
def _entries(row, mb, scale, esc, n_escapes, b, block, out):
    """Block b of the row's table into out[:block]: tokens' weights, then escapes, then zero padding."""
    n_vocab = row.shape[0]
    lo = b * block
    n = _tokens_in(n_vocab, b, block)
    seg = row[lo : lo + n]  # a view, indexed from 0: the loop vectorizes
    for j in range(n):
        out[j] = exp32(seg[j], mb) * scale
    for j in range(n, block):
        out[j] = esc if lo + j < n_vocab + n_escapes else 0.0


@njit(**_INLINE)
def _weight(row, bmax, m, esc, block, s):
    """The weight of symbol s, entry for entry what `_entries` puts in its block."""
    if s >= row.shape[0]:
        return esc
    mb = bmax[s // block]
    return exp32(row[s], mb) * _scale(mb, m)


@njit(**_INLINE)
def _total(outer):
    t = 0.0
    for b in range(outer.shape[0]):
        t += outer[b]
    return t


@njit(**_INLINE)
def _row_max(bmax):
    m = np.float32(-np.inf)
    for b in range(bmax.shape[0]):
        m = bmax[b] if bmax[b] > m else m
    return m


# ---- what entropy_model calls ----


@njit(parallel=True, **_JIT)
def coder_tables(logits, n_escapes, esc_factor, block, outer, row_max, row_esc):
    """The decoder's first table: outer[r] = row r's block sums; row_max[r] its block maxima (float32)
    and row_esc[r] its escape weight, kept for `chosen_entries`."""
    for r in prange(logits.shape[0]):
        _, esc, _ = _row_tables(logits[r], n_escapes, esc_factor, block, outer[r], row_max[r])
        row_esc[r] = esc


@njit(parallel=True, **_JIT)
def chosen_entries(logits, row_max, row_esc, n_escapes, blocks, block, inner):
    """inner[r] = the entries of block blocks[r] of row r (after `coder_tables` on the same logits)."""
    for r in prange(blocks.shape[0]):
        b = blocks[r]
        mb = row_max[r, b]
        _entries(logits[r], mb, _scale(mb, _row_max(row_max[r])), row_esc[r], n_escapes, b, block, inner[r])


@njit(parallel=True, **_JIT)
def encoder_tables(logits, symbols, n_escapes, esc_factor, block, outer, inner, bits):
    """The encoder's step: block sums, the symbol's block, and -log2 p(symbol) under that table."""
    for r in prange(logits.shape[0]):
        bmax = np.empty(outer.shape[1], dtype=np.float32)
        m, esc, _ = _row_tables(logits[r], n_escapes, esc_factor, block, outer[r], bmax)
        s = symbols[r]
        b = s // block
        _entries(logits[r], bmax[b], _scale(bmax[b], m), esc, n_escapes, b, block, inner[r])
        bits[r] = math.log2(_total(outer[r])) - math.log2(inner[r, s % block])


@njit(parallel=True, **_JIT)
def ideal(logits, symbols, n_escapes, esc_factor, block, n_blocks, bits, nats):
    """bits[r] = -log2 p(symbol) under the coder's table (as `encoder_tables` gives it); nats[r] =
    -ln p under the plain softmax over the vocabulary (an escape symbol: bits[r] in nats)."""
    for r in prange(logits.shape[0]):
        outer, bmax = np.empty(n_blocks), np.empty(n_blocks, dtype=np.float32)
        m, esc, vocab = _row_tables(logits[r], n_escapes, esc_factor, block, outer, bmax)
        w = _weight(logits[r], bmax, m, esc, block, symbols[r])
        bits[r] = math.log2(_total(outer)) - math.log2(w)
        nats[r] = math.log(vocab) - math.log(w) if symbols[r] < logits.shape[1] else bits[r] * _LN2


@njit(parallel=True, **_JIT)
def full_weights(logits, n_escapes, esc_factor, block, n_blocks, out):
    """out[r, :vocab + escapes] = row r's whole table, entry for entry the blocks the coder reads."""
    n = out.shape[1]
    for r in prange(logits.shape[0]):
        outer, bmax, scratch = np.empty(n_blocks), np.empty(n_blocks, dtype=np.float32), np.empty(block)
        m, esc, _ = _row_tables(logits[r], n_escapes, esc_factor, block, outer, bmax)
        for b in range(n_blocks):
            _entries(logits[r], bmax[b], _scale(bmax[b], m), esc, n_escapes, b, block, scratch)
            for j in range(min(block, n - b * block)):
                out[r, b * block + j] = scratch[j]


@njit(**_JIT)
def _kld_row(lb, lq, bmax, mb, mq, zb, zq, block):
    """KL(base || level) in nats: sum p_b (l_b - l_q) + (m_q - m_b) + (ln Z_q - ln Z_b), block by block."""
    n = lb.shape[0]
    dot = 0.0
    for b in range(bmax.shape[0]):
        lo, k = b * block, _tokens_in(n, b, block)
        if k == 0:
            continue
        d = block_dot(lb, lq, lo, k, bmax[b])
        for i in range(lo + k - k % LANES, lo + k):
            d += exp32(lb[i], bmax[b]) * (np.float64(lb[i]) - np.float64(lq[i]))
        dot += d * _scale(bmax[b], mb)
    return dot / zb + ((np.float64(mq) - np.float64(mb)) + (math.log(zq) - math.log(zb)))


@njit(**_JIT)
def _argmax(row, bmax, m, block):
    """The first index of the row's max: the first block whose max it is, then within that block."""
    for b in range(bmax.shape[0]):
        if bmax[b] == m:
            for i in range(b * block, b * block + _tokens_in(row.shape[0], b, block)):
                if row[i] == m:
                    return i
    return 0


@njit(parallel=True, **_JIT)
def pair_scores(lb, lq, symbols, n_escapes, esc_factor, block, n_blocks, bits_b, bits_q, kld, same):
    """The ladder's row pairs: bits under base and level (as `ideal`), KL(base || level), same top token."""
    for r in prange(lb.shape[0]):
        outer, bmax_b, bmax_q = np.empty(n_blocks), np.empty(n_blocks, np.float32), np.empty(n_blocks, np.float32)
        s = symbols[r]
        mb, eb, zb = _row_tables(lb[r], n_escapes, esc_factor, block, outer, bmax_b)
        bits_b[r] = math.log2(_total(outer)) - math.log2(_weight(lb[r], bmax_b, mb, eb, block, s))
        mq, eq, zq = _row_tables(lq[r], n_escapes, esc_factor, block, outer, bmax_q)
        bits_q[r] = math.log2(_total(outer)) - math.log2(_weight(lq[r], bmax_q, mq, eq, block, s))
        kld[r] = _kld_row(lb[r], lq[r], bmax_b, mb, mq, zb, zq, block)
        same[r] = _argmax(lb[r], bmax_b, mb, block) == _argmax(lq[r], bmax_q, mq, block)


# ---- the per-row rule under public names, for the kernels beside this one (codec/lossy_kernel.py) ----
# They call these very functions, so their tables are entry for entry this module's. numba keys a
# function's cache by its own file: a change here that moves bits must bump those kernels' VERSION too.
JIT, INLINE, LN2 = _JIT, _INLINE, _LN2
row_tables, block_entries, weight, block_scale, total = _row_tables, _entries, _weight, _scale, _total
exp64, first_argmax = _exp64, _argmax
