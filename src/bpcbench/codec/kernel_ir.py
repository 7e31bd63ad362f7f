"""The kernel's inner loops as LLVM IR (numba intrinsics): exp32 and the 16-lane block loops.

codec/kernel.py says what is computed and why this way; here is how, operation by operation. A
sum vectorizes only if the compiler may reorder it, which `fastmath=False` rightly forbids, and
LLVM's SLP vectorizer did not turn sixteen scalar partial sums into vectors; written as explicit
<16 x float> operations, the order of every operation is fixed here and the vectors are there
whatever the auto-vectorizer decides. `exp32` is one lane of the same operations (`_emit_exp`),
so element-wise numba loops over it (a block's entries) give the same bits as the vector loops.

Every change here that can change a result must bump kernel.VERSION: the container fingerprint
names it, and editing kernel.py is also what makes numba recompile the functions that inline these.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

# float32 exp (exp32), the per-token weight
_LOG2E = 1.4426950408889634
LANES = 16  # one AVX-512 vector of float32; on narrower CPUs LLVM splits it, with the same results
_F_LN2_HI = 0.693359375  # Cody and Waite's split of ln 2 (355/512)
_F_LN2_LO = -2.12194440e-4
_F_SHIFTER = 12582912.0  # 1.5 * 2**23
_F_FLOOR = -80.0  # exp(-80) ~ 1.8e-35 is a normal float32
# exp(r) ~ 1 + r + c2 r^2 + ... + c6 r^6 on |r| <= ln2/2, highest first (Horner): a relative-error
# fit (Lawson's iteration, coefficients rounded to float32), 1.7e-8 off exp before rounding
_F_POLY = (0.0013843653723597527, 0.00837415549904108, 0.04166800156235695, 0.16666431725025177,
           0.4999999403953552, 1.0, 1.0)


_F32, _F64, _I32 = ir.FloatType(), ir.DoubleType(), ir.IntType(32)


def _splat(ty, value):
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)
    return ir.Constant(ty, value)


def _f32(ty, value: float):
    return _splat(ty, float(np.float32(value)))


def _fma(builder, a, b, c):
    name = f"llvm.fma.v{a.type.count}f32" if isinstance(a.type, ir.VectorType) else "llvm.fma.f32"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(a.type, [a.type] * 3), name)
    return builder.call(fn, [a, b, c])


def _keep_max(builder, acc, x):
    """x if x > acc else acc: a NaN never wins."""
    return builder.select(builder.fcmp_ordered(">", x, acc), x, acc)


def _emit_exp(builder, d):
    """exp(d) in float32 for d <= 0, scalar or vector, lane for lane the same operations."""
    ty = d.type
    ity = ir.VectorType(_I32, ty.count) if isinstance(ty, ir.VectorType) else _I32
    floor = _f32(ty, _F_FLOOR)
    d = builder.select(builder.fcmp_ordered(">", d, floor), d, floor)  # also maps NaN to the floor
    t = _fma(builder, d, _f32(ty, _LOG2E), _f32(ty, _F_SHIFTER))
    n = builder.fsub(t, _f32(ty, _F_SHIFTER))
    r = _fma(builder, n, _f32(ty, -_F_LN2_HI), d)
    r = _fma(builder, n, _f32(ty, -_F_LN2_LO), r)
    p = _f32(ty, _F_POLY[0])
    for c in _F_POLY[1:]:
        p = _fma(builder, p, r, _f32(ty, c))
    k = builder.sub(builder.bitcast(t, ity), _splat(ity, int(np.float32(_F_SHIFTER).view(np.int32)) - 127))
    return builder.fmul(p, builder.bitcast(builder.shl(k, _splat(ity, 23)), ty))


def _check_row(row):
    if not (isinstance(row, types.Array) and row.dtype == types.float32 and row.ndim == 1 and row.layout == "C"):
        raise TypingError("the kernel reads C-contiguous float32 rows")


def _pointer(context, builder, aty, array, lo):
    return builder.gep(context.make_array(aty)(context, builder, array).data, [lo])


def _splat_value(builder, x, count):
    vty = ir.VectorType(x.type, count)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(_I32, count),
                                                                                    [0] * count))


def _halves(builder, v):
    """A <2k x T> vector as two <k x T>."""
    k = v.type.count // 2
    return [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, k), list(range(lo, lo + k))))
            for lo in (0, k)]


def _chunks(builder, n):
    return builder.sdiv(n, ir.Constant(n.type, LANES))


def _load(builder, base, i):
    p = builder.gep(base, [builder.mul(i, ir.Constant(i.type, LANES))])
    return builder.load(builder.bitcast(p, ir.VectorType(_F32, LANES).as_pointer()), align=4)


def _lane_sums(builder, base, other, chunks, m):
    """sum over whole chunks of exp32(a - m) (times a - b where `other` is given) into 16 float64 lanes,
    element i into lane i % 16; -> their total, lanes added in a fixed tree."""
    hty = ir.VectorType(_F64, LANES // 2)
    mv = _splat_value(builder, m, LANES)
    acc = [cgutils.alloca_once_value(builder, _splat(hty, 0.0)) for _ in range(2)]
    with cgutils.for_range(builder, chunks) as loop:
        a = _load(builder, base, loop.index)
        w = [builder.fpext(h, hty) for h in _halves(builder, _emit_exp(builder, builder.fsub(a, mv)))]
        if other is not None:
            b = _load(builder, other, loop.index)
            diff = [builder.fsub(builder.fpext(x, hty), builder.fpext(y, hty))
                    for x, y in zip(_halves(builder, a), _halves(builder, b), strict=True)]
            w = [builder.fmul(x, y) for x, y in zip(w, diff, strict=True)]
        for slot, x in zip(acc, w, strict=True):
            builder.store(builder.fadd(builder.load(slot), x), slot)
    s = builder.fadd(builder.load(acc[0]), builder.load(acc[1]))
    while s.type.count > 1:
        s = builder.fadd(*_halves(builder, s))
    return builder.extract_element(s, ir.Constant(_I32, 0))


@intrinsic
def block_max(typingctx, row, lo, n):
    """max of row[lo : lo + n] over its non-NaN entries (-inf if none), 16 lanes at a time."""
    _check_row(row)

    def codegen(context, builder, sig, args):
        base = _pointer(context, builder, sig.args[0], args[0], args[1])
        n, chunks = args[2], _chunks(builder, args[2])
        acc = cgutils.alloca_once_value(builder, _splat(ir.VectorType(_F32, LANES), float("-inf")))
        with cgutils.for_range(builder, chunks) as loop:
            builder.store(_keep_max(builder, builder.load(acc), _load(builder, base, loop.index)), acc)
        s = builder.load(acc)
        while s.type.count > 1:
            s = _keep_max(builder, *_halves(builder, s))
        out = cgutils.alloca_once_value(builder, builder.extract_element(s, ir.Constant(_I32, 0)))
        start = builder.mul(chunks, ir.Constant(n.type, LANES))
        with cgutils.for_range_slice(builder, start, n, ir.Constant(n.type, 1)) as (i, _):
            builder.store(_keep_max(builder, builder.load(out), builder.load(builder.gep(base, [i]))), out)
        return builder.load(out)

    return types.float32(row, types.intp, types.intp), codegen


@intrinsic
def block_sum(typingctx, row, lo, n, m):
    """sum of exp32(row[lo + i] - m) over the whole 16-lane chunks of i < n, in float64 (`_lane_sums`)."""
    _check_row(row)

    def codegen(context, builder, sig, args):
        base = _pointer(context, builder, sig.args[0], args[0], args[1])
        return _lane_sums(builder, base, None, _chunks(builder, args[2]), args[3])

    return types.float64(row, types.intp, types.intp, types.float32), codegen


@intrinsic
def block_dot(typingctx, row, other, lo, n, m):
    """sum of exp32(row[lo + i] - m) * (row[lo + i] - other[lo + i]) over whole chunks of i < n, float64."""
    _check_row(row)
    _check_row(other)

    def codegen(context, builder, sig, args):
        base = _pointer(context, builder, sig.args[0], args[0], args[2])
        other = _pointer(context, builder, sig.args[1], args[1], args[2])
        return _lane_sums(builder, base, other, _chunks(builder, args[3]), args[4])

    return types.float64(row, other, types.intp, types.intp, types.float32), codegen


@intrinsic
def exp32(typingctx, x, m):
    """exp32(x - m) as float64: one lane of `block_sum`'s arithmetic."""
    def codegen(context, builder, sig, args):
        return builder.fpext(_emit_exp(builder, builder.fsub(args[0], args[1])), _F64)

    return types.float64(types.float32, types.float32), codegen


@intrinsic
def bits_of(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def double_of(typingctx, k):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen
