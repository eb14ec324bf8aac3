"""Combining tensors on identical sites: ``add`` (U-Net skip sums, residuals) and ``cat``."""
from __future__ import annotations

from ..autograd import Function
from ..backends import get_backend
from ..tensor import SparseTensor
from ._util import add_rows


def _check_sites(op, tensors):
    first = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if not isinstance(t, SparseTensor):
            raise TypeError(f"{op}: argument {i} is {type(t).__name__}, not a SparseTensor")
        if not first.same_sites(t):
            raise ValueError(
                f"{op}: tensors must have identical sites, but argument 0 has N={len(first)}, "
                f"spatial_shape={first.spatial_shape}, batch_size={first.batch_size} and argument {i} has "
                f"N={len(t)}, spatial_shape={t.spatial_shape}, batch_size={t.batch_size}"
                + ("" if len(first) != len(t) or first.spatial_shape != t.spatial_shape else
                   " (same count and grid, different coordinates)"))


def add(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """``a + b`` feature-wise on identical sites (ValueError if the sites differ)."""
    _check_sites("add", [a, b])
    if a.num_channels != b.num_channels:
        raise ValueError(f"add: channel counts differ: {a.num_channels} vs {b.num_channels}")
    return a.replace_feats(Add.apply(a.feats_tensor, b.feats_tensor))


class Add(Function):
    """``a + b`` of two ``(N, C)`` feature arrays (the backend's threaded ``add`` where it has one);
    the gradient reaches both unchanged."""

    @staticmethod
    def forward(ctx, a, b):
        return add_rows(a, b)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Concat(Function):
    @staticmethod
    def forward(ctx, *feats):
        ctx.widths = [f.shape[1] for f in feats]
        return get_backend().xp.concatenate(feats, axis=1)

    @staticmethod
    def backward(ctx, grad):
        xp, out, start = get_backend().xp, [], 0
        for w in ctx.widths:
            out.append(xp.ascontiguousarray(grad[:, start:start + w]))
            start += w
        return tuple(out)


def cat(tensors) -> SparseTensor:
    """Concatenate features along channels, on identical sites (ValueError if the sites differ)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: need at least one tensor")
    _check_sites("cat", tensors)
    return tensors[0].replace_feats(Concat.apply(*[t.feats_tensor for t in tensors]))
