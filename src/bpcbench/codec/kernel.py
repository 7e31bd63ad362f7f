"""The compiled loops behind entropy_model: logits rows -> coder tables, ideal bits, ladder scores.

What they compute is entropy_model's rule (weights exp(l - max l), escape columns, two-level
blocks); this module is only how, fast: one pass per row over the vocabulary, vectorized, rows
split between threads (`prange`), nothing the size of rows x vocabulary in float64.

Why numba: it compiles at first use on the user's machine from plain Python, so installing
bpcbench needs no C compiler and CI builds nothing; `cache=True` keeps the machine code between
processes. A C extension or Rust would need a toolchain at install or a wheel per platform.

Bit-exact by construction, whatever the threads:
* a row is computed by one thread, start to end; threads split rows, never a sum;
* every sum runs in one fixed order (`_fixed_sum`: eight interleaved partial sums combined in a
  fixed tree), and `fastmath=False` forbids the compiler to reorder or fuse float operations,
  so a vectorized loop gives the same bits as a scalar one;
* exp is computed here (`_exp`) from additions and multiplications alone, not by a libm whose
  last bit may differ between builds, and its argument is clamped so that no subnormal number
  ever appears (flush-to-zero settings of a thread cannot matter).
The coder's tables therefore depend on IEEE double arithmetic alone; `build()` still names the
compiler and the CPU target, which the container fingerprint includes (codec/session.py).
"""

from __future__ import annotations

import math

import llvmlite
import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

VERSION = "bpcbench-kernel/1"  # bump whenever a change here can change a table's bits

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: n * _LN2_HI is exact for |n| < 2**21
_LN2_LO = 1.90821492927058770002e-10
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52: x + _SHIFTER rounds x to an integer (nearest even)
_FLOOR = -700.0  # exp(-700) ~ 1e-304 is still a normal number: no subnormal anywhere
# 1/k! for k = 2 .. 12: Taylor's series of exp on |r| <= ln2/2 (truncation < 2e-16 relative)
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12 = (1.0 / math.factorial(k) for k in range(2, 13))
_JIT = {"cache": True, "fastmath": False}
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


