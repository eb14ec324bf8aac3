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
