"""Average pooling over the active children of each output site (k2 s2 by default).

It reuses the down convolution's kernel map: ``out[o] = mean of feats[nbr[o, k]]`` over the
offsets ``k`` where the child is active — a depthwise convolution with all-ones weights, divided by
the number of active children. So pooled targets line up with a ``SparseConv3d(k=2, s=2)`` output.
"""
from __future__ import annotations

from .. import kmap as _km
from ..autograd import Function
from ..backends import get_backend
from .conv import depthwise_forward


class AvgPoolFn(Function):
    @staticmethod
    def forward(ctx, x, kmap=None, inv_count=None):
        xp = get_backend().xp
        ones = xp.ones((kmap.K, x.shape[1]), dtype=x.dtype)
        ctx.kmap, ctx.inv_count, ctx.ones = kmap, inv_count.astype(x.dtype), ones
        return depthwise_forward(x, ones, kmap) * ctx.inv_count[:, None]

    @staticmethod
    def backward(ctx, grad):
        return depthwise_forward(grad * ctx.inv_count[:, None], ctx.ones, ctx.kmap.transposed())


def avg_pool(x, kernel_size=2, stride=None, padding=0):
    """Mean over each output window's active inputs; output sites = ``down_map``'s coarse sites."""
    kmap, coarse = _km.down_map(x, kernel_size, kernel_size if stride is None else stride, padding, 1)
    xp = get_backend().xp
    count = (kmap.neighbors >= 0).sum(axis=1)
    inv_count = 1.0 / xp.maximum(count, 1)
    return coarse.replace_feats(AvgPoolFn.apply(x.feats_tensor, kmap=kmap, inv_count=inv_count))
