"""Tests of the dense twins (sparseconv.dense) against brute-force loops, scipy and finite differences."""
import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from sparseconv import dense as D

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------- brute-force oracles

def brute_conv3d(x, w, b, s, p, d):
    """Literal definition: output o exists while its window fits in the padded input."""
    (B, _, *n), (Cout, _, *k) = x.shape, w.shape
    out_shape = [0, 0, 0]
    for a in range(3):
        while out_shape[a] * s[a] + d[a] * (k[a] - 1) <= n[a] + 2 * p[a] - 1:
            out_shape[a] += 1
    out = np.zeros((B, Cout, *out_shape))
    for bi, o, kk in itertools.product(range(B), np.ndindex(*out_shape), np.ndindex(*k)):
        i = [o[a] * s[a] - p[a] + kk[a] * d[a] for a in range(3)]
        if all(0 <= i[a] < n[a] for a in range(3)):
            out[(bi, slice(None), *o)] += w[(..., *kk)] @ x[(bi, slice(None), *i)]
    return out if b is None else out + b[:, None, None, None]


def brute_conv_transpose3d(x, w, b, s, p, d, op):
    """Literal scatter: input voxel i, tap k → output i*s + k*d - p (PyTorch's size formula)."""
    (B, _, *n), (_, Cout, *k) = x.shape, w.shape
    out_shape = [(n[a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 for a in range(3)]
    out = np.zeros((B, Cout, *out_shape))
    for bi, i, kk in itertools.product(range(B), np.ndindex(*n), np.ndindex(*k)):
        o = [i[a] * s[a] + kk[a] * d[a] - p[a] for a in range(3)]
        if all(0 <= o[a] < out_shape[a] for a in range(3)):
            out[(bi, slice(None), *o)] += w[(..., *kk)].T @ x[(bi, slice(None), *i)]
    return out if b is None else out + b[:, None, None, None]


def t3(v):
    return (v,) * 3 if np.isscalar(v) else tuple(v)


def check_grads(forward, args, backward, n_dirs=2, eps=1e-6, rtol=1e-6):
    """Central finite differences of L = <forward(*args), R> along random directions, per argument.

    ``backward(R, *args)`` must return the analytical gradient of every entry of ``args``.
    """
    args = [np.asarray(a, np.float64) for a in args]
    R = rand(*forward(*args).shape)
    grads = backward(R, *args)
    assert len(grads) == len(args)
    for i, (a, g) in enumerate(zip(args, grads)):
        assert g.shape == a.shape, f"arg {i}: grad shape {g.shape} != {a.shape}"
        for _ in range(n_dirs):
            v = rand(*a.shape)
            plus = [*args[:i], a + eps * v, *args[i + 1:]]
            minus = [*args[:i], a - eps * v, *args[i + 1:]]
            num = (np.vdot(forward(*plus), R) - np.vdot(forward(*minus), R)) / (2 * eps)
            ana = np.vdot(g, v)
            assert abs(num - ana) <= rtol * (abs(num) + abs(ana)) + 1e-8, f"arg {i}: {num} vs {ana}"


# ----------------------------------------------------------------------------- conv3d

CONV_GRID = list(itertools.product([1, 2, 3], [1, 2], [0, 1, 2], [1, 2]))   # k, s, p, d


@pytest.mark.parametrize("k,s,p,d", CONV_GRID)
def test_conv3d_matches_brute_force(k, s, p, d):
    x, w, b = rand(2, 2, 5, 4, 6), rand(3, 2, k, k, k), rand(3)
    if min(5, 4, 6) + 2 * p < d * (k - 1) + 1:
        with pytest.raises(ValueError):
            D.conv3d(x, w, b, s, p, d)
        return
    out = D.conv3d(x, w, b, stride=s, padding=p, dilation=d)
    ref = brute_conv3d(x, w, b, t3(s), t3(p), t3(d))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,d", [((3, 2, 1), (1, 2, 1), (0, 1, 2), (2, 1, 1)),
                                     ((2, 3, 2), (2, 1, 3), (1, 0, 1), (1, 2, 2)),
                                     ((1, 1, 3), 3, (2, 0, 1), 1)])
