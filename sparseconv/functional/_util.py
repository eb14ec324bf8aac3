"""Helpers shared by the functional ops: taking features apart, re-wrapping results, batch segments."""
from __future__ import annotations

import numpy as np

from ..backends import get_backend
from ..backends.pointwise import segment_of_rows
from ..tensor import SparseTensor


def split(x):
    """``(sparse_or_None, feats)`` of a SparseTensor (its ``feats_tensor``), a Tensor or a raw
    ``(N, C)`` array (itself)."""
    if isinstance(x, SparseTensor):
        return x, x.feats_tensor
    return None, x


def wrap(sparse, feats):
    """``feats`` on ``sparse``'s sites (sharing its cache), or ``feats`` itself if there are no sites."""
    return feats if sparse is None else sparse.replace_feats(feats)


def plus_bias(out, bias):
    """``out + bias`` (``bias`` broadcast over the rows), for ``out`` a kernel's fresh output: added
    in place where the dtypes agree (a second ``(N, C)`` array would cost an allocation and a
    pass; the sums are the same bits), else as a new array in NumPy's promoted dtype."""
    if bias is None:
        return out
    if getattr(bias, "dtype", None) == out.dtype:
        out += bias
        return out
    return out + bias


def forward_plus_bias(kernel, feats, weight, kmap, bias):
    """``plus_bias(be.<kernel>(feats, weight, kmap), bias)`` for ``kernel`` ``"conv_forward"`` or
    ``"depthwise_forward"``: through the backend's optional ``<kernel>_bias`` where it has one and
    the dtypes agree, which adds the bias to each output row before storing it (the same bits,
    without a second pass over the output)."""
    be = get_backend()
    fused = getattr(be, kernel + "_bias", None)
    if bias is not None and fused is not None and getattr(bias, "dtype", None) == feats.dtype:
        return fused(feats, weight, kmap, bias)
    return plus_bias(getattr(be, kernel)(feats, weight, kmap), bias)


def column_sum(x):
    """``x.sum(axis=0)`` of ``(N, C)`` rows (a bias gradient): the backend's optional ``column_sum``
    kernel where it has one (threaded, NumPy's bits), else NumPy's own (single-threaded) sum."""
    be = get_backend()
    return be.column_sum(x) if hasattr(be, "column_sum") else x.sum(axis=0)


def add_rows(a, b):
    """``a + b`` of two ``(N, C)`` arrays of one dtype (a residual or skip sum): the backend's
    optional ``add`` kernel where it has one (threaded, the same bits), else the array module's."""
    be = get_backend()
    if hasattr(be, "add") and a.shape == b.shape and a.dtype == b.dtype and a.ndim == 2:
        return be.add(a, b)
    return a + b


def batch_ptr(x: SparseTensor):
    """``(B+1,) int64`` row boundaries of each sample (rows are sorted by batch first), cached."""
    if "batch_ptr" not in x.cache:
        ptr = np.searchsorted(x.coords[:, 0], np.arange(x.batch_size + 1), side="left").astype(np.int64)
        x.cache["batch_ptr"] = get_backend().xp.asarray(ptr)
    return x.cache["batch_ptr"]


def segment_ids(seg_ptr):
    """``(N,)`` segment index of each row, from ``(S+1,)`` boundaries."""
    return segment_of_rows(get_backend().xp, seg_ptr)
