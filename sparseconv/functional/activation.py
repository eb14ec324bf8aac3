"""Pointwise activations (GELU, ReLU, LeakyReLU, Sigmoid), pointwise Linear, and dropout.

Each takes a SparseTensor (result on the same sites), an autograd Tensor, or a raw array.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Function, Mul, data_of
from ..backends import get_backend
from ..kmap import KernelMap
from ._util import column_sum, forward_plus_bias, split, wrap


class GELUFn(Function):
    """Exact GELU ``x · Φ(x)``, Φ the standard normal CDF (erf form, as in PyTorch's default)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return get_backend().gelu(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return get_backend().gelu_grad(x, grad)


class ReLUFn(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save(x > 0)
        return x * ctx.saved[0]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0]


class LeakyReLUFn(Function):
    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        xp = get_backend().xp
        slope = xp.where(x > 0, 1.0, negative_slope).astype(x.dtype)
        ctx.save(slope)
        return x * slope

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0]


class SigmoidFn(Function):
    @staticmethod
    def forward(ctx, x):
        y = sigmoid_array(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y * (1.0 - y)


def sigmoid_array(x):
    """Numerically safe logistic function of a raw array (no overflow warnings).

    ``x`` may live on the host or on the backend's device; the result lives where ``x`` does (a
    NumPy array gets NumPy's functions even while the CuPy backend is selected)."""
    xp = np if isinstance(x, np.ndarray) else get_backend().xp
    e = xp.exp(-xp.abs(x))
    # 1 / (1 + e) for x >= 0, e / (1 + e) below: one division of the chosen numerator (the same
    # values as dividing both and choosing, one pass fewer)
    return (xp.where(x >= 0, x.dtype.type(1), e) / (1.0 + e)).astype(x.dtype, copy=False)


def pointwise_map(n: int) -> KernelMap:
    """The map of a 1×1×1 convolution on ``n`` rows: one offset, each row its own neighbour."""
    xp = get_backend().xp
    return KernelMap(xp.arange(n, dtype=np.int32)[:, None], n, np.zeros((1, 3), np.int32), "pointwise",
                     mirror_symmetric=True)


class LinearFn(Function):
    """``y = x @ Wᵀ + b`` with PyTorch's layout: ``weight (out_features, in_features)``.

    A Linear is a 1×1×1 convolution, and it runs on the backend's convolution kernels with the
    one-offset identity map (:func:`pointwise_map`) rather than on the BLAS behind ``@``: a BLAS
    splits its work by its own thread count, so its bits would change with ``OPENBLAS_NUM_THREADS``
    or the machine's core count, while the backend's kernels give the same bits for any thread count
    and thread like every other layer.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        kmap = pointwise_map(x.shape[0])
        ctx.save(x, weight)
        ctx.kmap, ctx.has_bias = kmap, bias is not None
        return forward_plus_bias("conv_forward", x, weight.T[None], kmap, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        b = get_backend()
        gx = b.conv_forward(grad, weight[None], ctx.kmap) if ctx.needs_input_grad[0] else None
        gw = b.xp.ascontiguousarray(b.conv_weight_grad(x, grad, ctx.kmap)[0].T)
        gb = column_sum(grad) if ctx.has_bias else None
        return gx, gw, gb


def gelu(x):
    s, f = split(x)
    return wrap(s, GELUFn.apply(f))


def relu(x):
    s, f = split(x)
    return wrap(s, ReLUFn.apply(f))


def leaky_relu(x, negative_slope=0.01):
    s, f = split(x)
    return wrap(s, LeakyReLUFn.apply(f, negative_slope=negative_slope))


def sigmoid(x):
    s, f = split(x)
    return wrap(s, SigmoidFn.apply(f))


def linear(x, weight, bias=None):
    """Pointwise linear layer on every voxel's features (a 1×1×1 convolution)."""
    s, f = split(x)
    return wrap(s, LinearFn.apply(f, weight, bias))


def dropout(x, p=0.5, training=True, rng=None):
    """Zero each feature with probability ``p`` and scale the rest by ``1/(1-p)`` (training only)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    s, f = split(x)
    rng = np.random.default_rng() if rng is None else rng
    data = data_of(f)
    keep = (rng.random(data.shape) >= p).astype(data.dtype) * (1.0 / (1.0 - p))
    return wrap(s, Mul.apply(f, get_backend().xp.asarray(keep)))
