"""``expf``: the float32 exponential in code the compiler can vectorise, bit for bit the C library's.

Numba compiles ``math.exp`` of a float32 into a call of the C library's ``expf``, one element at a
time: a loop around it cannot be vectorised, and in the GELU gradient (``φ(v) = exp(-v²/2)/√2π``)
that call was most of the kernel's time. :func:`expf` computes the same function with the algorithm
of glibc's ``expf`` (``sysdeps/ieee754/flt-32/e_expf.c``, from Arm's optimized-routines), in double
precision, with no call and no branch on the data:

    x·32/ln2 = k + r,  |r| ≤ 1/2,  k an integer (rounded by adding 1.5·2⁵² and reading its low bits)
    exp(x) = 2^(k/32) · 2^(r/32) ≈ s · (C0·r³ + C1·r² + C2·r + 1),  s = 2^(k/32) from a 32-entry table

The double-precision result is rounded to float32 once, so the only way to differ from the library
is a different double on the way; matching it needs ``x·32/ln2`` fused into the additions that
follow (an FMA, as glibc's FMA build of the function has it): :func:`expf` does that (``_fma``;
with a separate product a few values differ). Over every float32 in ``[LO, HI] = [log 2⁻¹⁵⁰,
log 2¹²⁸]`` it gives the C library's bits on glibc 2.36 (``tests/test_numba_math.py``: a sample
over every exponent always; all of them, about 2.2·10⁹ values, with ``SPARSECONV_SLOW=1``). Below
that range the result is 0, above it inf, and NaN stays NaN, as in the library. Elsewhere (another
C library) the two may differ in the last bit; :func:`expf` stays within one unit in the last place
of the exact value, and is the same on every machine.

Nothing here is compiled on its own: the kernels of ``numba_cpu`` inline these functions, and
Numba's on-disk cache checks only the file of the cached kernel. After an edit here, remove the
cached kernels (``__pycache__/numba_cpu*.nbi`` / ``.nbc``) or the old code keeps running.
"""
from __future__ import annotations

from decimal import Decimal, getcontext

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

TABLE_BITS = 5
N = 1 << TABLE_BITS


def _table():
    """``(32,) uint64``: the bits of 2^(i/32), rounded to double, less ``i << 47`` — so that adding
    ``k << 47`` (k = 32·e + i) puts the exponent e into the double's exponent field."""
    getcontext().prec = 50
    ln2 = Decimal(2).ln()
    bits = [np.float64(float((Decimal(i) / N * ln2).exp())).view(np.uint64) for i in range(N)]
    return np.array([int(b) - (i << (52 - TABLE_BITS)) for i, b in enumerate(bits)], dtype=np.uint64)


TABLE = _table()
INV_LN2_N = float.fromhex("0x1.71547652b82fep+0") * N  # 32/ln 2
SHIFT = float.fromhex("0x1.8p+52")  # adding it rounds to an integer held in the low mantissa bits
C0 = float.fromhex("0x1.c6af84b912394p-5") / N ** 3  # 2^(r/32) - 1 ≈ C0·r³ + C1·r² + C2·r
C1 = float.fromhex("0x1.ebfce50fac4f3p-3") / N ** 2
C2 = float.fromhex("0x1.62e42ff0c52d6p-1") / N
LO = np.float32(float.fromhex("-0x1.9fe368p6"))  # below: exp(x) rounds to 0 in float32
HI = np.float32(float.fromhex("0x1.62e42ep6"))  # above: exp(x) overflows float32


@intrinsic
def _fma(typingctx, a, b, c):
    """``a·b + c`` with one rounding (LLVM's ``llvm.fma.f64``), float64."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d])), args)
    return sig, codegen


@intrinsic
def _bits(typingctx, a):
    """The bits of a float64 as a uint64."""
    return types.uint64(types.float64), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64))


@intrinsic
def _double(typingctx, a):
    """A uint64's bits as a float64."""
    return types.float64(types.uint64), lambda context, builder, sig, args: builder.bitcast(args[0], ir.DoubleType())


@nb.njit(inline="always")
def expf_reduce(x):
    """The vectorisable part of ``exp(x)``, ``x`` float32: ``(k, y)``, ``k`` (uint64) the bits that
    hold 32·x/ln2 rounded to an integer, ``y`` (float64) the polynomial of the remainder — or, for
    ``x`` outside ``[LO, HI]``, ``y`` = 0 (below), inf (above) or NaN, which :func:`expf_scale` keeps.
    Inlined: call it from kernels compiled without ``fastmath``, so that the polynomial keeps its
    separate roundings."""
    xd = np.float64(x)
    xd = xd if xd > LO else np.float64(LO)  # a NaN x: the select below makes y NaN, whatever xd is
    xd = xd if xd < HI else np.float64(HI)
    kd = _fma(INV_LN2_N, xd, SHIFT)  # k + 1.5·2⁵², rounded to an integer
    ki = _bits(kd)
    kd -= SHIFT
    r = _fma(INV_LN2_N, xd, -kd)  # x·32/ln2 - k, |r| ≤ 1/2
    z = C0 * r + C1
    y = C2 * r + 1.0
    y = z * (r * r) + y
    y = y if x >= LO else 0.0  # one simple choice per line: each becomes a vector select
    y = y if x <= HI else np.inf
    y = y if x == x else np.float64(x)  # NaN
    return ki, y


@nb.njit(inline="always")
def expf_scale(k, y):
    """``exp(x)`` as float32 from :func:`expf_reduce`'s ``(k, y)``: ``y · 2^(k/32)``, the power read
    from :data:`TABLE` — a lookup by a computed index, which keeps a loop around it from being
    vectorised (AVX2 has gathers, but LLVM's cost model did not use them on the AMD Zen 3 this was
    written on)."""
    return np.float32(y * _double(TABLE[k % np.uint64(N)] + (k << np.uint64(52 - TABLE_BITS))))


@nb.njit(inline="always")
def expf(x):
    """``exp(x)`` of a float32, as float32: :func:`expf_scale` of :func:`expf_reduce`. Where a loop
    applies it to many values, run the two in separate loops (``numba_cpu._gelu_grad_f32``): the
    first then vectorises."""
    k, y = expf_reduce(x)
    return expf_scale(k, y)
