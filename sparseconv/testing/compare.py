"""How far a backend's result is from an oracle's, and how far it may be (the tolerance table).

Two oracles, two measures:

* the **dense twins** (``sparseconv.dense``), float64 only: ``max|got − want| / max(1, max|want|)``
  per array (:func:`max_relative_errors`); exact up to the order of the sums;
* the **NumPy reference backend**: ``‖got − want‖ / ‖want‖`` (:func:`relative_norm_error`); backends
  sum in another order, so agreement is to the dtype's round-off, not bitwise.

Integer results (indices, tables) must equal the reference's exactly; any result must equal its own
repeat bitwise (determinism). Arrays may live on a GPU: every function here brings them to the host.
"""
from __future__ import annotations

import numpy as np

from ..device import to_device

# (dtype, op) -> the largest relative error accepted. op "conv": the four convolutions run through the
# kernel-map builders and sparseconv.functional (float64 against the dense twins, float32 against the
# reference); op "kernel": one kernel of the backend interface called directly (against the reference).
TOLERANCES = {
    ("float64", "conv"): 1e-10,
    ("float32", "conv"): 1e-5,
    ("float64", "kernel"): 1e-12,
    ("float32", "kernel"): 1e-5,
}


def tolerance(dtype, op: str = "kernel") -> float:
    """The entry of :data:`TOLERANCES` for ``dtype`` (float32 or float64) and ``op`` ("conv" or "kernel")."""
    return TOLERANCES[(np.dtype(dtype).name, op)]


def _host(a) -> np.ndarray:
    """``a`` as a NumPy array: :func:`sparseconv.device.to_device` to ``"cpu"``."""
    return np.asarray(to_device(a, "cpu"))


def max_relative_error(got, want) -> float:
    """``max|got − want| / max(1, max|want|)`` in float64 (NaN if ``got`` holds NaN; inf on a shape
    mismatch — callers that report shapes check them first)."""
    g, w = np.asarray(_host(got), dtype=np.float64), np.asarray(_host(want), dtype=np.float64)
    if g.shape != w.shape:
        return np.inf
    scale = max(1.0, float(np.abs(w).max(initial=0.0)))
    return float(np.abs(g - w).max(initial=0.0)) / scale


def max_relative_errors(got: dict, want: dict) -> dict:
    """:func:`max_relative_error` per key of ``want``."""
    return {key: max_relative_error(got[key], want[key]) for key in want}


def relative_norm_error(got, want) -> float:
    """``‖got − want‖ / ‖want‖`` in float64 (NaN if ``got`` holds NaN; inf on a shape mismatch;
    ``‖want‖`` floored at 1e-30)."""
    got, want = _host(got), _host(want)
    if got.shape != want.shape:
        return np.inf
    scale = max(float(np.linalg.norm(want.astype(np.float64))), 1e-30)
    return float(np.linalg.norm(got.astype(np.float64) - want.astype(np.float64))) / scale


def bitwise_equal(a, b) -> bool:
    """Same shape, dtype and bytes (so ``-0.0 != 0.0`` and equal NaNs count as equal)."""
    a, b = np.ascontiguousarray(_host(a)), np.ascontiguousarray(_host(b))
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def _same_layout(got, want, what):
    """``got`` on the host and ``want``, after checking they have one shape and one dtype."""
    got, want = _host(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != reference {want.dtype}"
    return got, want


def assert_same_ints(got, want, what):
    """Integer arrays: same shape, dtype and every entry (the first difference is named)."""
    got, want = _same_layout(got, want, what)
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)[0]
        raise AssertionError(f"{what}: differs from the reference at {tuple(bad)}: {got[tuple(bad)]} != "
                             f"{want[tuple(bad)]} ({int((got != want).sum())} entries differ)")


def assert_close(got, want, what):
    """Floating arrays: same shape and dtype, finite, within the kernel tolerance of ``want``'s dtype."""
    got, want = _same_layout(got, want, what)
    assert np.isfinite(got).all(), f"{what}: non-finite entries at {np.argwhere(~np.isfinite(got))[:3].tolist()}"
    err, rtol = relative_norm_error(got, want), tolerance(want.dtype, "kernel")
    assert err <= rtol, f"{what}: |got - ref| / |ref| = {err:.3e} > {rtol:.0e}"


def assert_bitwise(a, b, what):
    """Two runs of one kernel, any shape and dtype: bitwise equal (determinism)."""
    assert bitwise_equal(a, b), f"{what}: two runs differ bitwise (not deterministic)"
