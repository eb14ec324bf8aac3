"""``numba_math.expf`` (the C library's float32 exp, vectorisable) and the GELU gradient built on it."""
import math
import platform

import numba as nb
import numpy as np
import pytest

from sparseconv.backends import numba_cpu, numba_math
from sparseconv.testing.threads import control_for

GLIBC = platform.libc_ver()[0] == "glibc"


@nb.njit(parallel=True)
def _libm_exp(x, out):
    """The C library's ``expf`` (what Numba compiles ``math.exp`` of a float32 to)."""
    for i in nb.prange(x.size):
        out[i] = math.exp(x[i])
    return out


@nb.njit(parallel=True)
def _expf(x, out):
    for i in nb.prange(x.size):
        out[i] = numba_math.expf(x[i])
    return out


def _edges():
    f = np.float32
    near = [v for b in (numba_math.LO, numba_math.HI, f(-87.3), f(0.0))
            for v in (np.nextafter(b, f(-np.inf)), b, np.nextafter(b, f(np.inf)))]
    return np.array(near + [-0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e30, -1e30, 88.0, -104.0], f)


def _sample(step):
    """Every ``step``-th float32 bit pattern (NaN included), and the edge values."""
    bits = np.arange(0, 1 << 32, step, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bits.view(np.float32), _edges()])


def test_expf_is_within_one_ulp_of_exp_everywhere():
    """Against float64 ``exp`` rounded to float32: at most one unit in the last place, 0 below
    log 2⁻¹⁵⁰, inf above log 2¹²⁸, NaN for NaN."""
    x = _sample(4099)
    got = _expf(x, np.empty_like(x))
    with np.errstate(over="ignore", invalid="ignore"):  # exp of inf and NaN
        want = np.exp(x.astype(np.float64)).astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(x))
    ok = ~np.isnan(x)
    ulps = np.abs(got[ok].view(np.int32).astype(np.int64) - want[ok].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, x[ok][ulps.argmax()]
    assert np.all(got[x < numba_math.LO] == 0) and np.all(got[x > numba_math.HI] == np.inf)


@pytest.mark.skipif(not GLIBC, reason="compares with glibc's expf")
def test_expf_gives_the_c_librarys_bits():
    """A sample of 2²³ float32 values spread over every exponent (and the edges): the same bits as
    the C library's ``expf``, NaN for NaN."""
    x = _sample(511)
    got, want = _expf(x, np.empty_like(x)), _libm_exp(x, np.empty_like(x))
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(got), nan)
    bad = np.flatnonzero(got[~nan].view(np.uint32) != want[~nan].view(np.uint32))
    assert not len(bad), (x[~nan][bad[:5]], got[~nan][bad[:5]], want[~nan][bad[:5]])


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="compares with glibc's expf")
def test_expf_gives_the_c_librarys_bits_for_every_float32():
    """Every float32 in [LO, HI] (about 2.2·10⁹ values; half a minute on 2 cores): the C library's bits."""
    lo, hi = (int(np.float32(v).view(np.uint32)) for v in (numba_math.LO, numba_math.HI))
    ranges = [(0, hi + 1), (1 << 31, lo + 1)]  # [+0, HI] and [-0, LO] by bit pattern
    for start, stop in ranges:
        for a in range(start, stop, 1 << 26):
            x = np.arange(a, min(a + (1 << 26), stop), dtype=np.uint32).view(np.float32)
            got, want = _expf(x, np.empty_like(x)), _libm_exp(x, np.empty_like(x))
            bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
            assert not len(bad), (x[bad[:5]], got[bad[:5]], want[bad[:5]])


@nb.njit(parallel=True)
def _gelu_grad_libm(x, grad, out):
    """The GELU gradient as the backend computed it with the C library's expf."""
    m_half, k = np.float32(-0.5), np.float32(numba_cpu.INV_SQRT_2PI)
    for i in nb.prange(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[i, c]
            out[i, c] = grad[i, c] * (numba_cpu._normal_cdf(v) + v * (math.exp(m_half * v * v) * k))
    return out


@pytest.mark.skipif(not GLIBC, reason="compares with glibc's expf")
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (127, 1), (129, 3), (1000, 32)])
def test_gelu_grad_keeps_the_bits_it_had_with_the_c_librarys_expf(shape):
    """The vectorised float32 kernel (blocks of ``EXP_BLOCK`` values, a partial last one) gives the
    bits of the loop around ``math.exp``, on 1 and 2 threads, edge values included."""
    rng = np.random.default_rng(shape[0])
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    edges = _edges()[: flat.size]
    flat[: edges.size] = edges
    want = _gelu_grad_libm(x, g, np.empty_like(x))
    control = control_for(numba_cpu.backend)
    for threads in (1, 2):
        with control.threads(threads):
            got = numba_cpu.backend.gelu_grad(x, g)
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(got), nan), threads
        assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32)), threads
