"""Painting the thin tissue in the fat between the organs (``varied-fascia``): septa, the renal
fascia and small vessels.

Painted last, on the finished tissue map (kidneys, lesions and labels already in place), and only
over fat (septa in both fats, the rest in the visceral fat), so no label changes and every organ keeps its shape. Every draw comes from the
:class:`~kidney.phantom.appearance.Fascia`'s own seed: the rest of the scan keeps its bits.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy
from .appearance import Fascia, Look
from .body import _kidney_centre
from .canvas import _Canvas, _paint_tube, grown_box
from .render import smooth_noise
from .tissues import T

_FAT = T["visceral_fat"]


def _paint_septa(cv: _Canvas, fascia: Fascia, rng) -> None:
    """Septa in the visceral and the subcutaneous fat: the band ``|f| < w`` of a smooth unit field,
    ``w`` chosen so the band holds ``septa_share`` of a Gaussian field's values
    (``P(|f| < w) ≈ 2 w / sqrt(2 pi)`` for small w)."""
    field = smooth_noise(rng, cv.tissue.shape, cv.fine_spacing, fascia.septa_mm)
    w = fascia.septa_share * math.sqrt(2.0 * math.pi) / 2.0
    fat = (cv.tissue == _FAT) | (cv.tissue == T["subcutaneous_fat"])
    cv.tissue[(np.abs(field) < w) & fat] = fascia.tissue


def _paint_renal_fascia(cv: _Canvas, look: Look, fascia: Fascia, rng) -> None:
    """A shell ``gerota_thick_mm`` thick at ``gerota_mm`` outside the labelled kidney (every label
    counts: a tumour bulging out is inside the fascia too), in the fat, broken into patches."""
    fine_spacing = cv.fine_spacing
    outer = fascia.gerota_mm + fascia.gerota_thick_mm
    kidney = look.label[cv.tissue] > 0
    box = grown_box(kidney, outer, fine_spacing)
    if box is None:
        return
    dist = ndimage.distance_transform_edt(~kidney[box], sampling=fine_spacing)
    shell = (dist > fascia.gerota_mm) & (dist <= outer)
    patches = smooth_noise(rng, shell.shape, fine_spacing, 15.0)
    shell &= patches > np.quantile(patches, 1.0 - fascia.gerota_keep)
    view = cv.tissue[box]
    view[shell & ((view == _FAT) | (view == fascia.tissue))] = fascia.tissue


def _paint_small_vessels(cv: _Canvas, an: Anatomy, fascia: Fascia, rng) -> None:
    """Small vessels: random walks of 8 steps of 10 mm from within 60 mm of a kidney's centre,
    radius 1–3 mm, the vein's tissue, over fat and septa only."""
    for _ in range(fascia.n_vessels):
        side = "right" if rng.random() < 0.5 else "left"
        points = [_kidney_centre(an, side) + rng.uniform(-60, 60, size=3)]
        for _ in range(8):
            step = rng.normal(size=3)
            points.append(points[-1] + 10.0 * step / np.linalg.norm(step))
        _paint_tube(cv, T["vein"], points, float(rng.uniform(1.0, 3.0)), over=(_FAT, fascia.tissue))


def paint_fascia(cv: _Canvas, an: Anatomy, look: Look) -> None:
    """Paint ``look.fascia`` (septa, renal fascia, small vessels) on ``cv``; nothing when None."""
    fascia = look.fascia
    if fascia is None:
        return
    rng = np.random.default_rng(fascia.seed)
    _paint_septa(cv, fascia, rng)
    if fascia.gerota_mm is not None:
        _paint_renal_fascia(cv, look, fascia, rng)
    _paint_small_vessels(cv, an, fascia, rng)
