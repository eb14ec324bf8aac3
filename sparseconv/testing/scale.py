"""The scale tier: the float32 kernels at 10^5–10^6 rows and up to 64 channels, against float64 truth.

The other checks compare float32 with the float32 reference at a few thousand rows, where any sane
summation order agrees to 1e-5. Error that grows with the number of rows — a prefix scan whose
round-off is set by everything before a segment, a sum in one long float32 chain — only shows at
scale, and only against ground truth. Each check here runs one kernel on float32 inputs and the
reference on the same values in float64 (the truth), and measures each output's error in one of three
ways (``MEASURES``):

* ``sum`` — outputs that are sums of many products (the convolutions, their weight gradients,
  ``segment_sum``, ``gw``/``gb``, ``dγ``/``dβ``): ``max |got − truth| / Σ|terms|`` entry by entry,
  where ``Σ|terms|`` is the same kernel run in float64 on the absolute values of its inputs. This is
  the error a summation is judged by (Higham, *Accuracy and Stability of Numerical Algorithms*, §4):
  it does not blow up where the terms cancel, and it does not forgive a summation whose round-off
  grows with the length of the array.
* ``value`` — row-wise and elementwise outputs of order one (GELU, normalised rows, ``dx``):
  ``max |got − truth| / max(|truth|, 1)``.
* ``relative`` — positive scales (``rstd``, the GRN norms ``G``): ``max |got − truth| / |truth|``.

Every output has a budget (:data:`BUDGETS`, a multiple of the float32 unit round-off ``u = 2⁻²⁴``);
a check raises ``AssertionError`` naming every output over its budget, and returns
``{output: (error, budget)}`` for the report.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import kmap as KM
from ..backends import use_backend
from ..backends.reference import backend as REF
from ..device import to_device
from ..tensor import SparseTensor

U = 2.0 ** -24  # float32 unit round-off

# output -> (measure, budget). The shipped backends' measured errors are in docs/backends.md.
BUDGETS = {
    "conv_forward": ("sum", 32 * U),
    "conv_forward dX": ("sum", 32 * U),
    "conv_weight_grad": ("sum", 32 * U),
    "depthwise_forward": ("sum", 32 * U),
    "depthwise_forward dX": ("sum", 32 * U),
    "depthwise_weight_grad": ("sum", 32 * U),
    "segment_sum": ("sum", 32 * U),
    "gelu": ("value", 64 * U),
    "gelu_grad": ("value", 64 * U),
    "layer_norm y": ("value", 64 * U),
    "layer_norm xhat": ("value", 64 * U),
    "layer_norm rstd": ("relative", 64 * U),
    "layer_norm_grad gx": ("value", 64 * U),
    "layer_norm_grad gw": ("sum", 32 * U),
    "layer_norm_grad gb": ("sum", 32 * U),
    "grn y": ("sum", 512 * U),
    "grn G": ("relative", 512 * U),
    "grn_grad dx": ("value", 64 * U),
    "grn_grad dgamma": ("sum", 32 * U),
    "grn_grad dbeta": ("sum", 32 * U),
}
MEASURES = ("sum", "value", "relative")


def error(got, truth, measure: str, magnitude=None) -> float:
    """The error of ``got`` against ``truth`` (float64) by ``measure``; ``magnitude`` is ``Σ|terms|``
    (measure ``"sum"``). NaN if ``got`` holds NaN; inf if an entry is wrong where the scale is 0."""
    got = np.asarray(to_device(got, "cpu"), dtype=np.float64)
    diff = np.abs(got - truth)
    if measure == "sum":
        scale = magnitude
    elif measure == "value":
        scale = np.maximum(np.abs(truth), 1.0)
    else:
        scale = np.abs(truth)
    if diff.size == 0:
        return 0.0
    if np.isnan(diff).any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / scale)
    return float(ratio.max())


class _Judge:
    """Collects ``{output: (error, budget)}`` and the outputs over budget (or of the wrong shape or dtype)."""

    def __init__(self):
        self.errors, self.bad = {}, []

    def __call__(self, name, got, truth, magnitude=None):
        measure, budget = BUDGETS[name]
        host = np.asarray(to_device(got, "cpu"))
        if host.shape != truth.shape:
            self.bad.append(f"{name} shape {host.shape} != {truth.shape}")
            return
        if host.dtype != np.float32:
            self.bad.append(f"{name} is {host.dtype}, not float32")
        err = error(host, truth, measure, magnitude)
        self.errors[name] = (err, budget)
        if not err <= budget:  # NaN fails too
            self.bad.append(f"{name} error {err:.1e} > budget {budget:.1e} ({measure})")

    def verdict(self) -> dict:
        if self.bad:
            raise OverBudget("; ".join(self.bad), self.errors)
        return self.errors


class OverBudget(AssertionError):
    """Some output of a scale check is over its budget; ``errors`` holds every output's ``(error, budget)``."""

    def __init__(self, message: str, errors: dict):
        super().__init__(message)
        self.errors = errors


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _abs64(*arrays):
    return [None if a is None else np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]


