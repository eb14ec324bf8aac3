"""Exercises: write the core of a sparse-convolution backend yourself.

This file is a complete sparseconv backend in which five kernels are left for you to write.
Every other kernel is inherited from the NumPy reference backend
(``sparseconv/backends/reference.py``), so the library runs on this backend as soon as the five
are filled in:

    exercise 1   neighbor_table    the neighbour table of a submanifold kernel map
    exercise 2   conv_forward      the convolution: gather - GEMM - scatter, offset by offset
    exercise 3a  transpose_table   the transposed map, on which the library computes dX
    exercise 3b  conv_weight_grad  the weight gradient dW
    exercise 4   down_table        the kernel map of a strided ("down") convolution

Grade it with the library's conformance suite (forward, dX, dW and db of every op against the dense
NumPy twins, and the kernel maps against the reference's)::

    python -m sparseconv.verify --plugin exercises/my_backend.py --quick

A kernel you have not written yet is reported as ``not implemented: exercise N (...)`` with its
hint (``HINTS`` below). The checks call the kernels in a fixed order: the kernel-map checks name
exercises 1, 3a and 4 from the start; the convolution rows reach exercises 2 and 3b once the maps
they need are built. The words used here (packed key, neighbour table, pair list, transposed map,
window offset) are defined in docs/concepts.md; the kernel interface is in docs/backends.md.
Worked solutions: ``exercises/solutions/my_backend_solved.py``.
"""
from __future__ import annotations

import numpy as np  # noqa: F401  (you will need it)

from sparseconv import coords as C  # noqa: F401  (C.pack_keys, C.unpack_keys: you will want them)
from sparseconv.backends.reference import ReferenceBackend

# Printed by ``python -m sparseconv.verify`` under a failure that came out of one of these kernels.
HINTS = {
    "neighbor_table": "one offset (column) at a time: move every coordinate by it, keep the targets inside the "
                      "grid, pack them (C.pack_keys) and look them up (self.lookup); everything else is -1.",
    "conv_forward": "one offset at a time: kmap.pairs(k) says which input rows feed which output rows; gather "
                    "them, one matrix product with weight[k], scatter-add into the output rows.",
    "transpose_table": "keep every pair under its own offset k and swap its two rows: where neighbors[o, k] is "
                       "input i, the new table holds o at [i, k].",
    "conv_weight_grad": "offset k's forward is one matrix product, gathered inputs @ weight[k]; dW[k] is that "
                        "product's gradient with respect to weight[k].",
    "down_table": "each (input, offset) feeds at most one output, o = (c + padding - offset) / stride when that "
                  "divides exactly and lands inside out_shape; np.unique of the packed (batch, o) keys sorts the "
                  "outputs and tells each pair its output row.",
}


