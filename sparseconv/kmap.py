"""Kernel maps (rulebooks): which input row feeds which output row through which kernel offset.

Building a map is separate from using it (as in TorchSparse): a map is built once per
(level, kernel, stride, dilation), cached on the tensor's sites, and handed to every convolution
that runs on that level.

A :class:`KernelMap` stores one *output-stationary neighbour table*::

    neighbors: (n_out, K) int32,  neighbors[o, k] = input row that reaches output o through
                                  offset k, or -1 if that neighbour is not active.

Everything else derives from it: the per-offset pair lists ``(in_rows, out_rows)`` the
gather-matmul-scatter reference uses, and the *transposed* map (outputs ↔ inputs) that turns
every backward-data pass and every inverse convolution into a forward pass. Within one offset each
input row and each output row occurs at most once, so a scatter never needs atomics.

Offsets are enumerated row-major, dz slowest (docs/design.md, Conventions):
  * submanifold / centred maps: ``(dz, dy, dx) ∈ [-r, r]^3 · dilation``, r = k // 2;
  * strided (down) maps: window positions ``[0, k)^3 · dilation`` as in a dense convolution.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import coords as C
from .backends import get_backend
from .device import to_host
from .tensor import SparseTensor


def centred_offsets(kernel_size, dilation=1) -> np.ndarray:
    """``(K, 3) int32`` offsets of an odd centred kernel, row-major (dz slowest)."""
    ks, dil = C.as_triple(kernel_size, "kernel_size"), C.as_triple(dilation, "dilation")
    if any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"submanifold kernel_size must be odd and >= 1, got {ks}")
    if any(d < 1 for d in dil):
        raise ValueError(f"dilation must be >= 1, got {dil}")
    axes = [np.arange(-(k // 2), k // 2 + 1) * d for k, d in zip(ks, dil)]
    return np.array(list(itertools.product(*axes)), dtype=np.int32).reshape(-1, 3)


def window_offsets(kernel_size, dilation=1) -> np.ndarray:
    """``(K, 3) int32`` window positions ``[0, k)^3 · dilation`` of a strided kernel."""
    ks, dil = C.as_triple(kernel_size, "kernel_size"), C.as_triple(dilation, "dilation")
    axes = [np.arange(k) * d for k, d in zip(ks, dil)]
    return np.array(list(itertools.product(*axes)), dtype=np.int32).reshape(-1, 3)


class KernelMap:
    """A rulebook: ``neighbors (n_out, K) int32`` plus the facts needed to use it.

    Attributes:
        neighbors: ``(n_out, K) int32``, -1 where the neighbour is inactive.
        n_in: rows of the input the map reads.
        offsets: ``(K, 3) int32`` kernel offsets, in weight order.
        kind: ``"submanifold"``, ``"down"`` or ``"inverse"`` (for messages and pictures).
    """

    def __init__(self, neighbors, n_in: int, offsets: np.ndarray, kind: str, mirror_symmetric=False):
        self.neighbors = neighbors
        self.n_in = int(n_in)
        self.offsets = offsets
        self.kind = kind
        # Submanifold maps are their own transpose with offsets mirrored (k ↔ K-1-k).
        self.mirror_symmetric = mirror_symmetric
        self._pairs = None
        self._transposed = None

    @property
    def n_out(self) -> int:
        return self.neighbors.shape[0]

    @property
    def K(self) -> int:
        return self.neighbors.shape[1]

    def __repr__(self):
        return f"KernelMap({self.kind}, n_in={self.n_in}, n_out={self.n_out}, K={self.K}, pairs={self.num_pairs})"

    def pairs(self, k: int):
        """``(in_rows, out_rows)`` int32 arrays of offset ``k`` (ordered by output row)."""
        if self._pairs is None:
            xp = get_backend().xp
            self._pairs = []
            for col in range(self.K):
                out_rows = xp.flatnonzero(self.neighbors[:, col] >= 0).astype(np.int32)
                self._pairs.append((self.neighbors[out_rows, col], out_rows))
        return self._pairs[k]

    def pair_counts(self) -> np.ndarray:
        """``(K,) int64`` number of (input, output) pairs per offset."""
        counts = (self.neighbors >= 0).sum(axis=0)
        return to_host(counts).astype(np.int64)

    @property
    def num_pairs(self) -> int:
        return int(self.pair_counts().sum())

    def transposed(self) -> "KernelMap":
        """The map read backwards: outputs become inputs (``neighbors (n_in, K)``).

        Used for the input gradient (dX = conv of dY with Wᵀ over the transposed map) and for the
        inverse convolution, which runs a down map in reverse.
        """
        if self._transposed is None:
            if self.mirror_symmetric:
                table = self.neighbors[:, ::-1].copy()
            else:
                table = get_backend().transpose_table(self.neighbors, self.n_in)
            kind = {"down": "inverse", "inverse": "down"}.get(self.kind, self.kind)
            t = KernelMap(table, self.n_out, self.offsets, kind, self.mirror_symmetric)
            t._transposed = self
            self._transposed = t
        return self._transposed


# --------------------------------------------------------------------------------------------
# Builders. Each caches its result on the input's sites (x.cache), keyed by its parameters.
# --------------------------------------------------------------------------------------------

def coordinate_index(x: SparseTensor):
    """The backend's hash index of ``x``'s packed keys (built once per set of sites)."""
    if "index" not in x.cache:
        x.cache["index"] = get_backend().build_index(x.keys)
    return x.cache["index"]


def submanifold_map(x: SparseTensor, kernel_size=3, dilation=1) -> KernelMap:
    """Map of a submanifold convolution: outputs = inputs = the active sites of ``x``.

    A backend with the optional ``submanifold_table`` builds the whole table from the sorted keys in
    one pass. Otherwise only the first half of the offsets is looked up in the coordinate index: the
    centre is the identity, and the pair (i → j) at offset +d is the pair (j → i) at offset -d.
    """
    key = ("subm", C.as_triple(kernel_size, "kernel_size"), C.as_triple(dilation, "dilation"))
    if key not in x.cache:
        offsets = centred_offsets(kernel_size, dilation)
        K, half = len(offsets), len(offsets) // 2
        be = get_backend()
        if hasattr(be, "submanifold_table"):
            table = be.submanifold_table(x.keys, x.spatial_shape, offsets)
        else:
            lower = be.neighbor_table(coordinate_index(x), x.coords, x.spatial_shape, offsets[:half])
            table = be.mirror_table(lower, K)
        x.cache[key] = KernelMap(table, len(x), offsets, "submanifold", mirror_symmetric=True)
    return x.cache[key]


def down_output_shape(spatial_shape, kernel_size, stride, padding, dilation):
    """Grid of a strided convolution's output.

    The dense formula ``floor((D + 2p - d(k-1) - 1) / s) + 1``, except for the *tiling* case
    ``k == s, p == 0, d == 1`` (the U-Net downsampler), where the grid is ``ceil(D / s)`` so that
    no input voxel is dropped at an odd-sized border (docs/design.md, Conventions: down conv).
    """
    shape = np.array(C.as_shape3(spatial_shape))
    params = [(kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding"), (dilation, "dilation")]
    k, s, p, d = (np.array(C.as_triple(v, n)) for v, n in params)
    desc = f"kernel_size={k.tolist()}, stride={s.tolist()}, padding={p.tolist()}, dilation={d.tolist()}"
    if np.any(s < 1) or np.any(k < 1) or np.any(p < 0) or np.any(d < 1):
        raise ValueError(f"need kernel_size, stride, dilation >= 1 and padding >= 0, got {desc}")
    if np.array_equal(k, s) and not p.any() and np.all(d == 1):
        out = -(-shape // s)
    else:
        out = (shape + 2 * p - d * (k - 1) - 1) // s + 1
    if np.any(out < 1):
        raise ValueError(f"strided conv with {desc} leaves no output on grid {shape.tolist()}")
    return tuple(int(v) for v in out)


def down_map(x: SparseTensor, kernel_size=2, stride=2, padding=0, dilation=1):
    """Map of a strided ("down") convolution with dense-convolution semantics.

    Output sites are every position whose window holds at least one active input. Returns
    ``(kmap, coarse)`` where ``coarse`` is the output's sites as a feature-less ``SparseTensor``
    (0 channels) whose cache remembers this map, so the inverse convolution can find its way back.
    """
    params = tuple(C.as_triple(v, n) for v, n in [(kernel_size, "kernel_size"), (stride, "stride"),
                                                   (padding, "padding"), (dilation, "dilation")])
    key = ("down",) + params
    if key not in x.cache:
        out_shape = down_output_shape(x.spatial_shape, *params)
        offsets = window_offsets(params[0], params[3])
        out_coords, table = get_backend().down_table(x.coords, offsets, params[1], params[2], out_shape)
        # Sites live on the host (SparseTensor coords are NumPy everywhere); the table stays an xp array.
        out_coords = np.asarray(to_host(out_coords), dtype=np.int32)
        kmap = KernelMap(table, len(x), offsets, "down")
        coarse = SparseTensor._trusted(
            out_coords, np.zeros((len(out_coords), 0), np.float32), out_shape, x.batch_size,
            tuple(a * b for a, b in zip(x.stride, params[1])))
        coarse.cache[("up",) + params] = (kmap, x)
        x.cache[key] = (kmap, coarse)
    return x.cache[key]


def inverse_map(x: SparseTensor, kernel_size=2, stride=2, padding=0, dilation=1):
    """Map of the inverse (transposed) convolution that undoes ``down_map`` on ``x``'s level.

    ``x`` must sit on the sites a down map produced (its cache remembers the finer level).
    Returns ``(kmap, fine)`` — the down map read backwards, and the finer level's sites.
    """
    key = ("up",) + tuple(C.as_triple(v, n) for v, n in [(kernel_size, "kernel_size"), (stride, "stride"),
                                                          (padding, "padding"), (dilation, "dilation")])
    if key not in x.cache:
        raise ValueError(
            f"inverse conv: these sites (N={len(x)}, spatial_shape={x.spatial_shape}) were not produced by a "
            f"down conv with kernel_size={key[1]}, stride={key[2]}, padding={key[3]}, dilation={key[4]}; "
            "an inverse conv can only undo a down conv it shares sites with")
    down, fine = x.cache[key]
    return down.transposed(), fine

