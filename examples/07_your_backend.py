"""Your own backend, written from scratch: all 17 kernels, and ``verify`` passing on it.

This file is a complete sparseconv backend that inherits nothing: every kernel of the interface
(docs/backends.md, "The kernels") written out with the array module ``self.xp`` and nothing else, so
the same code runs on any NumPy-like module — ``xp = cupy`` puts it on a GPU. It is deliberately
plain (loops over kernel offsets, one matrix product per offset) and follows the rules a backend is
held to:

* **allocate through** ``self.xp`` with the input's dtype (``xp.zeros(..., dtype=feats.dtype)``):
  float32 in, float32 out, on the device the inputs live on;
* **never write into an input** — the caller still needs it;
* **do not assume contiguous inputs** — a column slice of a wider array is a valid ``(N, C)`` input;
  code that indexes arrays (as here) is fine, code that reads raw memory calls
  ``xp.ascontiguousarray`` first;
* **deterministic** — the same call twice gives the same bits, and so does another thread count:
  every sum here has a fixed order (no atomics, no per-thread chunks);
* **accurate at scale** — a segment's sum is summed over its own rows, never as the difference of
  two running (prefix) sums, whose round-off grows with everything before the segment.

Check it::

    python -m sparseconv.verify --plugin examples/07_your_backend.py --quick
    python examples/07_your_backend.py --quick            # the same, from here
    python -m sparseconv.verify --plugin examples/07_your_backend.py --scale   # + 10^5-10^6 rows

Then ``sparseconv.set_backend("yours")`` runs every layer and network of the library on it.
"""
from __future__ import annotations

import math
import sys

import numpy as np

import sparseconv
from sparseconv.backends.pointwise import erf  # scipy's erf on NumPy arrays, cupyx's on CuPy arrays

AXIS_BITS = 16  # packed key: batch << 48 | z << 32 | y << 16 | x (sparseconv.coords.pack_keys)