# --- inputs ------------------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def scale_map(n_sites: int, seed: int = 0):
    """A submanifold k=3 map on about ``n_sites`` random sites (density 0.4, one sample), built by the
    reference."""
    side = int(round((n_sites / 0.4) ** (1 / 3)))
    rng = np.random.default_rng(seed)
    coords = np.argwhere(rng.random((side, side, side)) < 0.4).astype(np.int32)
    coords = np.concatenate([np.zeros((len(coords), 1), np.int32), coords], axis=1)
    x = SparseTensor(coords, np.zeros((len(coords), 1), np.float32), (side, side, side), batch_size=1)
    with use_backend("reference"):
        kmap = KM.submanifold_map(x, 3, 1)
        kmap.pairs(0)
        kmap.transposed().pairs(0)
    return kmap


def _normal(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


# --- checks ------------------------------------------------------------------------------------------

def check_scale_conv(be, n_sites: int, cin: int, cout: int, seed: int = 0):
    """conv_forward, its input gradient (on the transposed map, with Wᵀ) and conv_weight_grad."""
    kmap = scale_map(n_sites, seed)
    rng = np.random.default_rng(seed + 1)
    feats, weight, grad = _normal(rng, kmap.n_in, cin), _normal(rng, kmap.K, cin, cout), _normal(rng, kmap.n_out, cout)
    wt = np.ascontiguousarray(weight.transpose(0, 2, 1))
    judge = _Judge()
    f, w, g, t = (*_f64(feats, weight, grad, wt),)
    af, aw, ag, at = (*_abs64(feats, weight, grad, wt),)
    tmap = kmap.transposed()
    judge("conv_forward", be.conv_forward(feats, weight, kmap), REF.conv_forward(f, w, kmap),
          REF.conv_forward(af, aw, kmap))
    judge("conv_forward dX", be.conv_forward(grad, wt, tmap), REF.conv_forward(g, t, tmap),
          REF.conv_forward(ag, at, tmap))
    judge("conv_weight_grad", be.conv_weight_grad(feats, grad, kmap), REF.conv_weight_grad(f, g, kmap),
          REF.conv_weight_grad(af, ag, kmap))
    return judge.verdict()


def check_scale_depthwise(be, n_sites: int, channels: int, seed: int = 0):
    """depthwise_forward, its input gradient and depthwise_weight_grad."""
    kmap = scale_map(n_sites, seed)
    rng = np.random.default_rng(seed + 2)
    feats, weight, grad = (_normal(rng, kmap.n_in, channels), _normal(rng, kmap.K, channels),
                           _normal(rng, kmap.n_out, channels))
    judge = _Judge()
    f, w, g = _f64(feats, weight, grad)
    af, aw, ag = _abs64(feats, weight, grad)
    tmap = kmap.transposed()
    judge("depthwise_forward", be.depthwise_forward(feats, weight, kmap), REF.depthwise_forward(f, w, kmap),
          REF.depthwise_forward(af, aw, kmap))
    judge("depthwise_forward dX", be.depthwise_forward(grad, weight, tmap), REF.depthwise_forward(g, w, tmap),
          REF.depthwise_forward(ag, aw, tmap))
    judge("depthwise_weight_grad", be.depthwise_weight_grad(feats, grad, kmap),
          REF.depthwise_weight_grad(f, g, kmap), REF.depthwise_weight_grad(af, ag, kmap))
    return judge.verdict()


def segments(n_rows: int, n_segments: int, seed: int) -> np.ndarray:
    """``(S+1,) int64`` boundaries of ``n_segments`` segments of random lengths covering ``n_rows`` rows."""
    cuts = np.sort(np.random.default_rng(seed).integers(0, n_rows + 1, n_segments - 1))
    return np.concatenate([[0], cuts, [n_rows]]).astype(np.int64)


def check_scale_segment_sum(be, n_rows: int, n_segments: int, channels: int, seed: int = 0):
    """segment_sum over ``n_segments`` samples of random lengths."""
    rng = np.random.default_rng(seed)
    values = _normal(rng, n_rows, channels)
    seg_ptr = segments(n_rows, n_segments, seed + 1)
    judge = _Judge()
    judge("segment_sum", be.segment_sum(be.xp.asarray(values), be.xp.asarray(seg_ptr)),
          REF.segment_sum(*_f64(values), seg_ptr), REF.segment_sum(*_abs64(values), seg_ptr))
    return judge.verdict()


def check_scale_pointwise(be, n_rows: int, channels: int, n_segments: int, seed: int = 0):
    """gelu, gelu_grad, layer_norm, layer_norm_grad, grn, grn_grad (``n_segments`` samples)."""
    rng = np.random.default_rng(seed)
    x, g = 3 * _normal(rng, n_rows, channels), _normal(rng, n_rows, channels)
    w, b = _normal(rng, channels), _normal(rng, channels)
    seg_ptr = segments(n_rows, n_segments, seed + 1)
    xp = be.xp
    xd, gd, wd, bd = (xp.asarray(a) for a in (x, g, w, b))
    x64, g64, w64, b64 = _f64(x, g, w, b)
    judge = _Judge()
    judge("gelu", be.gelu(xd), REF.gelu(x64))
    judge("gelu_grad", be.gelu_grad(xd, gd), REF.gelu_grad(x64, g64))
    got = be.layer_norm(xd, wd, bd, 1e-6)
    y, xhat, rstd = REF.layer_norm(x64, w64, b64, 1e-6)
    for name, a, want in zip(("y", "xhat", "rstd"), got, (y, xhat, rstd)):
        judge(f"layer_norm {name}", a, want)
    # the gradient from the float32 saved values (as a network calls it), truth from the same values
    xhat32, rstd32 = (np.asarray(to_device(a, "cpu")) for a in got[1:])
    got = be.layer_norm_grad(gd, xp.asarray(xhat32), xp.asarray(rstd32), wd)
    xh64, rs64 = _f64(xhat32, rstd32)
    want = REF.layer_norm_grad(g64, xh64, rs64, w64)
    mag = REF.layer_norm_grad(*_abs64(g, xhat32), rs64, np.abs(w64))
    judge("layer_norm_grad gx", got[0], want[0])
    judge("layer_norm_grad gw", got[1], want[1], mag[1])
    judge("layer_norm_grad gb", got[2], want[2], mag[2])
    got = be.grn(xd, wd, bd, xp.asarray(seg_ptr), 1e-6)
    y, G = REF.grn(x64, w64, b64, seg_ptr, 1e-6)
    # y = x·(γ·Nx + 1) + β; its Σ|terms| is the same kernel on |x|, |γ|, |β| (Nx does not change)
    judge("grn y", got[0], y, REF.grn(*_abs64(x, w, b), seg_ptr, 1e-6)[0])
    judge("grn G", got[1], G)
    G32 = np.asarray(to_device(got[1], "cpu"))
    got = be.grn_grad(gd, xd, wd, xp.asarray(G32), xp.asarray(seg_ptr), 1e-6)
    G64 = G32.astype(np.float64)
    want = REF.grn_grad(g64, x64, w64, G64, seg_ptr, 1e-6)
    # Σ|terms|: dγ = Σ_s (Σ_rows grad·x)_s · Nx_s with Nx ≥ 0, dβ = Σ_rows grad: the same kernel
    # on |grad|, |x|
    mag = REF.grn_grad(*_abs64(g, x), w64, G64, seg_ptr, 1e-6)
    judge("grn_grad dx", got[0], want[0])
    judge("grn_grad dgamma", got[1], want[1], mag[1])
    judge("grn_grad dbeta", got[2], want[2], mag[2])
    return judge.verdict()
