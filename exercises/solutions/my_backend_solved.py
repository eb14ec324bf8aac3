"""Worked solutions of the exercises in ``exercises/my_backend.py``.

``SolvedBackend`` inherits the skeleton (its docstrings state what each kernel takes and returns)
and fills in all five kernels in plain NumPy. It passes the conformance suite::

    python -m sparseconv.verify --plugin exercises/solutions/my_backend_solved.py --quick

Read a solution after you have tried the exercise; the library's own versions of these kernels are
in ``sparseconv/backends/reference.py`` (NumPy) and ``sparseconv/backends/numba_cpu.py`` (Numba).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from sparseconv import coords as C

# The skeleton is loaded from its file next to this folder (exercises/ is not a package).
_SKELETON_PATH = Path(__file__).resolve().parents[1] / "my_backend.py"
_spec = importlib.util.spec_from_file_location("sparseconv_exercise_skeleton", _SKELETON_PATH)
skeleton = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = skeleton
_spec.loader.exec_module(skeleton)

HINTS = skeleton.HINTS  # the same hints, should a solution be edited into failing


class SolvedBackend(skeleton.MyBackend):
    name = "exercise-solved"

    # --- exercise 1 ------------------------------------------------------------------------------
    def neighbor_table(self, index, coords, spatial_shape, offsets):
        table = np.full((len(coords), len(offsets)), -1, dtype=np.int32)
        shape = np.array(spatial_shape, dtype=np.int64)
        for j, (dz, dy, dx) in enumerate(np.asarray(offsets, dtype=np.int64)):
            target = coords.astype(np.int64) + np.array([0, dz, dy, dx])  # same batch, moved position
            inside = np.all((target[:, 1:] >= 0) & (target[:, 1:] < shape), axis=1)  # before packing
            table[inside, j] = self.lookup(index, C.pack_keys(target[inside]))  # -1 where inactive
        return table

    # --- exercise 2 ------------------------------------------------------------------------------
    def conv_forward(self, feats, weight, kmap):
        out = np.zeros((kmap.n_out, weight.shape[2]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            gathered = feats[in_rows]  # gather: (pairs, Cin)
            out[out_rows] += gathered @ weight[k]  # GEMM, then scatter-add (rows unique within k)
        return out

    # --- exercise 3a ------------------------------------------------------------------------------
    def transpose_table(self, neighbors, n_in):
        table = np.full((n_in, neighbors.shape[1]), -1, dtype=np.int32)
        out_rows, ks = np.nonzero(neighbors >= 0)  # every pair (o, k) of the map
        table[neighbors[out_rows, ks], ks] = out_rows  # the same offset k, read from the input side
        return table

    # --- exercise 3b ------------------------------------------------------------------------------
    def conv_weight_grad(self, feats, grad_out, kmap):
        grad_w = np.zeros((kmap.K, feats.shape[1], grad_out.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            grad_w[k] = feats[in_rows].T @ grad_out[out_rows]  # (Cin, pairs) @ (pairs, Cout)
        return grad_w

    # --- exercise 4 ------------------------------------------------------------------------------
    def down_table(self, coords, offsets, stride, padding, out_shape):
        coords = np.asarray(coords, dtype=np.int64)
        s, p, shape = (np.array(v, dtype=np.int64) for v in (stride, padding, out_shape))
        in_rows, ks, keys = [], [], []
        for k, w in enumerate(np.asarray(offsets, dtype=np.int64)):
            num = coords[:, 1:] + p - w  # = o * s for the output this offset would feed
            o = num // s
            ok = np.all((num % s == 0) & (o >= 0) & (o < shape), axis=1)
            rows = np.flatnonzero(ok)
            in_rows.append(rows)
            ks.append(np.full(len(rows), k))
            keys.append(C.pack_keys(np.c_[coords[rows, :1], o[rows]]))
        in_rows, ks, keys = (np.concatenate(a).astype(np.int64) for a in (in_rows, ks, keys))
        out_keys, out_rows = np.unique(keys, return_inverse=True)  # sorted keys: canonical order
        table = np.full((len(out_keys), len(offsets)), -1, dtype=np.int32)
        table[out_rows.reshape(-1), ks] = in_rows
        return C.unpack_keys(out_keys), table


backend = SolvedBackend()
