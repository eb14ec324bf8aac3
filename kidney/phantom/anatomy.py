"""Anatomy of a phantom in mm: body outline, spine level, kidneys, tumours and cysts, drawn from a seed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from .tissues import TUMOUR_TYPES


@dataclass
class Lesion:
    """A tumour or cyst: centre (z, y, x) mm, radii mm, tissue, side, exophytic flag."""

    kind: str
    side: str
    centre: Tuple[float, float, float]
    radii: Tuple[float, float, float]
    tissue: str
    exophytic: bool
    necrotic: bool = False


@dataclass
class KidneySpec:
    """One kidney: centre (z, y, x) mm, semi-axes (length, width, thickness) mm, orientation."""

    side: str
    centre: Tuple[float, float, float]
    radii: Tuple[float, float, float]
    rotation: np.ndarray = field(repr=False)  # columns: long, medial-lateral, thickness axes


@dataclass
class Anatomy:
    """Geometry of one phantom, in mm (internal axes)."""

    extent: Tuple[float, float, float]
    cx: float
    cy: float
    half_width: float
    half_depth: float
    power: float
    fat_mm: float
    wall_mm: float
    y_spine: float
    kidneys: List[KidneySpec]
    lesions: List[Lesion]
    z_kidney: Dict[str, float]
    synthetic_kidneys: bool = True
    label_centres: List[np.ndarray] = field(default_factory=list)


def _rotation(axis_long: np.ndarray, medial: np.ndarray) -> np.ndarray:
    """Orthonormal frame (columns) from a long axis and an approximate medial direction."""
    u = axis_long / np.linalg.norm(axis_long)
    v = medial - u * (medial @ u)
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def _kidney(rng, side: str, cx: float, y_spine: float, z: float, cavity_hw: float) -> KidneySpec:
    sign = -1.0 if side == "right" else 1.0  # right kidney lies at smaller x (I, P, L)
    radii = (rng.uniform(50, 62), rng.uniform(28, 34), rng.uniform(23, 28))
    lateral = min(rng.uniform(64, 80), cavity_hw - radii[1] - 18)
    centre = (z, y_spine + rng.uniform(5, 15), cx + sign * lateral)
    # long axis: lower pole more lateral and more anterior than the upper pole (z, y, x)
    long_axis = np.array([1.0, -rng.uniform(0.1, 0.3), sign * rng.uniform(0.15, 0.35)])
    # hilum faces medially and ~30 degrees anteriorly
    medial = np.array([0.0, -0.55, -sign * 1.0])
    return KidneySpec(side, centre, radii, _rotation(long_axis, medial))


# Where a drawn lesion's centre lies: on the kidney's surface, moved along its outward normal by a
# uniform draw between these bounds times the lesion's radius (negative: into the kidney).
LESION_DEPTHS = {
    # the generator's first table: cysts mostly bulging out of the kidney, none inside it
    "classic": {"tumour": (-0.7, 0.5), "cyst": (-0.3, 0.6)},
    # set so that the share of a lesion's rim lying outside the kidney has about the quartiles it
    # has over the lesions of the 100 training label maps (docs/generalisation.md, round 26)
    "real": {"tumour": (-1.4, 0.0), "cyst": (-1.3, 0.25)},
}


def _draw_anatomy(rng, extent, *, synthetic_kidneys=True, n_tumours=None, n_cysts=None,
                  lesion_depth: str = "classic") -> Anatomy:
    ez, ey, ex = extent
    hw = min(rng.uniform(140, 175), 0.47 * ex)
    hd = min(rng.uniform(100, 125), 0.45 * ey)
    cx, cy = ex / 2 + rng.uniform(-8, 8), ey / 2 + rng.uniform(-10, 5)
    fat = 6 + 0.45 * (hw - 130) + rng.uniform(0, 10)  # wider bodies carry more fat
    y_back = cy + hd
    y_spine = y_back - fat - rng.uniform(58, 66)
    z_left = ez * rng.uniform(0.40, 0.48)
    z_kid = {"left": z_left, "right": z_left + rng.uniform(8, 20)}
    anat = Anatomy(extent, cx, cy, hw, hd, rng.uniform(2.2, 2.6), fat, rng.uniform(8, 12),
                   y_spine, [], [], z_kid, synthetic_kidneys)
    if synthetic_kidneys:
        cavity_hw = hw - anat.fat_mm - anat.wall_mm
        anat.kidneys = [_kidney(rng, s, cx, y_spine, z_kid[s], cavity_hw)
                        for s in ("right", "left")]
        nt = int(rng.integers(1, 3)) if n_tumours is None else int(n_tumours)
        nc = int(rng.integers(1, 4)) if n_cysts is None else int(n_cysts)
        depths = LESION_DEPTHS[lesion_depth]
        anat.lesions = [_lesion(rng, "tumour", anat.kidneys, depths["tumour"]) for _ in range(nt)]
        for _ in range(nc):
            anat.lesions.append(_cyst_apart(rng, anat.kidneys, anat.lesions, depths["cyst"]))
    return anat


def _cyst_apart(rng, kidneys, tumours, depth) -> Lesion:
    """A cyst that does not overlap any tumour (up to 50 tries)."""
    for _ in range(50):
        cyst = _lesion(rng, "cyst", kidneys, depth)
        if all(np.linalg.norm(np.subtract(cyst.centre, t.centre)) > max(cyst.radii) * 1.2
               + max(t.radii) * 1.2 for t in tumours):
            break
    return cyst


def _lesion(rng, kind: str, kidneys: List[KidneySpec], depth) -> Lesion:
    """A lesion on a drawn kidney; ``depth``: the bounds of its centre's offset (see LESION_DEPTHS)."""
    k = kidneys[int(rng.integers(len(kidneys)))]
    # a direction on the kidney surface away from the hilum (local frame: long, medial, thick)
    while True:
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        if d[1] < 0.3:
            break
    surface_local = d * np.array(k.radii)
    normal_local = d / np.array(k.radii)
    normal = k.rotation @ (normal_local / np.linalg.norm(normal_local))
    surface = np.array(k.centre) + k.rotation @ surface_local
    if kind == "tumour":
        r = float(np.clip(np.exp(rng.normal(np.log(17.0), 0.45)), 7.0, 45.0))
        offset = rng.uniform(*depth) * r
        tissue = str(rng.choice(TUMOUR_TYPES, p=[0.7, 0.2, 0.1]))
        necrotic = tissue == "tumour_clear_cell" and r > 15 and rng.random() < 0.6
    else:
        r = float(np.clip(np.exp(rng.normal(np.log(10.0), 0.5)), 4.0, 28.0))
        offset = rng.uniform(*depth) * r
        tissue, necrotic = "cyst", False
    radii = tuple(float(r * f) for f in rng.uniform(0.85, 1.15, size=3))
    centre = tuple(float(v) for v in surface + offset * normal)
    return Lesion(kind, k.side, centre, radii, tissue, bool(offset > 0), bool(necrotic))