@intrinsic
def _bits_of(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _double_of(typingctx, k):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(**_INLINE)
def _exp(x):
    """exp(x) for x <= 0, within ~2 ulp, from + and x only: x = n ln2 + r, exp(r) by Horner."""
    x = x if x > _FLOOR else _FLOOR  # also maps NaN to the floor
    t = x * _LOG2E + _SHIFTER
    n = t - _SHIFTER
    r = (x - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r  # Estrin's scheme: the same sum as Horner's, in a shorter chain of dependent operations
    r4 = r2 * r2
    lo = ((1.0 + r) + r2 * (_C2 + _C3 * r)) + r4 * ((_C4 + _C5 * r) + r2 * (_C6 + _C7 * r))
    hi = ((_C8 + _C9 * r) + r2 * (_C10 + _C11 * r)) + r4 * _C12
    p = lo + (r4 * r4) * hi
    return p * _double_of((_bits_of(t) - _bits_of(_SHIFTER) + 1023) << 52)


@njit(**_INLINE)
def _fixed_sum(a, n):
    """a[0] + ... + a[n-1] in one fixed order: a[i] into partial sum i % 8, then a fixed tree."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    k = n - n % 8
    for i in range(0, k, 8):
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        s4 += a[i + 4]
        s5 += a[i + 5]
        s6 += a[i + 6]
        s7 += a[i + 7]
    for i in range(k, n):
        s0 += a[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_INLINE)
def _row_max(row):
    m = row[0]
    for i in range(1, row.shape[0]):
        if row[i] > m:
            m = row[i]
    return np.float64(m)


@njit(**_INLINE)
def _entries(row, m, esc, n_escapes, b, block, out):
    """Block b of the row's table into out[:block]: tokens' weights, then escapes, then zero padding."""
    n_vocab = row.shape[0]
    lo = b * block
    n = max(0, min(block, n_vocab - lo))
    seg = row[lo : lo + n]  # a view, indexed from 0: the loop vectorizes
    for j in range(n):
        out[j] = _exp(np.float64(seg[j]) - m)
    for j in range(n, block):
        out[j] = esc if lo + j < n_vocab + n_escapes else 0.0


@njit(**_JIT)
def _row_tables(row, n_escapes, esc_factor, block, outer, scratch):
    """The row's block sums into outer; -> (max logit, escape weight, sum of the tokens' weights)."""
    n_vocab, n_blocks = row.shape[0], outer.shape[0]
    m = _row_max(row)
    vocab = 0.0
    for b in range(n_blocks):  # escapes weigh 0 in this pass: their weight depends on its total
        _entries(row, m, 0.0, 0, b, block, scratch)
        outer[b] = _fixed_sum(scratch, block)
        vocab += outer[b]
    esc = vocab * esc_factor
    for b in range(n_vocab // block, min(n_blocks, (n_vocab + n_escapes + block - 1) // block)):
        _entries(row, m, esc, n_escapes, b, block, scratch)
        outer[b] = _fixed_sum(scratch, block)
    return m, esc, vocab


@njit(**_INLINE)
def _weight(row, m, esc, s):
    return _exp(np.float64(row[s]) - m) if s < row.shape[0] else esc


@njit(**_INLINE)
def _total(outer):
    t = 0.0
    for b in range(outer.shape[0]):
        t += outer[b]
    return t


@njit(parallel=True, **_JIT)
def coder_tables(logits, n_escapes, esc_factor, block, outer, row_max, row_esc):
    """The decoder's first table: outer[r] = row r's block sums; its max and escape weight kept for
    `chosen_entries`."""
    for r in prange(logits.shape[0]):
        scratch = np.empty(block)
        m, esc, _ = _row_tables(logits[r], n_escapes, esc_factor, block, outer[r], scratch)
        row_max[r] = m
        row_esc[r] = esc


@njit(parallel=True, **_JIT)
def chosen_entries(logits, row_max, row_esc, n_escapes, blocks, block, inner):
    """inner[r] = the entries of block blocks[r] of row r (after `coder_tables` on the same logits)."""
    for r in prange(blocks.shape[0]):
        _entries(logits[r], row_max[r], row_esc[r], n_escapes, blocks[r], block, inner[r])


@njit(parallel=True, **_JIT)
def encoder_tables(logits, symbols, n_escapes, esc_factor, block, outer, inner, bits):
    """The encoder's step: block sums, the symbol's block, and -log2 p(symbol) under that table."""
    for r in prange(logits.shape[0]):
        m, esc, _ = _row_tables(logits[r], n_escapes, esc_factor, block, outer[r], inner[r])
        s = symbols[r]
        _entries(logits[r], m, esc, n_escapes, s // block, block, inner[r])
        bits[r] = math.log2(_total(outer[r])) - math.log2(inner[r, s % block])


@njit(parallel=True, **_JIT)
def ideal(logits, symbols, n_escapes, esc_factor, block, n_blocks, bits, nats):
    """bits[r] = -log2 p(symbol) under the coder's table (as `encoder_tables` gives it); nats[r] =
    -ln p under the plain softmax over the vocabulary (an escape symbol: bits[r] in nats)."""
    for r in prange(logits.shape[0]):
        outer, scratch = np.empty(n_blocks), np.empty(block)
        m, esc, vocab = _row_tables(logits[r], n_escapes, esc_factor, block, outer, scratch)
        w = _weight(logits[r], m, esc, symbols[r])
        bits[r] = math.log2(_total(outer)) - math.log2(w)
        nats[r] = math.log(vocab) - math.log(w) if symbols[r] < logits.shape[1] else bits[r] * _LN2


@njit(parallel=True, **_JIT)
def full_weights(logits, n_escapes, esc_factor, block, n_blocks, out):
    """out[r, :vocab + escapes] = row r's whole table, entry for entry the blocks the coder reads."""
    n = out.shape[1]
    for r in prange(logits.shape[0]):
        outer, scratch = np.empty(n_blocks), np.empty(block)
        m, esc, _ = _row_tables(logits[r], n_escapes, esc_factor, block, outer, scratch)
        for b in range(n_blocks):
            _entries(logits[r], m, esc, n_escapes, b, block, scratch)
            for j in range(min(block, n - b * block)):
                out[r, b * block + j] = scratch[j]


@njit(**_JIT)
def _kld_row(lb, lq, mb, mq, zb, zq, scratch):
    """KL(base || level) in nats: Σ p_b (l_b - l_q) + (m_q - m_b) + (ln Z_q - ln Z_b), block by block."""
    block, n = scratch.shape[0], lb.shape[0]
    dot = 0.0
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        for i in range(lo, hi):
            scratch[i - lo] = _exp(np.float64(lb[i]) - mb) * (np.float64(lb[i]) - np.float64(lq[i]))
        dot += _fixed_sum(scratch, hi - lo)
    return dot / zb + ((mq - mb) + (math.log(zq) - math.log(zb)))


@njit(**_JIT)
def _argmax(row):
    k = 0
    for i in range(1, row.shape[0]):
        if row[i] > row[k]:
            k = i
    return k


@njit(parallel=True, **_JIT)
def pair_scores(lb, lq, symbols, n_escapes, esc_factor, block, n_blocks, bits_b, bits_q, kld, same):
    """The ladder's row pairs: bits under base and level (as `ideal`), KL(base || level), same top token."""
    for r in prange(lb.shape[0]):
        outer, scratch = np.empty(n_blocks), np.empty(block)
        s = symbols[r]
        mb, eb, zb = _row_tables(lb[r], n_escapes, esc_factor, block, outer, scratch)
        bits_b[r] = math.log2(_total(outer)) - math.log2(_weight(lb[r], mb, eb, s))
        mq, eq, zq = _row_tables(lq[r], n_escapes, esc_factor, block, outer, scratch)
        bits_q[r] = math.log2(_total(outer)) - math.log2(_weight(lq[r], mq, eq, s))
        kld[r] = _kld_row(lb[r], lq[r], mb, mq, zb, zq, scratch)
        same[r] = _argmax(lb[r]) == _argmax(lq[r])
