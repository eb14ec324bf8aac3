"""Painting synthetic kidneys (cortex, pyramids, sinus, collecting system, vessels) and their lesions."""
from __future__ import annotations

import numpy as np

from .anatomy import Anatomy, KidneySpec, Lesion
from .canvas import _Canvas, _lumps, _paint_ellipsoid, _paint_tube
from .appearance import Look
from .tissues import TISSUES, T, _BONES, _CAVITY


def _paint_kidney(cv: _Canvas, an: Anatomy, k: KidneySpec, rng) -> None:
    R, c, r = k.rotation, k.centre, np.array(k.radii)
    lumps = _lumps(rng, amp=0.03)
    _paint_ellipsoid(cv, T["visceral_fat"], c, tuple(r + (14, 12, 12)), R,
                     over=tuple(i for i in _CAVITY if i not in (T["artery"], T["vein"])))
    hilum = np.array(c) + R @ np.array([0.0, 1.05 * r[1], 0.0])
    sign = -1.0 if k.side == "right" else 1.0
    aorta, ivc = (hilum[0], an.y_spine - 30, an.cx + 12), (hilum[0], an.y_spine - 28, an.cx - 22)
    _paint_tube(cv, T["artery"], [aorta, hilum], 3.5, over=(T["visceral_fat"],))
    via = (hilum[0] + 5, an.y_spine - 45, an.cx + 12) if sign > 0 else ivc
    _paint_tube(cv, T["vein"], [ivc, via, hilum + (5, -4, 0)], 5.0, over=(T["visceral_fat"],))
    kidney_over = tuple(i for i in range(len(TISSUES)) if i not in _BONES + (T["air"],))
    _paint_ellipsoid(cv, T["renal_cortex"], c, tuple(r), R, lumps, over=kidney_over)
    notch = np.array(c) + R @ np.array([0.0, 1.0 * r[1], 0.0])
    _paint_ellipsoid(cv, T["visceral_fat"], tuple(notch), (0.35 * r[0], 0.45 * r[1], 0.5 * r[2]),
                     R, over=(T["renal_cortex"],))
    _paint_pyramids(cv, k, rng)
    sinus = np.array(c) + R @ np.array([0.0, 0.4 * r[1], 0.0])
    _paint_ellipsoid(cv, T["visceral_fat"], tuple(sinus), (0.55 * r[0], 0.4 * r[1], 0.45 * r[2]),
                     R, over=(T["renal_cortex"], T["renal_medulla"]))
    pelvis = np.array(c) + R @ np.array([0.0, 0.55 * r[1], 0.0])
    _paint_ellipsoid(cv, T["collecting_system"], tuple(pelvis),
                     (0.35 * r[0], 0.28 * r[1], 0.3 * r[2]), R,
                     over=(T["visceral_fat"], T["renal_cortex"], T["renal_medulla"]))
    lower = pelvis + R @ np.array([0.3 * r[0], 0.2 * r[1], 0.0])
    ureter = [lower, (lower[0] + 60, an.y_spine + 2, an.cx + sign * 42),
              (an.extent[0] + 10, an.y_spine, an.cx + sign * 40)]
    _paint_tube(cv, T["ureter"], ureter, 3.0, over=(T["visceral_fat"], T["muscle"]))


def _paint_pyramids(cv: _Canvas, k: KidneySpec, rng) -> None:
    R, c, r = k.rotation, np.array(k.centre), np.array(k.radii)
    for i in range(9):
        ang = (i + 0.5) / 9 * 2 * np.pi + rng.uniform(-0.15, 0.15)
        u = 0.65 * np.cos(ang)  # along the long axis
        w = 0.55 * np.sin(ang)  # across the thickness
        pos = c + R @ np.array([u * r[0], -0.05 * r[1], w * r[2]])
        _paint_ellipsoid(cv, T["renal_medulla"], tuple(pos),
                         (0.22 * r[0], 0.35 * r[1], 0.25 * r[2]), R, over=(T["renal_cortex"],))


def _paint_lesion(cv: _Canvas, les: Lesion, rng, look: Look) -> None:
    """A tumour or cyst over anything but bone and air: the subtype's tissue (classic look) or a
    tissue of its own (varied look), with a necrotic core where the geometry has one."""
    over = tuple(i for i in range(256) if i not in _BONES + (T["air"],))
    lumps = _lumps(rng, n=4, amp=0.05 if les.kind == "tumour" else 0.01, freq=3.0)
    if not look.varied:
        tissue, necrosis = T[les.tissue], T["tumour_necrosis"]
    elif les.kind == "tumour":
        tissue, necrosis = look.tumour(les.necrotic)
    else:
        tissue, necrosis = look.cyst(), None
    _paint_ellipsoid(cv, tissue, les.centre, les.radii, None, lumps, over=over)
    if les.necrotic:
        _paint_ellipsoid(cv, necrosis, les.centre, tuple(0.55 * np.array(les.radii)),
                         None, _lumps(rng, amp=0.1), over=(tissue,))


# --- HU rendering -------------------------------------------------------------------------------