class YourBackend:
    name = "yours"
    xp = np  # the array module; everything below allocates through self.xp

    # --- keys ------------------------------------------------------------------------------------
    def _pack(self, c):
        """``(N, 4)`` coordinates → ``(N,) int64`` packed keys."""
        c = self.xp.asarray(c).astype(np.int64)
        return (c[:, 0] << 48) | (c[:, 1] << 32) | (c[:, 2] << 16) | c[:, 3]

    def _unpack(self, keys):
        mask = (1 << AXIS_BITS) - 1
        return self.xp.stack([keys >> 48, (keys >> 32) & mask, (keys >> 16) & mask, keys & mask],
                             axis=1).astype(np.int32)

    # --- coordinate index ------------------------------------------------------------------------
    def build_index(self, keys):
        """Sorted keys and the row each came from (a binary-search index; any structure will do)."""
        keys = self.xp.asarray(keys)
        order = self.xp.argsort(keys).astype(np.int32)  # keys are unique: any sort gives the same order
        return keys[order], order

    def lookup(self, index, queries):
        sorted_keys, order = index
        queries = self.xp.asarray(queries)
        if len(sorted_keys) == 0:
            return self.xp.full(len(queries), -1, dtype=np.int32)
        pos = self.xp.minimum(self.xp.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
        return self.xp.where(sorted_keys[pos] == queries, order[pos], -1).astype(np.int32)

    # --- kernel-map tables -----------------------------------------------------------------------
    def neighbor_table(self, index, coords, spatial_shape, offsets):
        xp = self.xp
        coords, offsets = xp.asarray(coords), xp.asarray(offsets)
        shape = xp.asarray(spatial_shape, dtype=np.int64)
        table = xp.full((len(coords), len(offsets)), -1, dtype=np.int32)
        for j in range(len(offsets)):
            target = coords.astype(np.int64)
            target[:, 1:] += offsets[j]
            inside = xp.all((target[:, 1:] >= 0) & (target[:, 1:] < shape), axis=1)
            table[inside, j] = self.lookup(index, self._pack(target[inside]))
        return table

    def mirror_table(self, lower, K):
        xp = self.xp
        n, half = lower.shape
        table = xp.full((n, K), -1, dtype=np.int32)
        table[:, :half] = lower
        table[:, half] = xp.arange(n, dtype=np.int32)  # the centre offset: every site is its own neighbour
        for j in range(half):  # i sees r at +d  <=>  r sees i at -d
            src = xp.flatnonzero(lower[:, j] >= 0)
            table[lower[src, j], K - 1 - j] = src.astype(np.int32)
        return table

    def transpose_table(self, neighbors, n_in):
        xp = self.xp
        table = xp.full((n_in, neighbors.shape[1]), -1, dtype=np.int32)
        for k in range(neighbors.shape[1]):
            out_rows = xp.flatnonzero(neighbors[:, k] >= 0)
            table[neighbors[out_rows, k], k] = out_rows.astype(np.int32)
        return table

    def down_table(self, coords, offsets, stride, padding, out_shape):
        xp = self.xp
        coords, offsets = xp.asarray(coords).astype(np.int64), xp.asarray(offsets).astype(np.int64)
        s, p, shape = (xp.asarray(v, dtype=np.int64) for v in (stride, padding, out_shape))
        rows, cols, keys = [], [], []
        for k in range(len(offsets)):
            num = coords[:, 1:] + p - offsets[k]  # = o * stride for the output o this offset feeds
            o = num // s
            fed = xp.flatnonzero(xp.all((num % s == 0) & (o >= 0) & (o < shape), axis=1))  # exact division only
            rows.append(fed)
            cols.append(xp.full(len(fed), k, dtype=np.int64))
            keys.append(self._pack(xp.concatenate([coords[fed, :1], o[fed]], axis=1)))
        rows, cols, keys = xp.concatenate(rows), xp.concatenate(cols), xp.concatenate(keys)
        out_keys, out_row = xp.unique(keys, return_inverse=True)  # sorted: the canonical order
        table = xp.full((len(out_keys), len(offsets)), -1, dtype=np.int32)
        table[out_row.reshape(-1), cols] = rows.astype(np.int32)
        return self._unpack(out_keys), table

    # --- convolution -----------------------------------------------------------------------------
    # Within one offset every input row and every output row occurs at most once, so a scatter
    # ``out[out_rows] += ...`` needs no atomics, and the offsets are summed in a fixed order.
    def conv_forward(self, feats, weight, kmap):
        out = self.xp.zeros((kmap.n_out, weight.shape[2]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            out[out_rows] += feats[in_rows] @ weight[k]
        return out

    def conv_weight_grad(self, feats, grad_out, kmap):
        grad_w = self.xp.zeros((kmap.K, feats.shape[1], grad_out.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            grad_w[k] = feats[in_rows].T @ grad_out[out_rows]
        return grad_w

    def depthwise_forward(self, feats, weight, kmap):
        out = self.xp.zeros((kmap.n_out, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            out[out_rows] += feats[in_rows] * weight[k]
        return out

    def depthwise_weight_grad(self, feats, grad_out, kmap):
        grad_w = self.xp.zeros((kmap.K, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            grad_w[k] = (feats[in_rows] * grad_out[out_rows]).sum(axis=0)
        return grad_w

    # --- reductions ------------------------------------------------------------------------------
    def segment_sum(self, values, seg_ptr):
        bounds = [int(b) for b in seg_ptr]  # S+1 host ints (a few samples)
        out = self.xp.zeros((len(bounds) - 1, values.shape[1]), dtype=values.dtype)
        for s in range(len(bounds) - 1):
            out[s] = values[bounds[s]:bounds[s + 1]].sum(axis=0)  # each segment over its own rows
        return out

    # --- pointwise -------------------------------------------------------------------------------
    def gelu(self, x):
        return x * (0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0)))))

    def gelu_grad(self, x, grad):
        cdf = 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
        pdf = self.xp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return grad * (cdf + x * pdf)

    def layer_norm(self, x, weight, bias, eps):
        xc = x - x.mean(axis=1, keepdims=True)  # a new array: x itself is left alone
        rstd = 1.0 / self.xp.sqrt((xc * xc).mean(axis=1, keepdims=True) + eps)
        xhat = xc * rstd
        y = xhat if weight is None else xhat * weight
        return (y if bias is None else y + bias), xhat, rstd

    def layer_norm_grad(self, grad, xhat, rstd, weight):
        g = grad if weight is None else grad * weight
        gx = rstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
        return gx, (grad * xhat).sum(axis=0), grad.sum(axis=0)

    def _sample_of_rows(self, seg_ptr, n):
        """``(n,)`` the sample each row belongs to."""
        return self.xp.searchsorted(self.xp.asarray(seg_ptr)[1:], self.xp.arange(n), side="right")

    def grn(self, x, gamma, beta, seg_ptr, eps):
        G = self.xp.sqrt(self.segment_sum(x * x, seg_ptr))  # (S, C) per-sample channel norms
        scale = gamma * (G / (G.mean(axis=1, keepdims=True) + eps)) + 1.0
        return x * scale[self._sample_of_rows(seg_ptr, len(x))] + beta, G

    def grn_grad(self, grad, x, gamma, G, seg_ptr, eps):
        xp = self.xp
        m = G.mean(axis=1, keepdims=True) + eps
        nx = G / m
        gx_sum = self.segment_sum(grad * x, seg_ptr)  # (S, C): Σ_rows grad·x per sample
        a = gamma * gx_sum  # dL/dNx
        dG = a / m - (a * G).sum(axis=1, keepdims=True) / (G.shape[1] * m * m)
        coef = xp.where(G > 0, dG / xp.where(G > 0, G, 1.0), 0.0).astype(G.dtype)  # dL/dG · dG/dx = coef · x
        rows = self._sample_of_rows(seg_ptr, len(x))
        dx = grad * (gamma * nx + 1.0)[rows] + x * coef[rows]
        return dx, (gx_sum * nx).sum(axis=0), grad.sum(axis=0)


backend = YourBackend()
sparseconv.register_backend(backend.name, backend)


def main(argv=None) -> int:
    import argparse

    from sparseconv import verify

    p = argparse.ArgumentParser(description="Run the conformance suite on this backend.")
    p.add_argument("--quick", "--smoke", action="store_true", help="the quick suite (a few seconds)")
    p.add_argument("--scale", action="store_true", help="add the scale tier (a minute or more)")
    args = p.parse_args(argv)
    return verify.main(["--backend", backend.name] + ["--quick"] * args.quick + ["--scale"] * args.scale)


if __name__ == "__main__":
    sys.exit(main())
