"""Per-row pointwise kernels written with the array module ``xp`` (NumPy or CuPy).

The reference and CUDA backends use these as they are; the Numba backend replaces them with fused
parallel loops (one pass over memory instead of several array temporaries).
"""
from __future__ import annotations

import math

import numpy as np


def erf(x):
    """Error function of a NumPy or CuPy array."""
    if isinstance(x, np.ndarray):
        from scipy.special import erf as _erf
    else:  # a GPU array
        from cupyx.scipy.special import erf as _erf
    return _erf(x)


def gelu(xp, x):
    """Exact GELU ``x · Φ(x)`` (erf form, PyTorch's default)."""
    return x * (0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0)))))


def gelu_grad(xp, x, grad):
    """``grad · (Φ(x) + x · φ(x))``."""
    cdf = 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
    pdf = xp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
    return grad * (cdf + x * pdf)


def layer_norm(xp, x, weight, bias, eps):
    """Normalise each row over its channels; returns ``(y, xhat, rstd (N, 1))``."""
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=1, keepdims=True) + eps)
    xhat = xc * rstd
    y = xhat if weight is None else xhat * weight
    return (y if bias is None else y + bias), xhat, rstd


def layer_norm_grad(xp, grad, xhat, rstd, weight):
    """Backward of :func:`layer_norm` from its saved ``xhat``, ``rstd``: ``(gx, gw, gb)`` with
    ``gw = Σ_rows grad·xhat`` and ``gb = Σ_rows grad`` (``(C,)`` each, whether or not used)."""
    gxhat = grad if weight is None else grad * weight
    gx = rstd * (gxhat - gxhat.mean(axis=1, keepdims=True)
                 - xhat * (gxhat * xhat).mean(axis=1, keepdims=True))
    return gx, (grad * xhat).sum(axis=0), grad.sum(axis=0)


# --- GRN (ConvNeXt-V2 global response normalisation), per sample segment -------------------------
# ``seg_ptr`` (S+1,) int64 splits the N rows into S contiguous samples (seg_ptr[0] = 0, seg_ptr[-1] = N).
# Every backend shares the small (S, C) algebra below; only the passes over the N rows differ.

def grn_scale(xp, G, gamma, eps):
    """From the per-sample channel norms ``G (S, C)``: ``(m (S, 1), Nx (S, C), scale (S, C))`` with
    ``m = mean_c G + eps``, ``Nx = G / m`` and ``scale = γ·Nx + 1`` (so ``y = x·scale + β``)."""
    m = G.mean(axis=1, keepdims=True) + eps
    nx = G / m
    return m, nx, gamma * nx + 1.0


def grn_grad_coefs(xp, gx_sum, G, gamma, eps):
    """From ``gx_sum = Σ_rows grad·x (S, C)``: ``(d_gamma (C,), scale (S, C), coef (S, C))`` so that
    ``dx = grad·scale + x·coef`` row by row (``coef = (dL/dG) / G``, 0 where ``G = 0``)."""
    m, nx, scale = grn_scale(xp, G, gamma, eps)
    a = gamma * gx_sum  # dL/dNx
    dG = a / m - (a * G).sum(axis=1, keepdims=True) / (G.shape[1] * m * m)
    coef = xp.where(G > 0, dG / xp.where(G > 0, G, 1.0), 0.0).astype(G.dtype)
    return (gx_sum * nx).sum(axis=0), scale, coef


def segment_of_rows(xp, seg_ptr):
    """``(N,) int64`` sample of each row: the ``s`` with ``seg_ptr[s] <= row < seg_ptr[s + 1]``.
    (A search rather than ``repeat``: CuPy's ``repeat`` takes no array of counts.)"""
    seg_ptr = xp.asarray(seg_ptr)
    return xp.searchsorted(seg_ptr[1:], xp.arange(int(seg_ptr[-1])), side="right").astype(np.int64)


def _rows_of(xp, per_sample, seg_ptr):
    """``(S, C)`` per-sample values broadcast to the rows (no gather when there is one sample)."""
    if per_sample.shape[0] == 1:
        return per_sample[0]
    return per_sample[segment_of_rows(xp, seg_ptr)]


def grn(xp, segment_sum, x, gamma, beta, seg_ptr, eps):
    """``y = x·(γ·Nx + 1) + β`` with ``Gx = ‖x[rows of the sample, c]‖₂``; returns ``(y, G (S, C))``."""
    G = xp.sqrt(segment_sum(x * x, seg_ptr))
    _, _, scale = grn_scale(xp, G, gamma, eps)
    return x * _rows_of(xp, scale, seg_ptr) + beta, G


def grn_grad(xp, segment_sum, grad, x, gamma, G, seg_ptr, eps):
    """Backward of :func:`grn` from its saved ``G``: ``(dx (N, C), d_gamma (C,), d_beta (C,))``."""
    d_gamma, scale, coef = grn_grad_coefs(xp, segment_sum(grad * x, seg_ptr), G, gamma, eps)
    dx = grad * _rows_of(xp, scale, seg_ptr) + x * _rows_of(xp, coef, seg_ptr)
    return dx, d_gamma, grad.sum(axis=0)
