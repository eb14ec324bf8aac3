"""Dense per-voxel ops of the ConvNeXt-V2 block, forward and backward, in plain NumPy.

All act on channels-first volumes ``x (B, C, D, H, W)`` (any number of spatial axes works:
``(B, C, *spatial)``), float32 or float64, and return the input's dtype. Per-channel parameters
(gamma, beta, bias) are ``(C,)``. Every ``*_backward`` takes ``grad_out = dL/d(out)`` (same shape
as ``out``) and returns the gradients in the order of the forward's array arguments.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

__all__ = ["linear", "linear_backward", "layer_norm_channels", "layer_norm_channels_backward",
           "gelu", "gelu_backward", "grn", "grn_backward", "avg_pool_k2s2", "avg_pool_k2s2_backward"]


def _c(v, x):
    """Per-channel vector ``(C,)`` → shape ``(C, 1, .., 1)`` that broadcasts against ``x (B, C, ..)``."""
    return np.asarray(v).reshape((-1,) + (1,) * (x.ndim - 2))


def _not_channels(x):
    """All axes of ``(B, C, *spatial)`` except the channel axis."""
    return (0,) + tuple(range(2, x.ndim))


# ----------------------------------------------------------------------------- linear

def linear(x, w, b=None):
    """1×1×1 conv: ``out[b, o, p] = Σ_i x[b, i, p] w[i, o] + b[o]``.

    x (B, Cin, *spatial), w (Cin, Cout), b (Cout,) or None → (B, Cout, *spatial).
    """
    out = np.tensordot(np.moveaxis(x, 1, -1), w, axes=1)          # (B, *spatial, Cout)
    if b is not None:
        out += b
    return np.ascontiguousarray(np.moveaxis(out, -1, 1))


def linear_backward(grad_out, x, w):
    """→ ``(dx (B, Cin, ..), dw (Cin, Cout), db (Cout,))``."""
    axes = _not_channels(x)
    dx = np.moveaxis(np.tensordot(np.moveaxis(grad_out, 1, -1), w.T, axes=1), -1, 1)
    dw = np.tensordot(x, grad_out, axes=(axes, axes))             # (Cin, Cout)
    return np.ascontiguousarray(dx), dw, grad_out.sum(axis=axes)


# ----------------------------------------------------------------------------- layer norm

def layer_norm_channels(x, gamma, beta, eps=1e-6):
    """LayerNorm over the channels of each voxel (ConvNeXt's ``channels_first`` LayerNorm).

    ``out = gamma * (x - mean_c x) / sqrt(var_c x + eps) + beta`` with the biased variance.
    x (B, C, *spatial), gamma/beta (C,) → same shape as x.
    """
    xhat, _ = _normalise(x, eps)
    return _c(gamma, x) * xhat + _c(beta, x)


def _normalise(x, eps):
    mu = x.mean(axis=1, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    return (x - mu) * inv_std, inv_std


def layer_norm_channels_backward(grad_out, x, gamma, eps=1e-6):
    """→ ``(dx, dgamma (C,), dbeta (C,))``.

    With ``xhat`` the normalised input and ``gh = grad_out * gamma``:
    ``dx = (gh - mean_c gh - xhat * mean_c(gh * xhat)) / std``.
    """
    xhat, inv_std = _normalise(x, eps)
    gh = grad_out * _c(gamma, x)
    dx = (gh - gh.mean(axis=1, keepdims=True)
          - xhat * (gh * xhat).mean(axis=1, keepdims=True)) * inv_std
    axes = _not_channels(x)
    return dx, (grad_out * xhat).sum(axis=axes), grad_out.sum(axis=axes)


# ----------------------------------------------------------------------------- GELU

def gelu(x):
    """Exact GELU ``x · Φ(x) = 0.5 x (1 + erf(x / √2))`` (not the tanh approximation)."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def gelu_backward(grad_out, x):
    """→ ``dx = grad_out · (Φ(x) + x φ(x))``."""
    cdf = 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
    pdf = np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
    return grad_out * (cdf + x * pdf)


# ----------------------------------------------------------------------------- GRN

def grn(x, gamma, beta, mask=None, eps=1e-6):
    """ConvNeXt-V2 Global Response Normalisation.

    ``Gx[b, c] = ||x[b, c, p]||_2`` over the spatial positions p (only where ``mask`` is true),
    ``Nx = Gx / (mean_c Gx + eps)``, ``out = gamma * (x * Nx) + beta + x``.
    x (B, C, *spatial), gamma/beta (C,), mask (B, *spatial) bool or None → same shape as x.
    The formula is applied at every voxel; against a sparse tensor, compare at the masked voxels.
    """
    nx, _, _ = _grn_stats(x, mask, eps)
    return _c(gamma, x) * (x * nx) + _c(beta, x) + x


def _grn_stats(x, mask, eps):
    """→ ``(Nx, Gx, xm)`` with Nx/Gx shaped (B, C, 1, .., 1) and xm = x zeroed outside the mask."""
    xm = x if mask is None else x * mask[:, None]
    axes = tuple(range(2, x.ndim))
    gx = np.sqrt((xm * xm).sum(axis=axes, keepdims=True))
    return gx / (gx.mean(axis=1, keepdims=True) + eps), gx, xm


def grn_backward(grad_out, x, gamma, mask=None, eps=1e-6):
    """→ ``(dx, dgamma (C,), dbeta (C,))``.

    Chain: out → Nx (``dNx = gamma Σ_p g x``) → Gx (quotient rule through the channel mean)
    → x (``dGx/dx = xm / Gx``, taken as 0 where Gx = 0, as PyTorch's norm does).
    """
    nx, gx, xm = _grn_stats(x, mask, eps)
    axes = tuple(range(2, x.ndim))
    gam = _c(gamma, x)
    dn = gam * (grad_out * x).sum(axis=axes, keepdims=True)       # (B, C, 1..)
    den = gx.mean(axis=1, keepdims=True) + eps
    dg = dn / den - (dn * gx).mean(axis=1, keepdims=True) / den ** 2
    dgx = np.divide(dg, gx, out=np.zeros_like(gx), where=gx > 0)
    dx = grad_out * (gam * nx + 1.0) + dgx * xm
    sum_axes = _not_channels(x)
    return dx, (grad_out * x * nx).sum(axis=sum_axes), grad_out.sum(axis=sum_axes)


# ----------------------------------------------------------------------------- pooling

def avg_pool_k2s2(x):
    """2×2×2 average pooling, stride 2, like ``F.avg_pool3d(x, 2, 2, ceil_mode=True)``.

    x (B, C, D, H, W) → (B, C, ⌈D/2⌉, ⌈H/2⌉, ⌈W/2⌉) — the grid of a stride-2 sparse level. A
    window that sticks out past an odd edge averages only the voxels inside the volume.
    """
    return _sum_k2s2(x) / _count_k2s2(x.shape[2:], x.dtype)


def avg_pool_k2s2_backward(grad_out, x):
    """→ ``dx (B, C, D, H, W)``: each voxel gets its window's gradient / window size."""
    g = grad_out / _count_k2s2(x.shape[2:], grad_out.dtype)
    for axis in (2, 3, 4):
        g = np.repeat(g, 2, axis=axis)
    return np.ascontiguousarray(g[:, :, :x.shape[2], :x.shape[3], :x.shape[4]])


def _sum_k2s2(x):
    pad = [(0, 0), (0, 0)] + [(0, n % 2) for n in x.shape[2:]]
    xp = np.pad(x, pad)
    B, C, D, H, W = xp.shape
    return xp.reshape(B, C, D // 2, 2, H // 2, 2, W // 2, 2).sum(axis=(3, 5, 7))


def _count_k2s2(shape, dtype):
    """Number of in-volume voxels in each pooling window, shape (⌈D/2⌉, ⌈H/2⌉, ⌈W/2⌉)."""
    return _sum_k2s2(np.ones((1, 1) + tuple(shape), dtype))[0, 0]
