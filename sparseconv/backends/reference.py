"""The NumPy reference backend: written to be read, and the yardstick every other backend meets.

Coordinate index: the packed keys sorted once; a lookup is a binary search (``searchsorted``) and
an equality check. Convolution: for each kernel offset, gather the input rows of its pairs,
multiply by that offset's weight matrix, scatter-add into the output rows.
"""
from __future__ import annotations

import numpy as np

from .. import coords as C
from . import pointwise


class ReferenceBackend:
    name = "reference"
    xp = np

    # --- coordinate index ----------------------------------------------------------------------
    def build_index(self, keys):
        order = np.argsort(keys, kind="stable").astype(np.int32)
        return keys[order], order

    def lookup(self, index, queries):
        sorted_keys, order = index
        pos = np.searchsorted(sorted_keys, queries)
        pos = np.minimum(pos, len(sorted_keys) - 1)
        if len(sorted_keys) == 0:
            return np.full(len(queries), -1, dtype=np.int32)
        found = sorted_keys[pos] == queries
        return np.where(found, order[pos], -1).astype(np.int32)

    # --- kernel-map tables ---------------------------------------------------------------------
    def neighbor_table(self, index, coords, spatial_shape, offsets):
        table = np.full((len(coords), len(offsets)), -1, dtype=np.int32)
        for j, offset in enumerate(offsets):
            target = coords.astype(np.int64)
            target[:, 1:] += offset
            inside = np.all((target[:, 1:] >= 0) & (target[:, 1:] < np.array(spatial_shape)), axis=1)
            table[inside, j] = self.lookup(index, C.pack_keys(target[inside]))
        return table

    def mirror_table(self, lower, K):
        n, half = lower.shape
        table = np.full((n, K), -1, dtype=np.int32)
        table[:, :half] = lower
        table[:, half] = np.arange(n)  # the centre offset maps every site to itself
        for j in range(half):
            src = np.flatnonzero(lower[:, j] >= 0)
            table[lower[src, j], K - 1 - j] = src  # i sees j at +d  <=>  j sees i at -d
        return table

    def transpose_table(self, neighbors, n_in):
        table = np.full((n_in, neighbors.shape[1]), -1, dtype=np.int32)
        for k in range(neighbors.shape[1]):
            out_rows = np.flatnonzero(neighbors[:, k] >= 0)
            table[neighbors[out_rows, k], k] = out_rows
        return table

    def down_table(self, coords, offsets, stride, padding, out_shape):
        # Input i feeds output o through offset k iff  coords_i + padding - offsets[k] == o * stride.
        s, p, shape = (np.array(v, dtype=np.int64) for v in (stride, padding, out_shape))
        batch, spatial = coords[:, :1].astype(np.int64), coords[:, 1:].astype(np.int64)
        rows, cols, keys = [], [], []
        for k, offset in enumerate(offsets):
            num = spatial + p - offset  # = o * s for the output o this offset would feed
            o = num // s
            ok = np.all((num % s == 0) & (o >= 0) & (o < shape), axis=1)
            r = np.flatnonzero(ok)
            rows.append(r)
            cols.append(np.full(len(r), k))
            keys.append(C.pack_keys(np.concatenate([batch[r], o[r]], axis=1)))
        rows, cols, keys = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (rows, cols, keys))
        out_keys, out_rows = np.unique(keys, return_inverse=True)  # sorted: canonical order
        table = np.full((len(out_keys), len(offsets)), -1, dtype=np.int32)
        table[out_rows.reshape(-1), cols] = rows
        return C.unpack_keys(out_keys), table

    # --- convolution -------------------------------------------------------------------------
    def conv_forward(self, feats, weight, kmap):
        out = np.zeros((kmap.n_out, weight.shape[2]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            out[out_rows] += feats[in_rows] @ weight[k]  # rows unique within an offset: no clash
        return out

    def conv_weight_grad(self, feats, grad_out, kmap):
        grad_w = np.zeros((kmap.K, feats.shape[1], grad_out.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            grad_w[k] = feats[in_rows].T @ grad_out[out_rows]
        return grad_w

    def depthwise_forward(self, feats, weight, kmap):
        out = np.zeros((kmap.n_out, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            out[out_rows] += feats[in_rows] * weight[k]
        return out

    def depthwise_weight_grad(self, feats, grad_out, kmap):
        grad_w = np.zeros((kmap.K, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            grad_w[k] = (feats[in_rows] * grad_out[out_rows]).sum(axis=0)
        return grad_w

    # --- reductions ----------------------------------------------------------------------------
    def segment_sum(self, values, seg_ptr):
        out = np.zeros((len(seg_ptr) - 1, values.shape[1]), dtype=values.dtype)
        for s, (start, stop) in enumerate(zip(seg_ptr[:-1], seg_ptr[1:])):
            out[s] = values[start:stop].sum(axis=0)
        return out

    # --- pointwise -------------------------------------------------------------------------------
    def gelu(self, x):
        return pointwise.gelu(np, x)

    def gelu_grad(self, x, grad):
        return pointwise.gelu_grad(np, x, grad)

    def layer_norm(self, x, weight, bias, eps):
        return pointwise.layer_norm(np, x, weight, bias, eps)

    def layer_norm_grad(self, grad, xhat, rstd, weight):
        return pointwise.layer_norm_grad(np, grad, xhat, rstd, weight)

    def grn(self, x, gamma, beta, seg_ptr, eps):
        return pointwise.grn(np, self.segment_sum, x, gamma, beta, seg_ptr, eps)

    def grn_grad(self, grad, x, gamma, G, seg_ptr, eps):
        return pointwise.grn_grad(np, self.segment_sum, grad, x, gamma, G, seg_ptr, eps)


backend = ReferenceBackend()