class MyBackend(ReferenceBackend):
    """The reference backend with five kernels to write. Arrays are NumPy (``xp = numpy``)."""

    name = "exercise"

    # --- exercise 1 ------------------------------------------------------------------------------
    def neighbor_table(self, index, coords, spatial_shape, offsets):
        """The neighbour table: which row sits at ``coords[i] + offsets[j]``.

        Args:
            index: the coordinate index of ``coords``' packed keys (``self.build_index``); query it
                with ``self.lookup(index, keys)``: ``(M,) int64`` keys → ``(M,) int32`` rows, -1
                where a key is absent.
            coords: ``(N, 4) int32`` ``[batch, z, y, x]``, in canonical order.
            spatial_shape: ``(D, H, W)``, the grid; valid positions are ``0 <= z < D`` etc.
            offsets: ``(J, 3) int32`` ``(dz, dy, dx)`` displacements.

        Returns:
            ``(N, J) int32``: ``table[i, j]`` = the row whose coordinate is ``coords[i]`` moved by
            ``offsets[j]`` (same batch), or -1 when that position is inactive or outside the grid.

        Hint: check the grid bounds before packing. ``C.pack_keys`` gives each axis 16 bits and
        assumes every coordinate is in ``[0, 65536)``; a coordinate of -1 or 65536 spills into the
        neighbouring axis's bits, and the key no longer names that position.
        """
        raise NotImplementedError("exercise 1 (neighbor_table), the neighbour table of a kernel map")

    # --- exercise 2 ------------------------------------------------------------------------------
    def conv_forward(self, feats, weight, kmap):
        """The sparse convolution, gather - GEMM - scatter.

        Args:
            feats: ``(n_in, Cin)`` float32 or float64, one row per input site.
            weight: ``(K, Cin, Cout)``, same dtype: one ``Cin × Cout`` matrix per kernel offset.
            kmap: a ``sparseconv.kmap.KernelMap``: ``kmap.n_out``, ``kmap.K``, and
                ``kmap.pairs(k)`` → ``(in_rows, out_rows)``, two ``int32`` arrays of equal length:
                input ``in_rows[m]`` feeds output ``out_rows[m]`` through offset ``k``.

        Returns:
            ``(n_out, Cout)`` in ``feats.dtype``: ``out[o] = Σ_k Σ_(i → o) feats[i] @ weight[k]``;
            an output with no pair is zero (the bias is added above the kernel).

        Hint: per offset, gather the input rows, multiply by that offset's weight matrix, and
        scatter-add into the output rows. Within one offset every output row occurs at most once,
        so ``out[out_rows] += ...`` loses nothing.
        """
        raise NotImplementedError("exercise 2 (conv_forward), the convolution: gather - GEMM - scatter")

    # --- exercise 3a ------------------------------------------------------------------------------
    def transpose_table(self, neighbors, n_in):
        """The transposed kernel map's table: the same pairs read from the output side.

        The library computes the input gradient with no kernel of its own:
        ``dX = conv_forward(dY, weight.transpose(0, 2, 1), kmap.transposed())``
        (``sparseconv/functional/conv.py``, ``conv_backward``). Input i fed output o through offset
        k, so dX[i] collects ``dY[o] @ weight[k].T`` — through the *same* offset k. No kernel flip
        is needed because the transposed map keeps each pair under its own offset. (A submanifold
        map is transposed without this kernel, by reversing its columns; down and inverse maps use
        it.)

        Args:
            neighbors: ``(n_out, K) int32`` neighbour table, -1 where there is no pair.
            n_in: the number of input rows.

        Returns:
            ``(n_in, K) int32`` ``table`` with ``table[i, k] = o`` wherever ``neighbors[o, k] = i``,
            -1 elsewhere. (Each input row occurs at most once per offset, so this is well defined.)

        Hint: ``np.nonzero(neighbors >= 0)`` lists every pair as (output row, offset); one fancy-
        indexed assignment then writes them all.
        """
        raise NotImplementedError("exercise 3a (transpose_table), the transposed map dX runs on")

    # --- exercise 3b ------------------------------------------------------------------------------
    def conv_weight_grad(self, feats, grad_out, kmap):
        """The weight gradient of ``conv_forward``.

        Args:
            feats: ``(n_in, Cin)`` float32 or float64, the forward pass's input.
            grad_out: ``(n_out, Cout)``, same dtype: dL/d out.
            kmap: the forward pass's ``KernelMap`` (``kmap.pairs(k)`` as in exercise 2).

        Returns:
            ``(K, Cin, Cout)`` in ``feats.dtype``:
            ``dW[k] = Σ_(i → o) feats[i]ᵀ grad_out[o]`` over the pairs of offset k.

        Hint: offset k's forward is ``out[out_rows] += feats[in_rows] @ W[k]``, one matrix product;
        its weight gradient is the same product's: gathered inputs transposed, times the gathered
        output gradients.
        """
        raise NotImplementedError("exercise 3b (conv_weight_grad), the weight gradient dW")

    # --- exercise 4 ------------------------------------------------------------------------------
    def down_table(self, coords, offsets, stride, padding, out_shape):
        """The kernel map of a strided ("down") convolution, and its output sites.

        Args:
            coords: ``(N, 4) int32`` ``[batch, z, y, x]``, unique, in any row order.
            offsets: ``(K, 3) int32`` window positions ``[0, k)³ · dilation`` (``kmap.window_offsets``).
            stride, padding, out_shape: three ints each (per axis z, y, x).

        Returns:
            ``(out_coords, table)``: ``out_coords (M, 4) int32`` the output sites in canonical order
            (sorted by packed key), ``table (M, K) int32`` with ``table[o, k]`` = the input row that
            feeds output o through offset k, -1 if none.

        The rule (dense-convolution semantics): input i feeds output o through offset k iff
        ``coords[i, 1:] + padding - offsets[k] == o * stride`` on every axis (exact division),
        ``0 <= o < out_shape``, and the batch is the same. The outputs are every o that some input
        feeds.

        Hint: each (input, offset) gives at most one output, so compute all candidates, drop the
        invalid ones, and let ``np.unique`` sort the surviving output keys.
        """
        raise NotImplementedError("exercise 4 (down_table), the kernel map of a strided conv")


# ``python -m sparseconv.verify --plugin <this file>`` registers this object under its name.
backend = MyBackend()
