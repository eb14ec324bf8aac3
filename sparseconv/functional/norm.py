"""Normalisations: LayerNorm over channels (per voxel), BatchNorm over active sites, and GRN.

GRN (ConvNeXt-V2's global response normalisation) pools over *all active voxels of each sample*:
rows are in canonical order (batch first), so each sample is one contiguous segment of rows and the
per-sample sums and the passes over the rows are the backend's ``grn`` / ``grn_grad`` kernels.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backends import get_backend
from ..tensor import SparseTensor
from ._util import batch_ptr, split, wrap


class LayerNormFn(Function):
    """``(x - mean_c x) / sqrt(var_c x + eps) · weight + bias`` for every row independently."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-6):
        y, xhat, rstd = get_backend().layer_norm(x, weight, bias, eps)
        ctx.save(xhat, rstd, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved
        gx, gw, gb = get_backend().layer_norm_grad(grad, xhat, rstd, weight)
        return gx, (gw if weight is not None else None), (gb if ctx.has_bias else None)


class BatchNormFn(Function):
    """Per-channel normalisation over all rows (active sites of the whole batch).

    Training: batch statistics (biased variance), and ``running_mean``/``running_var`` (unbiased)
    are updated in place with ``momentum``. Evaluation: the running statistics.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5):
        xp = get_backend().xp
        n = x.shape[0]
        if training:
            if n == 1:
                raise ValueError("batch_norm: training needs more than 1 active site per channel, got 1")
            if n == 0:
                mean = xp.zeros(x.shape[1], x.dtype)
                var = xp.ones(x.shape[1], x.dtype)
            else:
                mean = x.mean(axis=0)
                var = ((x - mean) ** 2).mean(axis=0)
                if running_mean is not None:
                    running_mean *= 1.0 - momentum
                    running_mean += momentum * mean.astype(running_mean.dtype)
                    running_var *= 1.0 - momentum
                    running_var += momentum * (var * (n / (n - 1))).astype(running_var.dtype)
        else:
            mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        rstd = 1.0 / xp.sqrt(var + eps)
        xhat = (x - mean) * rstd
        ctx.save(xhat, rstd, weight)
        ctx.training, ctx.has_bias = training, bias is not None
        y = xhat if weight is None else xhat * weight
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved
        gxhat = grad if weight is None else grad * weight
        if ctx.training and len(grad):
            gx = rstd * (gxhat - gxhat.mean(axis=0) - xhat * (gxhat * xhat).mean(axis=0))
        else:  # fixed statistics: an affine map
            gx = gxhat * rstd
        gw = (grad * xhat).sum(axis=0) if weight is not None else None
        gb = grad.sum(axis=0) if ctx.has_bias else None
        return gx, gw, gb


class GRNFn(Function):
    """``y = γ · (x · Nx) + β + x`` with ``Gx[s, c] = ‖x[rows of sample s, c]‖₂`` and
    ``Nx = Gx / (mean_c Gx + eps)`` (ConvNeXt-V2), per sample segment ``seg_ptr``.
    The backend's ``grn`` / ``grn_grad`` kernels do the passes over the rows
    (``backends/pointwise.py`` spells them out in array code)."""

    @staticmethod
    def forward(ctx, x, gamma, beta, seg_ptr=None, eps=1e-6):
        be = get_backend()
        if seg_ptr is None:  # one sample
            seg_ptr = be.xp.asarray([0, len(x)], dtype=np.int64)
        y, G = be.grn(x, gamma, beta, seg_ptr, eps)
        ctx.save(x, gamma, G)
        ctx.seg_ptr, ctx.eps = seg_ptr, eps
        return y

    @staticmethod
    def backward(ctx, grad):
        x, gamma, G = ctx.saved
        return get_backend().grn_grad(grad, x, gamma, G, ctx.seg_ptr, ctx.eps)


def layer_norm(x, weight=None, bias=None, eps=1e-6):
    """LayerNorm over the channels of every voxel (ConvNeXt's "channels_last" LN)."""
    s, f = split(x)
    return wrap(s, LayerNormFn.apply(f, weight, bias, eps=eps))


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5):
    """BatchNorm over all active sites of the batch (per channel)."""
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
    s, f = split(x)
    return wrap(s, BatchNormFn.apply(f, weight, bias, running_mean=running_mean,
                                       running_var=running_var, training=training, momentum=momentum, eps=eps))


def grn(x: SparseTensor, gamma, beta, eps=1e-6):
    """Global response normalisation over each sample's active voxels (``gamma``, ``beta``: ``(C,)``)."""
    if not isinstance(x, SparseTensor):
        raise TypeError("grn needs a SparseTensor (it pools over each sample's active voxels)")
    return x.replace_feats(GRNFn.apply(x.feats_tensor, gamma, beta, seg_ptr=batch_ptr(x), eps=eps))
