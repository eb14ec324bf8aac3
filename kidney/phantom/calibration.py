"""Calibration helpers: tissue HU statistics of a real CT and of a phantom, structure by structure."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from .synthetic import Phantom
from .tissues import TISSUE_ID


def tissue_statistics(hu: np.ndarray, masks: Dict[str, np.ndarray],
                      erode: int = 1) -> Dict[str, Dict[str, float]]:
    """Per-structure HU statistics: ``{name: {n, mean, sd, p5, p50, p95}}``.

    Each mask is eroded ``erode`` times (6-connectivity) first, to measure tissue rather than its
    partial-volume rim; masks that erode away fall back to their unEroded voxels.
    """
    hu = np.asarray(hu, dtype=np.float64)
    out = {}
    for name, mask in masks.items():
        m = np.asarray(mask, dtype=bool)
        if erode:
            e = ndimage.binary_erosion(m, iterations=erode)
            m = e if e.sum() >= 20 else m
        v = hu[m]
        if v.size == 0:
            continue
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        out[name] = dict(n=int(v.size), mean=float(v.mean()), sd=float(v.std()), p5=float(p5),
                         p50=float(p50), p95=float(p95))
    return out


# Real-CT structures (TotalSegmentator label values in data/totalseg_example) and the phantom
# tissues they are compared with. "fat" and "air" have no label there: fat = unlabelled body voxels
# in [-200, -30] HU, air = voxels outside the body (largest component of HU > -500, filled).
CALIBRATION_MAP: Dict[str, Tuple[Tuple[int, ...], Tuple[str, ...]]] = {
    "liver": ((5,), ("liver",)),
    "spleen": ((1,), ("spleen",)),
    "kidney": ((2, 3), ("renal_cortex", "renal_medulla", "collecting_system")),
    "muscle": ((86, 87, 88, 89), ("muscle",)),
    "aorta": ((52,), ("artery",)),
    "inferior_vena_cava": ((63,), ("vein",)),
    "gallbladder": ((4,), ("gallbladder",)),
    "vertebrae": ((30, 31, 32), ("cancellous_bone",)),
    "spinal_canal": ((79,), ("spinal_canal",)),
    "small_bowel": ((18,), ("bowel_wall", "bowel_fluid")),
    "lung": ((10, 11, 14), ("lung",)),
    "fat": ((), ("subcutaneous_fat", "visceral_fat")),
    "air": ((), ("air",)),
}


def texture_correlation(hu: np.ndarray, mask: np.ndarray, lags=(1, 2, 4, 8),
                        erode: int = 2) -> Dict[int, float]:
    """In-plane autocorrelation of HU inside a structure: ``{lag: r}`` for lags in voxels.

    ``r(lag)`` is the covariance of the pairs of (eroded) mask voxels ``lag`` apart along y or x,
    over the variance of all of them — how far the structure's texture stays alike. White noise
    gives about 0 beyond one voxel; a smooth, uneven organ keeps ``r`` up at long lags. A lag
    with fewer than 100 pairs is NaN.
    """
    hu = np.asarray(hu, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if erode:
        m = ndimage.binary_erosion(m, iterations=erode)
    v = hu[m]
    if v.size < 2:
        return {lag: float("nan") for lag in lags}
    mu, var = v.mean(), max(v.var(), 1e-12)
    out = {}
    for lag in lags:
        s, n = 0.0, 0
        for axis in (1, 2):
            a = tuple(slice(None, -lag) if k == axis else slice(None) for k in range(3))
            b = tuple(slice(lag, None) if k == axis else slice(None) for k in range(3))
            pair = m[a] & m[b]
            s += float(((hu[a][pair] - mu) * (hu[b][pair] - mu)).sum())
            n += int(pair.sum())
        out[lag] = s / n / var if n >= 100 else float("nan")
    return out


FAT_DETAIL_BINS = ((-60.0, -30.0), (-30.0, 20.0), (20.0, 100.0), (-30.0, np.inf))


def fat_detail(hu: np.ndarray, kidney: np.ndarray, spacing, reach_mm: float = 40.0) -> Dict[str, float]:
    """How much of the fat near the kidneys is not plain fat.

    The fat is taken where its surroundings are fat: voxels within ``reach_mm`` of ``kidney``
    (bool, same grid), not kidney themselves, whose in-plane 5 × 5 median lies in [−200, −60) HU.
    Returns ``{"n": voxels, "[lo, hi)": share of them with HU in that bin}`` for
    :data:`FAT_DETAIL_BINS` (the last: every voxel from −30 HU up, soft tissue in the fat).
    Plain fat with noise puts about nothing at −30 HU and above; septa, fascia and small vessels do.
    """
    hu = np.asarray(hu, dtype=np.float32)
    kidney = np.asarray(kidney, dtype=bool)
    near = ndimage.distance_transform_edt(~kidney, sampling=spacing) <= reach_mm
    median = ndimage.median_filter(hu, size=(1, 5, 5))
    v = hu[near & ~kidney & (median >= -200) & (median < -60)]
    out = {"n": int(v.size)}
    for lo, hi in FAT_DETAIL_BINS:
        out[f"[{lo:g}, {hi:g})"] = float(np.mean((v >= lo) & (v < hi))) if v.size else float("nan")
    return out


def _body_mask(hu: np.ndarray) -> np.ndarray:
    comp, n = ndimage.label(hu > -500)
    if n == 0:
        return np.zeros(hu.shape, bool)
    body = comp == 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


def real_ct_masks(hu: np.ndarray, seg: np.ndarray) -> Dict[str, np.ndarray]:
    """Masks of the :data:`CALIBRATION_MAP` structures on the real CT (``hu``, ``seg`` on one
    grid)."""
    body = _body_mask(hu)
    out = {}
    for name, (values, _) in CALIBRATION_MAP.items():
        if name == "fat":
            out[name] = body & (seg == 0) & (hu >= -200) & (hu <= -30)
        elif name == "air":
            out[name] = ~ndimage.binary_dilation(body, iterations=2)
        else:
            out[name] = np.isin(seg, values)
    return out


def phantom_masks(ph: Phantom) -> Dict[str, np.ndarray]:
    """Masks of the :data:`CALIBRATION_MAP` structures on a phantom (from its tissue map)."""
    return {name: np.isin(ph.tissue, [TISSUE_ID[t] for t in tissues])
            for name, (_, tissues) in CALIBRATION_MAP.items()}
