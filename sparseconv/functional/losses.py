"""Losses on per-voxel logits: soft Dice (sigmoid, per channel), BCE-with-logits (all rows, or the
hardest k of them), cross-entropy.

Each takes logits as a SparseTensor (or a Tensor / array of shape ``(N, C)``) and targets row-aligned
with them (a SparseTensor on the same sites, or an array), and returns a one-element Tensor.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, data_of
from ..backends import get_backend
from ..tensor import SparseTensor
from ._util import batch_ptr, segment_ids
from .activation import sigmoid_array


def _logits_and_target(logits, target, op):
    sparse = logits if isinstance(logits, SparseTensor) else None
    f = logits.feats_tensor if sparse is not None else logits
    if isinstance(target, SparseTensor):
        if sparse is not None and not sparse.same_sites(target):
            raise ValueError(f"{op}: logits and target must be on identical sites")
        target = target.feats
    xp = get_backend().xp
    target = xp.asarray(data_of(target))
    return sparse, f, target


class SoftDiceFn(Function):
    """``Σ_c mean_s (1 − (2 Σ p·t + smooth) / (Σ p + Σ t + smooth))``, ``p = sigmoid(logits)``,
    sums over the rows of each segment ``s`` (a sample, or the whole batch)."""

    @staticmethod
    def forward(ctx, logits, target, seg_ptr=None, smooth=1e-5):
        be = get_backend()
        xp = be.xp
        if seg_ptr is None:
            seg_ptr = xp.asarray([0, len(logits)], dtype=np.int64)
        target = target.astype(logits.dtype)
        p = sigmoid_array(logits)
        inter = be.segment_sum(p * target, seg_ptr)  # (S, C)
        denom = be.segment_sum(p + target, seg_ptr) + smooth
        dice = (2.0 * inter + smooth) / denom
        S = dice.shape[0]
        ctx.save(p, target, dice, denom)
        # Each row's segment values: one segment broadcasts (the same numbers as a gather of all N
        # rows, without the (N,) index and two (N, C) copies); several are gathered.
        ctx.seg, ctx.S = (slice(None) if S == 1 else segment_ids(seg_ptr)), S
        return (1.0 - dice).sum() / S

    @staticmethod
    def backward(ctx, grad):
        p, target, dice, denom = ctx.saved
        seg = ctx.seg
        d_p = -(2.0 * target - dice[seg]) / (ctx.S * denom[seg])
        return grad * d_p * p * (1.0 - p), None


def soft_dice_loss(logits, target, smooth=1e-5, batch_dice=False):
    """Soft Dice per channel (sigmoid outputs), summed over channels, averaged over samples.

    ``target``: soft or hard labels in [0, 1], ``(N, C)`` row-aligned with ``logits``. With
    ``batch_dice=True`` (or non-sparse logits) the sums run over the whole batch at once.
    """
    sparse, f, target = _logits_and_target(logits, target, "soft_dice_loss")
    seg_ptr = batch_ptr(sparse) if sparse is not None and not batch_dice else None
    return SoftDiceFn.apply(f, target, seg_ptr=seg_ptr, smooth=smooth)


def _neg_log_sigmoid(xp, z):
    """``-log σ(z)`` in the stable form ``log(1 + exp(-|z|)) + max(-z, 0)``."""
    return xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(-z, 0)


def _bce_elements(xp, logits, target):
    """Elementwise BCE of ``sigmoid(logits)`` against ``target``: ``(1 - t)·z - log σ(z)``."""
    return (1.0 - target) * logits + _neg_log_sigmoid(xp, logits)


class BCEWithLogitsFn(Function):
    @staticmethod
    def forward(ctx, logits, target, pos_weight=None):
        xp = get_backend().xp
        target = target.astype(logits.dtype)
        # stable form: -log σ(z) = log(1 + exp(-|z|)) + max(-z, 0), and
        # loss = -(w·t·log σ(z) + (1 - t)·log(1 - σ(z))) = (1 - t)·z + (1 + (w - 1)·t)·(-log σ(z))
        if pos_weight is None:
            loss = _bce_elements(xp, logits, target)
        else:
            loss = (1.0 - target) * logits + (1.0 + (pos_weight - 1.0) * target) * _neg_log_sigmoid(xp, logits)
        ctx.save(logits, target)
        ctx.pos_weight, ctx.n = pos_weight, max(logits.size, 1)
        return loss.sum() / ctx.n

    @staticmethod
    def backward(ctx, grad):
        logits, target = ctx.saved
        p = sigmoid_array(logits)
        if ctx.pos_weight is None:
            d = p - target
        else:
            d = (1.0 - target) - (1.0 + (ctx.pos_weight - 1.0) * target) * (1.0 - p)
        return grad * d / ctx.n, None


def bce_with_logits(logits, target, pos_weight=None):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``target`` in [0, 1]."""
    _, f, target = _logits_and_target(logits, target, "bce_with_logits")
    return BCEWithLogitsFn.apply(f, target, pos_weight=pos_weight)


