"""The backend conformance suite: every convolution, forward and gradients, against dense twins.

One *case* = one op on one random sparse volume. :func:`run_sparse` computes the op with the
selected backend (through the public kernel-map builders and ``functional.conv``), and
:func:`run_dense` computes the same numbers with the dense NumPy twins in ``sparseconv.dense``,
read at the active sites. Tests, ``python -m sparseconv.verify`` and ``benchmarks/gpu_check.py``
all run these same cases, so a backend is held to one standard everywhere.

The dense semantics (DESIGN §2):
  * ``subm``: dense conv (padding r·dilation) of the zero-filled input, read at the active sites.
  * ``depthwise``: the same with a per-channel (groups = C) kernel.
  * ``down``: dense conv3d(k, s, p, d) read at the output sites (in the tiling case k = s the grid
    is first zero-padded at the far end to a multiple of s, which is what ``ceil(D / s)`` means).
  * ``inverse``: dense conv_transpose3d(k, s, p, d) — the adjoint of ``down`` — read at the finer
    level's active sites.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import dense
from ..functional import conv as F
from ..kmap import down_map, inverse_map, submanifold_map
from ..tensor import SparseTensor

OPS = ("subm", "depthwise", "down", "inverse")


@dataclass
class Case:
    """One conformance case. ``coords`` are on the op's *input* grid (the fine grid for inverse)."""
    op: str
    coords: np.ndarray  # (N, 4) int32
    spatial_shape: tuple
    batch_size: int
    cin: int = 3
    cout: int = 4
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    dtype: type = np.float64
    seed: int = 0
    arrays: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; expected one of {OPS}")
        if self.op == "depthwise":
            self.cout = self.cin

    def describe(self) -> str:
        geo = f"k={self.kernel_size}" + (f" s={self.stride} p={self.padding}" if self.op in ("down", "inverse") else "")
        return (f"{self.op} {geo} d={self.dilation} N={len(self.coords)} grid={self.spatial_shape} "
                f"B={self.batch_size} C={self.cin}->{self.cout} {np.dtype(self.dtype).name}")


def _geometry(case):
    return dict(kernel_size=case.kernel_size, stride=case.stride, padding=case.padding, dilation=case.dilation)


def _fine_tensor(case, channels) -> SparseTensor:
    rng = np.random.default_rng(case.seed)
    feats = rng.standard_normal((len(case.coords), channels)).astype(case.dtype)
    return SparseTensor(case.coords, feats, case.spatial_shape, batch_size=case.batch_size)


def _inputs(case):
    """Input tensor, map, output sites, weight and upstream gradient of a case (seeded)."""
    rng = np.random.default_rng(case.seed + 1)
    K = case.kernel_size ** 3
    if case.op in ("subm", "depthwise"):
        x = _fine_tensor(case, case.cin)
        kmap, out_sites = submanifold_map(x, case.kernel_size, case.dilation), x
    elif case.op == "down":
        x = _fine_tensor(case, case.cin)
        kmap, out_sites = down_map(x, **_geometry(case))
    else:  # inverse: the input lives on the coarse sites of a down map of the fine case coords
        fine = _fine_tensor(case, 1)
        _, coarse = down_map(fine, **_geometry(case))
        x = coarse.replace_feats(rng.standard_normal((len(coarse), case.cin)).astype(case.dtype))
        kmap, out_sites = inverse_map(x, **_geometry(case))
    wshape = (K, case.cin) if case.op == "depthwise" else (K, case.cin, case.cout)
    weight = rng.standard_normal(wshape).astype(case.dtype)
    bias = rng.standard_normal(case.cout).astype(case.dtype)
    grad_out = rng.standard_normal((len(out_sites), case.cout)).astype(case.dtype)
    return x, kmap, out_sites, weight, bias, grad_out


def run_sparse(case: Case) -> dict:
    """``{"out", "dx", "dw", "db"}`` of the case on the currently selected backend."""
    x, kmap, _, weight, bias, grad_out = _inputs(case)
    if case.op == "depthwise":
        out = F.depthwise_forward(x.feats, weight, kmap, bias)
        dx, dw, db = F.depthwise_backward(grad_out, x.feats, weight, kmap)
    else:
        out = F.conv_forward(x.feats, weight, kmap, bias)
        dx, dw, db = F.conv_backward(grad_out, x.feats, weight, kmap)
    return {"out": out, "dx": dx, "dw": dw, "db": db}