def test_conv3d_anisotropic(k, s, p, d):
    x, w = rand(1, 3, 6, 7, 5), rand(2, 3, *k)
    np.testing.assert_allclose(D.conv3d(x, w, None, s, p, d),
                               brute_conv3d(x, w, None, t3(s), t3(p), t3(d)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,d", list(itertools.product([1, 2, 3, 4], [1, 2], [0, 1, 2], [1, 2])))
def test_conv3d_single_channel_vs_scipy_correlate(k, s, p, d):
    x, w = rand(8, 7, 9), rand(k, k, k)
    wd = np.zeros((d * (k - 1) + 1,) * 3)
    wd[::d, ::d, ::d] = w                                   # dilated kernel, holes = 0
    kd, xp = wd.shape[0], np.pad(x, p)
    full = ndimage.correlate(xp, wd, mode="constant", cval=0.0)
    c = kd // 2                                            # scipy centres a size-n kernel at n // 2
    ref = full[tuple(slice(c, c + m - kd + 1, s) for m in xp.shape)]
    out = D.conv3d(x[None, None], w[None, None], stride=s, padding=p, dilation=d)[0, 0]
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_conv3d_same_padding_is_scipy_correlate():
    x, w = rand(8, 5, 6), rand(3, 3, 3)
    np.testing.assert_allclose(D.conv3d(x[None, None], w[None, None], padding=1)[0, 0],
                               ndimage.correlate(x, w, mode="constant"), rtol=1e-10, atol=1e-12)


def test_conv3d_is_cross_correlation_not_convolution():
    x = np.zeros((1, 1, 3, 3, 3)); x[0, 0, 1, 1, 1] = 1.0
    w = np.arange(27.0).reshape(1, 1, 3, 3, 3)
    # an impulse at the centre sees the kernel flipped: out[z] = w[2 - z]
    np.testing.assert_array_equal(D.conv3d(x, w, padding=1)[0, 0], w[0, 0, ::-1, ::-1, ::-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_preserved(dtype):
    x, w, b = rand(1, 2, 4, 4, 4, dtype=dtype), rand(3, 2, 2, 2, 2, dtype=dtype), rand(3, dtype=dtype)
    out = D.conv3d(x, w, b, stride=2)
    assert out.dtype == dtype and out.flags.c_contiguous
    assert all(g.dtype == dtype for g in D.conv3d_backward(out, x, w, stride=2))
    y = D.conv_transpose3d(out, w, b[:2], stride=2)
    assert y.dtype == dtype and y.shape == x.shape
    assert all(g.dtype == dtype for g in D.conv_transpose3d_backward(y, out, w, stride=2))
    dw = rand(2, 3, 3, 3, dtype=dtype)
    assert D.depthwise_conv3d(x, dw, b[:2], padding=1).dtype == dtype
    assert all(g.dtype == dtype for g in D.depthwise_conv3d_backward(x, x, dw, padding=1))
    g2, c2 = rand(2, dtype=dtype), rand(2, dtype=dtype)
    assert D.linear(x, rand(2, 5, dtype=dtype), rand(5, dtype=dtype)).dtype == dtype
    assert D.layer_norm_channels(x, g2, c2).dtype == dtype
    assert D.gelu(x).dtype == dtype and D.gelu_backward(x, x).dtype == dtype
    assert D.grn(x, g2, c2, mask=x[:, 0] > 0).dtype == dtype
    assert all(g.dtype == dtype for g in D.grn_backward(x, x, g2, mask=x[:, 0] > 0))
    assert D.avg_pool_k2s2(x).dtype == dtype


def test_conv3d_float32_close_to_float64():
    x, w = rand(1, 4, 5, 5, 5), rand(3, 4, 3, 3, 3)
    out32 = D.conv3d(x.astype(np.float32), w.astype(np.float32), padding=1)
    np.testing.assert_allclose(out32, D.conv3d(x, w, padding=1), rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise():
    x = rand(1, 2, 4, 4, 4)
    with pytest.raises(ValueError):
        D.conv3d(x, rand(3, 5, 3, 3, 3))                    # Cin mismatch
    with pytest.raises(ValueError):
        D.conv3d(x, rand(3, 2, 5, 5, 5))                    # kernel larger than input
    with pytest.raises(ValueError):
        D.conv3d(x, rand(3, 2, 3, 3, 3), stride=0)
    with pytest.raises(ValueError):
        D.conv3d(x, rand(3, 2, 3, 3, 3), padding=(1, 1))
    with pytest.raises(ValueError):
        D.conv_transpose3d(x, rand(2, 3, 2, 2, 2), stride=2, output_padding=2)
    with pytest.raises(ValueError):
        D.depthwise_conv3d(x, rand(3, 3, 3, 3))


# ----------------------------------------------------------------------------- transposed conv

@pytest.mark.parametrize("k,s,p,d", list(itertools.product([1, 2, 3], [1, 2], [0, 1], [1, 2])))
def test_conv_transpose3d_matches_brute_force(k, s, p, d):
    x, w, b = rand(2, 3, 3, 4, 2), rand(3, 2, k, k, k), rand(2)
    for op in sorted({0, max(s, d) - 1}):
        full = [(n - 1) * s + d * (k - 1) + 1 + op for n in (3, 4, 2)]
        if min(full) - 2 * p < 1:
            with pytest.raises(ValueError):
                D.conv_transpose3d(x, w, b, s, p, d, op)
            continue
        out = D.conv_transpose3d(x, w, b, stride=s, padding=p, dilation=d, output_padding=op)
        ref = brute_conv_transpose3d(x, w, b, t3(s), t3(p), t3(d), t3(op))
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_conv_transpose3d_anisotropic():
    x, w = rand(1, 2, 3, 2, 4), rand(2, 3, 2, 3, 1)
    s, p, d, op = (2, 1, 3), (0, 1, 0), (1, 2, 1), (1, 0, 2)
    np.testing.assert_allclose(D.conv_transpose3d(x, w, None, s, p, d, op),
                               brute_conv_transpose3d(x, w, None, s, p, d, op), rtol=1e-12, atol=1e-12)


def test_conv_transpose3d_k2s2_upsamples_each_voxel_to_a_block():
    """The U-Net upsampler: each coarse voxel writes w[:, :, k] into child 2z + k."""
    x, w = rand(1, 2, 2, 3, 2), rand(2, 4, 2, 2, 2)
    out = D.conv_transpose3d(x, w, stride=2)
    assert out.shape == (1, 4, 4, 6, 4)
    for z, y, xx, kz, ky, kx in itertools.product(range(2), range(3), range(2), *[range(2)] * 3):
        np.testing.assert_allclose(out[0, :, 2 * z + kz, 2 * y + ky, 2 * xx + kx],
                                   x[0, :, z, y, xx] @ w[:, :, kz, ky, kx], rtol=1e-12)


@pytest.mark.parametrize("k,s,p,d", [(1, 1, 0, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 2, 1, 1),
                                     (3, 2, 2, 2), (2, 1, 1, 2), (3, (1, 2, 2), (0, 1, 2), (2, 1, 1))])
def test_transpose_is_adjoint_of_conv3d(k, s, p, d):
    x, w = rand(2, 3, 6, 5, 7), rand(4, 3, k, k, k)
    y = rand(*D.conv3d(x, w, stride=s, padding=p, dilation=d).shape)
    # the output padding that brings conv_transpose3d back to x's size
    op = tuple(n - ((m - 1) * si - 2 * pi + di * (k - 1) + 1)
               for n, m, si, pi, di in zip(x.shape[2:], y.shape[2:], t3(s), t3(p), t3(d)))
    xt = D.conv_transpose3d(y, w, stride=s, padding=p, dilation=d, output_padding=op)
    assert xt.shape == x.shape
    lhs = np.vdot(D.conv3d(x, w, stride=s, padding=p, dilation=d), y)
    np.testing.assert_allclose(lhs, np.vdot(x, xt), rtol=1e-10)
    # and conv3d's input gradient is exactly this transposed conv
    np.testing.assert_allclose(D.conv3d_backward(y, x, w, s, p, d)[0], xt, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- backward passes

@pytest.mark.parametrize("k,s,p,d", [(1, 1, 0, 1), (3, 1, 1, 1), (2, 2, 0, 1), (1, 2, 0, 1),
                                     (3, 2, 2, 2), (2, 1, 1, 2), ((3, 2, 1), (1, 2, 2), (1, 0, 2), (1, 2, 1))])
def test_conv3d_backward_finite_differences(k, s, p, d):
    x, w, b = rand(2, 2, 5, 4, 5), rand(3, 2, *t3(k)), rand(3)
    check_grads(lambda x, w, b: D.conv3d(x, w, b, s, p, d), [x, w, b],
                lambda g, x, w, b: D.conv3d_backward(g, x, w, s, p, d))


@pytest.mark.parametrize("k,s,p,d,op", [(1, 1, 0, 1, 0), (3, 1, 1, 1, 0), (2, 2, 0, 1, 0),
                                        (3, 2, 1, 1, 1), (3, 2, 2, 2, 1), (2, 1, 0, 2, 1),
                                        ((2, 3, 1), (2, 1, 2), (0, 1, 0), (1, 1, 2), (1, 0, 1))])
def test_conv_transpose3d_backward_finite_differences(k, s, p, d, op):
    x, w, b = rand(2, 3, 3, 4, 3), rand(3, 2, *t3(k)), rand(2)
    check_grads(lambda x, w, b: D.conv_transpose3d(x, w, b, s, p, d, op), [x, w, b],
                lambda g, x, w, b: D.conv_transpose3d_backward(g, x, w, s, p, d))


@pytest.mark.parametrize("k,p,d", [(1, 0, 1), (3, 1, 1), (3, 0, 1), (2, 1, 2), (3, 2, 2), ((3, 1, 2), (1, 0, 1), 1)])
def test_depthwise_backward_finite_differences(k, p, d):
    x, w, b = rand(2, 3, 5, 4, 5), rand(3, *t3(k)), rand(3)
    check_grads(lambda x, w, b: D.depthwise_conv3d(x, w, b, p, d), [x, w, b],
                lambda g, x, w, b: D.depthwise_conv3d_backward(g, x, w, p, d))


# ----------------------------------------------------------------------------- depthwise

def block_diagonal(w):
    """Depthwise weight (C, k..) → the equivalent full conv3d weight (C, C, k..)."""
    full = np.zeros((w.shape[0],) + w.shape)
    full[np.arange(w.shape[0]), np.arange(w.shape[0])] = w
    return full


@pytest.mark.parametrize("k,p,d", list(itertools.product([1, 2, 3], [0, 1, 2], [1, 2])))
def test_depthwise_equals_block_diagonal_conv3d(k, p, d):
    x, w, b = rand(2, 4, 5, 6, 5), rand(4, k, k, k), rand(4)
    wf = block_diagonal(w)
    out = D.depthwise_conv3d(x, w, b, padding=p, dilation=d)
    np.testing.assert_allclose(out, D.conv3d(x, wf, b, padding=p, dilation=d), rtol=1e-12, atol=1e-12)
    g = rand(*out.shape)
    dx, dw, db = D.depthwise_conv3d_backward(g, x, w, p, d)
    fx, fw, fb = D.conv3d_backward(g, x, wf, 1, p, d)
    np.testing.assert_allclose(dx, fx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, fw[np.arange(4), np.arange(4)], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, fb, rtol=1e-12)


# ----------------------------------------------------------------------------- pointwise ops

def test_linear_matches_einsum_and_grads():
    x, w, b = rand(2, 3, 4, 3, 2), rand(3, 5), rand(5)
    np.testing.assert_allclose(D.linear(x, w, b),
                               np.einsum("bizyx,io->bozyx", x, w) + b[:, None, None, None], rtol=1e-12)
    check_grads(D.linear, [x, w, b], lambda g, x, w, b: D.linear_backward(g, x, w))


def test_layer_norm_channels_per_voxel():
    x, g, b = rand(2, 5, 3, 4, 2) * 3 + 1, rand(5), rand(5)
    out = D.layer_norm_channels(x, g, b, eps=1e-6)
    for bi, z, y, xx in np.ndindex(2, 3, 4, 2):
        v = x[bi, :, z, y, xx]
        ref = g * (v - v.mean()) / math.sqrt(v.var() + 1e-6) + b
        np.testing.assert_allclose(out[bi, :, z, y, xx], ref, rtol=1e-10)
    unit = D.layer_norm_channels(x, np.ones(5), np.zeros(5))
    np.testing.assert_allclose(unit.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(unit.var(axis=1), 1, rtol=1e-5)


def test_layer_norm_channels_backward_finite_differences():
    x, g, b = rand(2, 4, 3, 2, 3), rand(4), rand(4)
    check_grads(D.layer_norm_channels, [x, g, b],
                lambda go, x, g, b: D.layer_norm_channels_backward(go, x, g))


def test_gelu_exact_erf_and_grad():
    x = rand(2, 3, 4, 1, 5) * 3
    ref = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x)
    np.testing.assert_allclose(D.gelu(x), ref, rtol=1e-14, atol=1e-15)
    assert abs(D.gelu(np.array(1.0)) - 0.8413447460685429) < 1e-12   # not the tanh approximation
    check_grads(lambda x: D.gelu(x), [x], lambda g, x: (D.gelu_backward(g, x),))


def grn_convnext_v2(x, gamma, beta):
    """The ConvNeXt-V2 reference code (channels-last), translated to NumPy."""
    X = np.moveaxis(x, 1, -1)                                       # (B, D, H, W, C)
    Gx = np.sqrt((X ** 2).sum(axis=(1, 2, 3), keepdims=True))
    Nx = Gx / (Gx.mean(axis=-1, keepdims=True) + 1e-6)
    return np.moveaxis(gamma * (X * Nx) + beta + X, -1, 1)


def test_grn_matches_convnext_v2_reference():
    x, g, b = rand(2, 4, 3, 5, 2), rand(4), rand(4)
    np.testing.assert_allclose(D.grn(x, g, b), grn_convnext_v2(x, g, b), rtol=1e-12)
    np.testing.assert_allclose(D.grn(x, np.zeros(4), np.zeros(4)), x)    # γ = β = 0 (init): identity


def test_grn_mask_uses_only_active_voxels():
    x, g, b = rand(2, 4, 3, 5, 2), rand(4), rand(4)
    mask = RNG.random((2, 3, 5, 2)) < 0.4
    out = D.grn(x, g, b, mask=mask)
    # statistics come from the masked voxels only: garbage elsewhere must not matter ...
    x2 = np.where(mask[:, None], x, 100 * rand(*x.shape))
    np.testing.assert_allclose(D.grn(x2, g, b, mask=mask)[np.broadcast_to(mask[:, None], x.shape)],
                               out[np.broadcast_to(mask[:, None], x.shape)], rtol=1e-12)
    # ... and equal the unmasked GRN of the zero-filled volume there
    m = np.broadcast_to(mask[:, None], x.shape)
    np.testing.assert_allclose(out[m], D.grn(x * mask[:, None], g, b)[m], rtol=1e-12)
    assert not np.allclose(out[m], D.grn(x, g, b)[m])


@pytest.mark.parametrize("masked", [False, True])
def test_grn_backward_finite_differences(masked):
    x, g, b = rand(2, 4, 3, 2, 3), rand(4), rand(4)
    mask = (RNG.random((2, 3, 2, 3)) < 0.5) if masked else None
    check_grads(lambda x, g, b: D.grn(x, g, b, mask), [x, g, b],
                lambda go, x, g, b: D.grn_backward(go, x, g, mask))


@pytest.mark.parametrize("shape", [(4, 6, 2), (5, 3, 4), (1, 1, 3)])
def test_avg_pool_k2s2(shape):
    x = rand(2, 3, *shape)
    out = D.avg_pool_k2s2(x)
    assert out.shape == (2, 3) + tuple(-(-n // 2) for n in shape)
    for z, y, xx in np.ndindex(*out.shape[2:]):
        win = x[:, :, 2 * z:2 * z + 2, 2 * y:2 * y + 2, 2 * xx:2 * xx + 2]
        np.testing.assert_allclose(out[:, :, z, y, xx], win.mean(axis=(2, 3, 4)), rtol=1e-12)
    check_grads(lambda x: D.avg_pool_k2s2(x), [x], lambda g, x: (D.avg_pool_k2s2_backward(g, x),))