class TopKBCEWithLogitsFn(Function):
    """Mean over the ``m`` rows with the largest BCE (summed over channels) of that row sum."""

    @staticmethod
    def forward(ctx, logits, target, k):
        xp = get_backend().xp
        target = target.astype(logits.dtype)
        rows = _bce_elements(xp, logits, target).sum(axis=1)  # (N,)
        m = max(1, int(len(rows) * k)) if len(rows) else 0
        # argpartition puts the m largest last (in no order); ties are broken the same way on every
        # call with the same input, so the choice is deterministic
        top = xp.argpartition(rows, len(rows) - m)[len(rows) - m:] if m else xp.zeros(0, np.int64)
        ctx.save(logits, target, top)
        ctx.m = max(m, 1)
        return rows[top].sum() / ctx.m

    @staticmethod
    def backward(ctx, grad):
        logits, target, top = ctx.saved
        xp = get_backend().xp
        d = xp.zeros_like(logits)
        d[top] = sigmoid_array(logits[top]) - target[top]
        return grad * d / ctx.m, None


def topk_bce_with_logits(logits, target, k=0.1):
    """nnU-Net's TopK loss for sigmoid outputs: the BCE of each row (voxel) summed over its
    channels, averaged over the ``max(1, int(k·N))`` rows where it is largest (the hardest voxels);
    the other rows get no gradient. ``k=1`` is ``bce_with_logits`` times the channel count.

    ``logits``: ``(N, C)`` (or a SparseTensor); ``target``: ``(N, C)`` in [0, 1]; ``k`` in (0, 1].
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"topk_bce_with_logits: k must lie in (0, 1], got {k}")
    _, f, target = _logits_and_target(logits, target, "topk_bce_with_logits")
    return TopKBCEWithLogitsFn.apply(f, target, k=float(k))


class CrossEntropyFn(Function):
    @staticmethod
    def forward(ctx, logits, labels, weight=None, ignore_index=-100):
        xp = get_backend().xp
        labels = labels.astype(np.int64).reshape(-1)
        valid = labels != ignore_index
        safe = xp.where(valid, labels, 0)
        shifted = logits - logits.max(axis=1, keepdims=True) if len(logits) else logits
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z
        rows = xp.arange(len(labels))
        w = xp.ones(len(labels), logits.dtype) if weight is None else xp.asarray(weight, logits.dtype)[safe]
        w = w * valid
        total = w.sum()
        ctx.save(log_p, safe, w)
        ctx.total = total if total > 0 else 1.0
        return -(w * log_p[rows, safe]).sum() / ctx.total

    @staticmethod
    def backward(ctx, grad):
        log_p, safe, w = ctx.saved
        xp = get_backend().xp
        d = xp.exp(log_p)
        d[xp.arange(len(safe)), safe] -= 1.0
        return grad * d * (w / ctx.total)[:, None], None


def cross_entropy(logits, labels, weight=None, ignore_index=-100):
    """Mean softmax cross-entropy; ``labels (N,)`` integer classes (``ignore_index`` rows skipped),
    ``weight (C,)`` optional class weights (PyTorch's weighted mean)."""
    _, f, labels = _logits_and_target(logits, labels, "cross_entropy")
    return CrossEntropyFn.apply(f, labels, weight=weight, ignore_index=ignore_index)


def dice_score(pred, target):
    """Hard Dice ``2|P∧T| / (|P| + |T|)`` of boolean arrays, per channel (last axis); 1 if both empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.ndim == 2 and pred.shape == target.shape:
        # Rows (N, C): count each channel as one contiguous run of bytes. Summing a column of an
        # (N, C) bool array widens every element to an integer first (about 15x slower at N = 10^6,
        # and single-threaded: the training step logs this Dice every step). The counts are the same.
        p, t = np.ascontiguousarray(pred.T), np.ascontiguousarray(target.T)
        inter = np.array([np.count_nonzero(a & b) for a, b in zip(p, t)], dtype=np.int64)
        total = np.array([np.count_nonzero(a) + np.count_nonzero(b) for a, b in zip(p, t)], dtype=np.int64)
    else:
        inter = (pred & target).sum(axis=0)
        total = pred.sum(axis=0) + target.sum(axis=0)
    return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