def dense_weight(weight, k, transpose=False):
    """Sparse weight ``(K, Cin, Cout)`` → PyTorch layout: conv ``(Cout, Cin, k, k, k)``, or the
    transposed-conv layout ``(Cin, Cout, k, k, k)``."""
    cin, cout = weight.shape[1:]
    w = weight.reshape(k, k, k, cin, cout)
    return w.transpose(3, 4, 0, 1, 2) if transpose else w.transpose(4, 3, 0, 1, 2)


def run_dense(case: Case) -> dict:
    """The same numbers as :func:`run_sparse`, from the dense twins read at the active sites."""
    x, _, out_sites, weight, bias, grad_out = _inputs(case)
    k, s, p, d = case.kernel_size, case.stride, case.padding, case.dilation
    xd = x.dense()
    gd = out_sites.replace_feats(grad_out).dense()  # upstream gradient, zero off the active sites
    if case.op == "subm":
        r = (k // 2) * d
        w = dense_weight(weight, k)
        out = dense.conv3d(xd, w, bias, padding=r, dilation=d)
        dxd, dwd, db = dense.conv3d_backward(gd, xd, w, padding=r, dilation=d)
    elif case.op == "depthwise":
        r = (k // 2) * d
        w = weight.reshape(k, k, k, -1).transpose(3, 0, 1, 2)
        out = dense.depthwise_conv3d(xd, w, bias, padding=r, dilation=d)
        dxd, dwd, db = dense.depthwise_conv3d_backward(gd, xd, w, padding=r, dilation=d)
        dwd = dwd.transpose(1, 2, 3, 0)  # back to (k, k, k, C)
    elif case.op == "down":
        xd = _fit(xd, _down_input_shape(x.spatial_shape, out_sites.spatial_shape, case))
        w = dense_weight(weight, k)
        out = dense.conv3d(xd, w, bias, stride=s, padding=p, dilation=d)
        dxd, dwd, db = dense.conv3d_backward(gd, xd, w, stride=s, padding=p, dilation=d)
    else:  # the adjoint of the down conv, on the grid that down conv read
        w = dense_weight(weight, k, transpose=True)
        fine_in = _down_input_shape(out_sites.spatial_shape, x.spatial_shape, case)
        full = [(c - 1) * s - 2 * p + d * (k - 1) + 1 for c in x.spatial_shape]
        out_pad = [f - t for f, t in zip(fine_in, full)]  # in [0, s): what the down conv floored away
        out = dense.conv_transpose3d(xd, w, bias, stride=s, padding=p, dilation=d, output_padding=out_pad)
        out = _fit(out, out_sites.spatial_shape)
        dxd, dwd, db = dense.conv_transpose3d_backward(_fit(gd, fine_in), xd, w, stride=s, padding=p, dilation=d)
        dwd = dwd.transpose(2, 3, 4, 0, 1)  # (Cin, Cout, k, k, k) → (k, k, k, Cin, Cout)
    if case.op in ("subm", "down"):
        dwd = dwd.transpose(2, 3, 4, 1, 0)  # (Cout, Cin, k, k, k) → (k, k, k, Cin, Cout)
    return {"out": _at(out, out_sites), "dx": _at(dxd, x), "dw": dwd.reshape(weight.shape), "db": db}


def _at(dense_array, sites: SparseTensor):
    b, z, y, x = sites.coords.T
    return dense_array[b, :, z, y, x]


def _down_input_shape(fine_shape, coarse_shape, case):
    """Grid the dense down conv reads: in the tiling case (k = s) the fine grid zero-padded at the
    far end to ``s · ceil(D / s)``, which is what the sparse ``ceil`` convention means."""
    k, s, p, d = case.kernel_size, case.stride, case.padding, case.dilation
    if k == s and p == 0 and d == 1:
        return [c * s for c in coarse_shape]
    return list(fine_shape)


def _fit(a, shape):
    """Crop or zero-pad the spatial axes of ``(B, C, ...)`` at the far end to ``shape``."""
    a = a[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)]
    return np.pad(a, [(0, 0), (0, 0)] + [(0, n - c) for n, c in zip(shape, a.shape[2:])])


def max_relative_errors(got: dict, want: dict) -> dict:
    """Per quantity: ``max|got − want| / max(1, max|want|)`` (relative to the output's scale)."""
    errs = {}
    for key in want:
        g, w = np.asarray(got[key], dtype=np.float64), np.asarray(want[key], dtype=np.float64)
        if g.shape != w.shape:
            errs[key] = np.inf
            continue
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        errs[key] = float(np.abs(g - w).max(initial=0.0)) / scale
    return errs
