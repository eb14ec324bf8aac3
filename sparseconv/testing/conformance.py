"""The backend conformance suite: every convolution, forward and gradients, against dense twins.

One *case* = one op on one random sparse volume. :func:`run_sparse` computes the op with the
selected backend (through the public kernel-map builders and ``functional.conv``), and
:func:`run_dense` computes the same numbers with the dense NumPy twins in ``sparseconv.dense``,
read at the active sites. :func:`standard_cases` is the fixed, deterministic list (every op ×
layout × geometry) that :mod:`sparseconv.testing.suite` puts in front of the kernel-level checks,
so the tests, ``python -m sparseconv.verify`` and ``benchmarks/gpu_check.py`` hold a backend to one
standard; the hypothesis strategies in :mod:`sparseconv.testing.strategies` draw from the same
layouts and geometries. Nothing here needs hypothesis, so ``verify`` works on a plain install.

The dense semantics (docs/design.md, Conventions):
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
from ..backends import get_backend, use_backend
from ..device import to_device
from ..functional import conv as F
from ..kmap import down_map, down_output_shape, inverse_map, submanifold_map
from ..tensor import SparseTensor
from .compare import max_relative_errors  # noqa: F401 - the measure the cases are judged by, kept here too

OPS = ("subm", "depthwise", "down", "inverse")
LAYOUTS = ("random", "empty", "single", "full", "boundary")

# (kernel_size, stride, padding, dilation) of strided convs: the U-Net k2 s2 and general ones
STRIDED = [(2, 2, 0, 1), (3, 2, 1, 1), (3, 2, 0, 1), (3, 1, 1, 1), (2, 1, 0, 1), (1, 2, 0, 1),
           (3, 2, 1, 2), (3, 3, 0, 1)]
# (kernel_size, stride, padding, dilation) of submanifold convs
CENTRED = [(k, 1, 0, d) for k in (1, 3, 5) for d in (1, 2)]


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
    layout: str = ""  # the layout of LAYOUTS the sites were drawn from, when known

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; expected one of {OPS}")
        if self.op == "depthwise":
            self.cout = self.cin

    def describe(self) -> str:
        geo = f"k={self.kernel_size}" + (f" s={self.stride} p={self.padding}" if self.op in ("down", "inverse") else "")
        return (f"{self.op} {geo} d={self.dilation} N={len(self.coords)} grid={self.spatial_shape} "
                f"B={self.batch_size} C={self.cin}->{self.cout} {np.dtype(self.dtype).name}")

    @property
    def name(self) -> str:
        """A short unique name among the standard cases, e.g. ``subm_random_k3_s1_p0_d1``."""
        return f"{self.op}_{self.layout}_k{self.kernel_size}_s{self.stride}_p{self.padding}_d{self.dilation}"

    @property
    def label(self) -> str:
        """How a report names the case: its description and seed."""
        return f"{self.describe()} seed={self.seed}"


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


def run_sparse(case: Case, backend=None) -> dict:
    """``{"out", "dx", "dw", "db"}`` of the case on ``backend`` (a name or a backend object; default
    the selected one), as NumPy arrays.

    The case's arrays are moved to the backend's ``xp`` first, so a GPU backend computes on the
    device; the results are brought back to the host.
    """
    with use_backend(get_backend() if backend is None else backend) as be:
        got = _run_sparse(case, be.xp)
    return {key: to_device(val, "cpu") for key, val in got.items()}


def _run_sparse(case, xp):
    x, kmap, _, weight, bias, grad_out = _inputs(case)
    feats = x.feats
    if xp is not np:
        feats, weight, bias, grad_out = (xp.asarray(a) for a in (feats, weight, bias, grad_out))
    if case.op == "depthwise":
        out = F.depthwise_forward(feats, weight, kmap, bias)
        dx, dw, db = F.depthwise_backward(grad_out, feats, weight, kmap)
    else:
        out = F.conv_forward(feats, weight, kmap, bias)
        dx, dw, db = F.conv_backward(grad_out, feats, weight, kmap)
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


def mask_of(layout: str, batch: int, shape, rng, density=0.3) -> np.ndarray:
    """``(B, D, H, W)`` bool mask of active voxels for a named layout (see :data:`LAYOUTS`)."""
    mask = np.zeros((batch,) + tuple(shape), dtype=bool)
    if layout == "random":
        mask = rng.random(mask.shape) < density
    elif layout == "single":
        mask[tuple(rng.integers(0, n) for n in mask.shape)] = True
    elif layout == "full":
        mask[:] = True
    elif layout == "boundary":  # every face, edge and corner voxel, nothing inside
        mask[:] = True
        mask[(slice(None),) + tuple(slice(1, n - 1) for n in shape)] = False
    elif layout != "empty":
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return mask


def fits(shape, k, s, p, d) -> bool:
    """True if a strided conv ``(k, s, p, d)`` leaves at least one output on grid ``shape``."""
    try:
        down_output_shape(shape, k, s, p, d)
        return True
    except ValueError:
        return False


def standard_cases(seed: int = 0, quick: bool = False) -> list:
    """The fixed conformance cases: every op × layout × geometry, float64, seeded.

    Submanifold and depthwise ops run k ∈ {1, 3, 5} × dilation {1, 2}; down and inverse ops every
    geometry of :data:`STRIDED`; each on every layout of :data:`LAYOUTS` (random at density 0.05,
    0.3 or 0.9, empty, a single voxel, the full grid, only the boundary), batch 1–3, channels 1–8,
    odd, even and flat grids. ``quick`` keeps every op and geometry but only the random and
    boundary layouts (about a third of the cases).
    """
    rng = np.random.default_rng(seed)
    shapes = [(5, 6, 7), (4, 4, 4), (7, 3, 6), (1, 5, 2)]
    cases = []
    for op in OPS:
        geometries = CENTRED if op in ("subm", "depthwise") else STRIDED
        for layout in LAYOUTS:
            for i, (k, s, p, d) in enumerate(geometries):
                shape = shapes[(i + len(cases)) % len(shapes)]
                if s > 1 or op in ("down", "inverse"):
                    if not fits(shape, k, s, p, d):
                        shape = (6, 7, 5)
                batch = int(rng.integers(1, 4))
                density = float(rng.choice([0.05, 0.3, 0.9]))
                coords = np.argwhere(mask_of(layout, batch, shape, rng, density)).astype(np.int32)
                cases.append(Case(op, coords, shape, batch, int(rng.integers(1, 9)), int(rng.integers(1, 9)),
                                  k, s, p, d, np.float64, int(rng.integers(0, 2**31 - 1)), layout=layout))
    if quick:  # the same cases (same seeds), fewer of them
        cases = [c for c in cases if c.layout in ("random", "boundary")]
    return cases
