"""Synthetic abdominal CT in HU with KiTS23 labels, and CT synthesised around real label maps.

Arrays are internal ``(z, y, x)`` = ``I, P, L`` (see :mod:`kidney.io`): ``z`` grows toward the feet,
``y`` toward the back, ``x`` toward the patient's left. Physical coordinates are mm from the corner
of voxel 0: voxel ``k`` of an axis with spacing ``s`` has its centre at ``(k + 0.5) s``.

How a phantom is made (:func:`make_phantom`):

1. Draw an anatomy (:class:`Anatomy`) from the seed: body outline, fat thickness, spine level,
   kidney positions, sizes and tilts, tumours (size, position, exophytic or not, subtype, necrosis)
   and cysts.
2. Paint tissue ids (:data:`TISSUES`) structure by structure on a grid that is 3× finer along ``z``
   when slices are thicker than 1.6 mm (to model the slice's partial volume). Later structures
   overwrite earlier ones only where allowed (organs never overwrite bone or the abdominal wall).
3. Labels come from the final tissue map: cortex, medulla and collecting system -> 1, tumour tissue
   (including necrosis) -> 2, cyst -> 3.
4. HU = tissue mean for the contrast phase + tissue texture (correlated noise) -> averaged over the
   sub-slices of each slice -> Gaussian blur (0.45 voxel in-plane, point spread) -> correlated
   quantum noise -> int16.

The HU table was calibrated on the real non-contrast CT in ``shared/data/totalseg_example`` (see
``docs/phantom.md`` and ``scripts/calibrate_phantom_hu.py``); enhanced phases use typical values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from . import io

PHASES = ("noncontrast", "corticomedullary", "nephrographic")

__all__ = ["Tissue", "TISSUES", "TISSUE_ID", "PHASES", "GRID_PRESETS", "Phantom", "Anatomy",
           "make_phantom", "from_labels", "write_case", "write_dataset", "tissue_statistics",
           "default_noise_hu", "CALIBRATION_MAP", "real_ct_masks", "phantom_masks"]


@dataclass(frozen=True)
class Tissue:
    """A tissue: HU mean per phase (noncontrast, corticomedullary, nephrographic), texture sd."""

    name: str
    hu: Tuple[float, float, float]
    sd: float
    label: int = 0


# Order = tissue id. Non-contrast means: the real CT (docs/phantom.md); enhanced: typical values.
TISSUES: Tuple[Tissue, ...] = (
    Tissue("air", (-1000, -1000, -1000), 3),
    Tissue("subcutaneous_fat", (-100, -100, -100), 10),
    Tissue("visceral_fat", (-95, -95, -95), 12),
    Tissue("muscle", (30, 45, 50), 8),
    Tissue("lung", (-820, -820, -820), 35),
    Tissue("cortical_bone", (750, 750, 750), 80),
    Tissue("cancellous_bone", (140, 140, 140), 30),
    Tissue("disc", (85, 85, 85), 10),
    Tissue("spinal_canal", (16, 16, 16), 6),
    Tissue("liver", (47, 75, 105), 6),
    Tissue("spleen", (35, 120, 115), 6),
    Tissue("pancreas", (30, 100, 85), 10),
    Tissue("gallbladder", (4, 4, 4), 4),
    Tissue("bowel_wall", (35, 90, 80), 8),
    Tissue("bowel_fluid", (15, 15, 15), 6),
    Tissue("gas", (-950, -950, -950), 25),
    Tissue("feces", (-60, -60, -60), 70),
    Tissue("artery", (42, 300, 170), 8),
    Tissue("vein", (40, 120, 150), 8),
    Tissue("portal_vein", (40, 150, 170), 8),
    Tissue("renal_cortex", (32, 180, 165), 8, 1),
    Tissue("renal_medulla", (28, 80, 160), 8, 1),
    Tissue("collecting_system", (8, 8, 10), 4, 1),
    Tissue("ureter", (8, 8, 10), 4),
    Tissue("cyst", (8, 8, 8), 4, 3),
    Tissue("tumour_clear_cell", (35, 140, 110), 25, 2),
    Tissue("tumour_papillary", (38, 55, 75), 10, 2),
    Tissue("tumour_chromophobe", (38, 100, 110), 15, 2),
    Tissue("tumour_necrosis", (22, 25, 25), 8, 2),
)
TISSUE_ID: Dict[str, int] = {t.name: i for i, t in enumerate(TISSUES)}
T = TISSUE_ID
_LABEL_OF_TISSUE = np.array([t.label for t in TISSUES] + [0] * (256 - len(TISSUES)), np.uint8)
TUMOUR_TYPES = ("tumour_clear_cell", "tumour_papillary", "tumour_chromophobe")
_BONES = (T["cortical_bone"], T["cancellous_bone"], T["disc"], T["spinal_canal"])
_WALL = (T["air"], T["subcutaneous_fat"], T["muscle"]) + _BONES
_CAVITY = tuple(i for i in range(len(TISSUES)) if i not in _WALL)


# --- grid presets -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridPreset:
    """How a phantom's grid is drawn: in-plane size, spacing range, slice choices, z extent."""

    inplane: int
    inplane_mm: Tuple[float, float]
    slice_mm: Tuple[float, ...]
    slice_weights: Tuple[float, ...]
    z_extent_mm: Tuple[float, float]


GRID_PRESETS: Dict[str, GridPreset] = {
    # CPU demos: 256 x 256 at 1.45-1.75 mm (FOV 371-448 mm), 2-3 mm slices.
    "demo": GridPreset(256, (1.45, 1.75), (2.0, 2.5, 3.0), (1, 1, 1), (200.0, 260.0)),
    # KiTS-like: 512 x 512 at 0.70-0.95 mm; slice thicknesses with KiTS23 frequencies.
    "full": GridPreset(512, (0.70, 0.95), (5.0, 3.0, 1.0, 0.5, 2.5, 2.0, 1.25),
                       (223, 85, 56, 45, 40, 18, 5), (220.0, 320.0)),
    # Unit tests: 96 x 96 at 4 mm, 5 mm slices.
    "tiny": GridPreset(96, (4.0, 4.0), (5.0,), (1,), (200.0, 200.0)),
}


def _draw_grid(rng, preset: GridPreset, shape, spacing):
    """``(shape, spacing)``: drawn from the preset unless given; a given shape keeps the preset's
    field of view, a given spacing keeps its extent."""
    if shape is not None:
        shape = tuple(int(n) for n in shape)
        if len(shape) != 3 or min(shape) < 4:
            raise ValueError(f"phantom shape must be 3 sizes >= 4, got {shape}")
    fov_in = preset.inplane * float(np.mean(preset.inplane_mm))
    fov_z = rng.uniform(*preset.z_extent_mm)
    if spacing is None and shape is None:
        s_in = rng.uniform(*preset.inplane_mm)
        w = np.asarray(preset.slice_weights, float)
        s_z = float(rng.choice(preset.slice_mm, p=w / w.sum()))
        spacing = (s_z, s_in, s_in)
        shape = (max(8, int(round(fov_z / s_z))), preset.inplane, preset.inplane)
    elif spacing is None:
        spacing = (fov_z / shape[0], fov_in / shape[1], fov_in / shape[2])
    elif shape is None:
        spacing = io.check_spacing(spacing, "phantom")
        shape = (max(8, int(round(fov_z / spacing[0]))), int(round(fov_in / spacing[1])),
                 int(round(fov_in / spacing[2])))
    return tuple(int(n) for n in shape), io.check_spacing(spacing, "phantom")


# --- anatomy ------------------------------------------------------------------------------------

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


def _draw_anatomy(rng, extent, *, synthetic_kidneys=True, n_tumours=None, n_cysts=None) -> Anatomy:
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
        anat.lesions = [_lesion(rng, "tumour", anat.kidneys) for _ in range(nt)]
        for _ in range(nc):
            anat.lesions.append(_cyst_apart(rng, anat.kidneys, anat.lesions))
    return anat


def _cyst_apart(rng, kidneys, tumours) -> Lesion:
    """A cyst that does not overlap any tumour (up to 50 tries)."""
    for _ in range(50):
        cyst = _lesion(rng, "cyst", kidneys)
        if all(np.linalg.norm(np.subtract(cyst.centre, t.centre)) > max(cyst.radii) * 1.2
               + max(t.radii) * 1.2 for t in tumours):
            break
    return cyst


def _lesion(rng, kind: str, kidneys: List[KidneySpec]) -> Lesion:
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
        offset = rng.uniform(-0.7, 0.5) * r
        tissue = str(rng.choice(TUMOUR_TYPES, p=[0.7, 0.2, 0.1]))
        necrotic = tissue == "tumour_clear_cell" and r > 15 and rng.random() < 0.6
    else:
        r = float(np.clip(np.exp(rng.normal(np.log(10.0), 0.5)), 4.0, 28.0))
        offset = rng.uniform(-0.3, 0.6) * r
        tissue, necrotic = "cyst", False
    radii = tuple(float(r * f) for f in rng.uniform(0.85, 1.15, size=3))
    centre = tuple(float(v) for v in surface + offset * normal)
    return Lesion(kind, k.side, centre, radii, tissue, bool(offset > 0), bool(necrotic))


# --- painting -----------------------------------------------------------------------------------

class _Canvas:
    """Tissue-id volume on a (possibly z-supersampled) grid with mm coordinates."""

    def __init__(self, shape, spacing, n_sub: int):
        self.n_sub = n_sub
        self.spacing = spacing
        nz = shape[0] * n_sub
        self.z = ((np.arange(nz) + 0.5) * spacing[0] / n_sub).astype(np.float32)
        self.y = ((np.arange(shape[1]) + 0.5) * spacing[1]).astype(np.float32)
        self.x = ((np.arange(shape[2]) + 0.5) * spacing[2]).astype(np.float32)
        self.tissue = np.zeros((nz, shape[1], shape[2]), dtype=np.uint8)

    def box(self, lo, hi):
        sl = []
        for axis, c in zip(range(3), (self.z, self.y, self.x)):
            a, b = np.searchsorted(c, lo[axis]), np.searchsorted(c, hi[axis], side="right")
            if b <= a:
                return None
            sl.append(slice(int(a), int(b)))
        return tuple(sl)

    def grids(self, sl):
        return (self.z[sl[0]][:, None, None], self.y[sl[1]][None, :, None],
                self.x[sl[2]][None, None, :])

    def paint(self, tissue: int, fn, lo, hi, over=None) -> None:
        """Set ``tissue`` where ``fn(z, y, x)`` (mm grids of the box ``lo..hi``) is true."""
        sl = self.box(lo, hi)
        if sl is None:
            return
        view = self.tissue[sl]
        mask = np.broadcast_to(fn(*self.grids(sl)), view.shape)
        if over is not None:
            allowed = np.zeros(256, dtype=bool)
            allowed[list(over)] = True
            mask = mask & allowed[view]
        view[mask] = tissue


def _ellipsoid_rho(z, y, x, centre, radii, rotation=None, lumps=None):
    """Normalised radius (1 on the surface) of a rotated, optionally lumpy ellipsoid."""
    d = (z - centre[0], y - centre[1], x - centre[2])
    if rotation is not None:
        local = [d[0] * rotation[0, i] + d[1] * rotation[1, i] + d[2] * rotation[2, i]
                 for i in range(3)]
    else:
        local = list(d)
    q = [local[i] / radii[i] for i in range(3)]
    rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    if lumps is not None:
        for amp, w, phase in lumps:
            rho = rho - amp * np.sin(w[0] * q[0] + w[1] * q[1] + w[2] * q[2] + phase)
    return rho


def _lumps(rng, n=3, amp=0.06, freq=2.5):
    out = []
    for _ in range(n):
        w = rng.normal(size=3)
        out.append((amp, w / np.linalg.norm(w) * freq, rng.uniform(0, 2 * np.pi)))
    return out


def _box_around(centre, radius):
    c = np.asarray(centre, float)
    return c - radius, c + radius


def _paint_ellipsoid(cv, tissue, centre, radii, rotation=None, lumps=None, over=None, rho_max=1.0):
    reach = max(radii) * rho_max * 1.25
    lo, hi = _box_around(centre, reach)
    cv.paint(tissue, lambda z, y, x: _ellipsoid_rho(z, y, x, centre, radii, rotation, lumps)
             <= rho_max, lo, hi, over)


def _segment_distance(z, y, x, a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = ((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / max(ab @ ab, 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2
                   + (x - a[2] - t * ab[2]) ** 2)


def _paint_tube(cv, tissue, points, radius, over=None):
    pts = np.asarray(points, float)
    for a, b in zip(pts[:-1], pts[1:]):
        lo, hi = np.minimum(a, b) - radius, np.maximum(a, b) + radius
        cv.paint(tissue, lambda z, y, x, a=a, b=b: _segment_distance(z, y, x, a, b) <= radius,
                 lo, hi, over)


# --- body, spine, organs ------------------------------------------------------------------------

def _body_q(an: Anatomy, z, y, x, shrink_mm: float = 0.0):
    """Super-ellipse level of the body outline shrunk by ``shrink_mm`` (<= 1 inside)."""
    wobble = 1.0 + 0.03 * np.sin(z / 37.0)
    a = an.half_width * wobble - shrink_mm
    b = an.half_depth * wobble - shrink_mm
    return (np.abs(x - an.cx) / a) ** an.power + (np.abs(y - an.cy) / b) ** an.power


def _paint_body(cv: _Canvas, an: Anatomy) -> None:
    ez = an.extent[0]
    lo = (0, an.cy - an.half_depth - 5, an.cx - an.half_width - 5)
    hi = (ez, an.cy + an.half_depth + 5, an.cx + an.half_width + 5)
    cv.paint(T["subcutaneous_fat"], lambda z, y, x: _body_q(an, z, y, x) <= 1, lo, hi)
    cv.paint(T["muscle"], lambda z, y, x: _body_q(an, z, y, x, an.fat_mm) <= 1, lo, hi)
    cv.paint(T["visceral_fat"], lambda z, y, x: _body_q(an, z, y, x, an.fat_mm + an.wall_mm) <= 1,
             lo, hi)


def _paint_spine(cv: _Canvas, an: Anatomy) -> None:
    ez, cx, ys = an.extent[0], an.cx, an.y_spine
    lo, hi = (0, ys - 25, cx - 60), (ez, ys + 70, cx + 60)

    def body(z, y, x):
        return ((x - cx) / 22) ** 2 + ((y - ys) / 17) ** 2

    def disc(z):
        return np.mod(z - an.z_kidney["left"], 36.0) < 8.0

    cv.paint(T["cortical_bone"], lambda z, y, x: body(z, y, x) <= 1, lo, hi)
    cv.paint(T["cancellous_bone"], lambda z, y, x: body(z, y, x) <= 0.78, lo, hi)
    cv.paint(T["disc"], lambda z, y, x: (body(z, y, x) <= 1.02) & disc(z), lo, hi)
    canal_y = ys + 27
    cv.paint(T["cortical_bone"], lambda z, y, x: ((x - cx) ** 2 + (y - canal_y) ** 2 <= 14 ** 2)
             & ~disc(z), lo, hi)  # neural arch
    cv.paint(T["cortical_bone"], lambda z, y, x: (np.abs(x - cx) <= 4) & (y >= canal_y)
             & (y <= canal_y + 30) & ~disc(z), lo, hi)  # spinous process
    cv.paint(T["cortical_bone"], lambda z, y, x: (np.abs(x - cx) <= 36)  # transverse processes
             & (np.abs(y - ys - 20) <= 3.5 - np.abs(x - cx) / 18)
             & (np.abs(np.mod(z - an.z_kidney["left"], 36.0) - 19) < 3), lo, hi)
    cv.paint(T["spinal_canal"], lambda z, y, x: (x - cx) ** 2 + (y - canal_y) ** 2 <= 81, lo, hi)


def _paint_back_muscles(cv: _Canvas, an: Anatomy) -> None:
    ez, cx, ys = an.extent[0], an.cx, an.y_spine
    z_psoas = min(an.z_kidney.values()) - 40
    for sign in (-1, 1):
        mx = cx + sign * 36  # erector spinae
        cv.paint(T["muscle"], lambda z, y, x, mx=mx: ((x - mx) / 27) ** 2
                 + ((y - ys - 50) / 20) ** 2 <= 1, (0, ys + 25, mx - 30), (ez, ys + 75, mx + 30),
                 over=_CAVITY + (T["muscle"],))
        qx = cx + sign * 66  # quadratus lumborum
        cv.paint(T["muscle"], lambda z, y, x, qx=qx: ((x - qx) / 15) ** 2
                 + ((y - ys - 32) / 10) ** 2 <= 1, (0, ys + 20, qx - 16), (ez, ys + 45, qx + 16),
                 over=_CAVITY)
        px = cx + sign * 34

        def psoas(z, y, x, px=px):
            r = 6 + 14 * np.clip((z - z_psoas) / 160.0, 0, 1)
            return (z > z_psoas) & (((x - px) / (r * 1.1)) ** 2 + ((y - ys + 4) / r) ** 2 <= 1)

        cv.paint(T["muscle"], psoas, (0, ys - 30, px - 30), (ez, ys + 30, px + 30), over=_CAVITY)


def _paint_ribs(cv: _Canvas, an: Anatomy, rng) -> None:
    """Ribs: tubes in the body wall that descend as they run from the spine forward."""
    cx, cy = an.cx, an.cy
    r_mean = 0.5 * (an.half_width + an.half_depth)
    q_rib = (1 - (an.fat_mm + 0.5 * an.wall_mm) / r_mean) ** an.power
    z_low = min(an.z_kidney.values()) - rng.uniform(15, 30)
    lo = (0, cy - an.half_depth, cx - an.half_width)
    hi = (0, cy + an.half_depth, cx + an.half_width)
    for i in range(8):  # i = 0 is the 12th rib; the two floating ribs are short
        zp = z_low - 27.0 * i
        theta_max = (1.6, 2.0, 2.5)[min(i, 2)]
        drop = 30.0 * (theta_max / (np.pi / 2)) ** 1.3
        if zp + drop < -10:
            break
        lo, hi = (zp - 10, lo[1], lo[2]), (zp + drop + 10, hi[1], hi[2])

        def rib(z, y, x, zp=zp, theta_max=theta_max):
            theta = np.arctan2(np.abs(x - cx), y - cy)  # 0 posterior, pi anterior
            z_rib = zp + 30.0 * (theta / (np.pi / 2)) ** 1.3
            radial = (_body_q(an, z, y, x) ** (1 / an.power) - q_rib ** (1 / an.power)) * r_mean
            d = (radial / 5.0) ** 2 + ((z - z_rib) / 6.0) ** 2
            return np.where((theta > 0.35) & (theta < theta_max), d, 9.0)

        cv.paint(T["cortical_bone"], lambda z, y, x: rib(z, y, x) <= 1, lo, hi,
                 over=(T["muscle"], T["subcutaneous_fat"], T["visceral_fat"]))
        cv.paint(T["cancellous_bone"], lambda z, y, x: rib(z, y, x) <= 0.35, lo, hi,
                 over=(T["cortical_bone"],))


def _paint_organs(cv: _Canvas, an: Anatomy, rng) -> None:
    cx, cy, ys = an.cx, an.cy, an.y_spine
    zr, zl = an.z_kidney["right"], an.z_kidney["left"]
    organ_over = (T["visceral_fat"], T["lung"])
    for sign in (-1, 1):  # lung bases in the posterior costophrenic recesses
        _paint_ellipsoid(cv, T["lung"], (zl - 150, ys + 10, cx + sign * 75), (80, 55, 55),
                         over=(T["visceral_fat"],))
    _paint_ellipsoid(cv, T["liver"], (zr - 75, cy - 5, cx - 60), (85, 85, 90), None,
                     _lumps(rng), over=organ_over)
    _paint_ellipsoid(cv, T["gallbladder"], (zr - 25, cy - 45, cx - 50), (35, 16, 16),
                     over=(T["liver"], T["visceral_fat"]))
    _paint_tube(cv, T["portal_vein"], [(zr - 45, ys - 55, cx - 15), (zr - 75, ys - 45, cx - 60)],
                7, over=(T["liver"], T["visceral_fat"]))
    spleen_rot = _rotation(np.array([1.0, 0.6, 0.3]), np.array([0.0, -0.5, -1.0]))
    _paint_ellipsoid(cv, T["spleen"], (zl - 60, ys + 15, cx + 88), (55, 28, 45), spleen_rot,
                     _lumps(rng), over=organ_over)
    _paint_stomach(cv, (zl - 85, cy - 35, cx + 45), (50, 38, 50))
    _paint_tube(cv, T["pancreas"], [(zl - 30, ys - 15, cx + 70), (zl - 15, ys - 45, cx + 10),
                                    (zl - 5, ys - 40, cx - 35)], 11, over=(T["visceral_fat"],))
    ez = an.extent[0]
    _paint_tube(cv, T["artery"], [(0, ys - 30, cx + 12), (ez, ys - 30, cx + 12)], 11,
                over=_CAVITY)
    _paint_tube(cv, T["vein"], [(0, ys - 28, cx - 22), (ez, ys - 28, cx - 22)], 11, over=_CAVITY)


def _paint_stomach(cv: _Canvas, centre, radii) -> None:
    _paint_ellipsoid(cv, T["bowel_wall"], centre, radii, over=(T["visceral_fat"], T["lung"]))
    inner = tuple(r - 4 for r in radii)
    _paint_ellipsoid(cv, T["bowel_fluid"], centre, inner, over=(T["bowel_wall"],))
    level = centre[1] - 0.35 * radii[1]  # supine: gas rises anteriorly (small y)
    lo, hi = _box_around(centre, max(radii))
    cv.paint(T["gas"], lambda z, y, x: y < level, lo, hi, over=(T["bowel_fluid"],))


def _paint_bowel(cv: _Canvas, an: Anatomy, rng) -> None:
    cx, cy, ez = an.cx, an.cy, an.extent[0]
    zr, zl = an.z_kidney["right"], an.z_kidney["left"]
    ty = cy - an.half_depth + an.fat_mm + an.wall_mm + 30
    colon = [  # ascending, hepatic flexure, transverse, splenic flexure, descending
        [(ez, cy + 5, cx - 100), (zr - 5, cy, cx - 100), (zr - 15, ty, cx - 80)],
        [(zr - 15, ty, cx - 80), (zr - 5, ty, cx), (zl - 30, ty, cx + 85)],
        [(zl - 30, ty, cx + 85), (zl - 20, cy + 15, cx + 105), (ez, cy + 20, cx + 105)],
    ]
    for path in colon:
        _paint_lumen(cv, path, rng.uniform(18, 24), rng.random() < 0.5, over=(T["visceral_fat"],))
    for _ in range(int(rng.integers(30, 45))):  # small bowel loops below the transverse colon
        start = np.array([rng.uniform(zl - 10, ez), rng.uniform(ty, cy + 25),
                          cx + rng.uniform(-85, 85)])
        pts = [start]
        for _ in range(8):
            step = rng.normal(size=3)
            pts.append(pts[-1] + 22 * step / np.linalg.norm(step))
        _paint_lumen(cv, pts, rng.uniform(10, 13), False, over=(T["visceral_fat"],),
                     content="bowel_fluid", gas=rng.random() < 0.3)


def _paint_lumen(cv, path, radius, colon_gas, over, content="feces", gas=False):
    _paint_tube(cv, T["bowel_wall"], path, radius, over=over)
    _paint_tube(cv, T[content], path, radius - 3, over=(T["bowel_wall"],))
    if colon_gas or gas:
        for a, b in zip(path[:-1], path[1:]):
            mid_y = 0.5 * (a[1] + b[1])
            lo = np.minimum(a, b) - radius
            hi = np.maximum(a, b) + radius
            cv.paint(T["gas"], lambda z, y, x, m=mid_y: y < m - 0.2 * radius, lo, hi,
                     over=(T[content],))


# --- kidneys and lesions ------------------------------------------------------------------------

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


def _paint_lesion(cv: _Canvas, les: Lesion, rng) -> None:
    over = tuple(i for i in range(len(TISSUES)) if i not in _BONES + (T["air"],))
    lumps = _lumps(rng, n=4, amp=0.05 if les.kind == "tumour" else 0.01, freq=3.0)
    _paint_ellipsoid(cv, T[les.tissue], les.centre, les.radii, None, lumps, over=over)
    if les.necrotic:
        _paint_ellipsoid(cv, T["tumour_necrosis"], les.centre, tuple(0.55 * np.array(les.radii)),
                         None, _lumps(rng, amp=0.1), over=(T[les.tissue],))


# --- HU rendering -------------------------------------------------------------------------------

def default_noise_hu(spacing: Sequence[float]) -> float:
    """Quantum-noise sd (HU) for a voxel size: ``11 * (27 mm³ / V)^0.25``, clipped to [8, 25].

    11 HU matches the real 3 mm CT (liver sd 12.9 with texture); smaller voxels are noisier, but
    clinical kernels smooth, hence the 1/4 power rather than 1/2.
    """
    volume = float(np.prod(spacing))
    return float(np.clip(11.0 * (27.0 / volume) ** 0.25, 8.0, 25.0))


def _smooth_noise(rng, shape, spacing, corr_mm: float) -> np.ndarray:
    """Unit-sd correlated noise (float32): white noise on a ``corr_mm`` grid, linearly upsampled
    (separably, axis by axis)."""
    coarse = tuple(max(2, int(math.ceil(n * s / corr_mm)) + 1) for n, s in zip(shape, spacing))
    out = rng.standard_normal(coarse).astype(np.float32)
    for axis, (n, c) in enumerate(zip(shape, coarse)):
        t = np.linspace(0.0, c - 1.0, n, dtype=np.float64)
        i0 = np.minimum(t.astype(np.int64), c - 2)
        w = (t - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def _render_hu(tissue_fine: np.ndarray, n_sub: int, spacing, phase_index: int, noise_hu: float,
               rng) -> np.ndarray:
    mean = np.zeros(256, np.float32)
    sd = np.zeros(256, np.float32)
    for i, t in enumerate(TISSUES):
        mean[i], sd[i] = t.hu[phase_index], t.sd
    fine_spacing = (spacing[0] / n_sub, spacing[1], spacing[2])
    tex = _smooth_noise(rng, tissue_fine.shape, fine_spacing, 3.0)
    hu = mean[tissue_fine] + sd[tissue_fine] * tex
    del tex
    if n_sub > 1:
        hu = hu.reshape(-1, n_sub, *hu.shape[1:]).mean(axis=1)
    hu = ndimage.gaussian_filter(hu, sigma=(0.3, 0.45, 0.45), mode="nearest")
    noise = rng.standard_normal(hu.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0, 0.5, 0.5), mode="wrap")
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    hu += noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


# --- public API ---------------------------------------------------------------------------------

@dataclass
class Phantom:
    """A synthetic CT and its labels in the internal orientation.

    Attributes:
        image: ``(Z, Y, X) int16`` HU.
        labels: ``(Z, Y, X) uint8`` KiTS23 labels (0 bg, 1 kidney, 2 tumour, 3 cyst).
        tissue: ``(Z, Y, X) uint8`` tissue ids (index into :data:`TISSUES`), centre sub-slice.
        spacing: ``(sz, sy, sx)`` mm.
        phase: contrast phase name.
        seed: the seed it was made from.
        anatomy: the drawn geometry (kidney and lesion positions in mm).
        noise_hu: quantum-noise sd used.
    """

    image: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    spacing: Tuple[float, float, float]
    phase: str
    seed: int
    anatomy: Anatomy = field(repr=False)
    noise_hu: float = 0.0

    @property
    def affine(self) -> np.ndarray:
        """KiTS23-style ``I, P, L`` affine for :attr:`image` (see :func:`kidney.io.kits_affine`)."""
        return io.kits_affine(self.spacing)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.image.shape)


def _phase(rng, phase: str) -> str:
    if phase == "random":
        return str(rng.choice(PHASES[1:]))
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; use 'random' or one of {PHASES}")
    return phase


def _sub_slices(spacing) -> int:
    return 3 if spacing[0] > 1.6 else 1


def _finish(cv: _Canvas, an: Anatomy, spacing, phase: str, seed: int, noise_hu, rng,
            labels: Optional[np.ndarray] = None) -> Phantom:
    noise_hu = default_noise_hu(spacing) if noise_hu is None else float(noise_hu)
    image = _render_hu(cv.tissue, cv.n_sub, spacing, PHASES.index(phase), noise_hu, rng)
    tissue = cv.tissue[cv.n_sub // 2::cv.n_sub]
    if labels is None:
        labels = _LABEL_OF_TISSUE[tissue]
    return Phantom(image, labels, np.ascontiguousarray(tissue), tuple(spacing), phase, seed, an,
                   noise_hu)


def _paint_background(cv: _Canvas, an: Anatomy, rng) -> None:
    _paint_body(cv, an)
    _paint_spine(cv, an)
    _paint_back_muscles(cv, an)
    _paint_ribs(cv, an, rng)
    _paint_organs(cv, an, rng)
    _paint_bowel(cv, an, rng)


def make_phantom(seed: int = 0, *, preset: str = "demo", shape=None, spacing=None,
                 phase: str = "random", n_tumours: Optional[int] = None,
                 n_cysts: Optional[int] = None, noise_hu: Optional[float] = None) -> Phantom:
    """A seeded synthetic abdominal CT with two kidneys, tumours and cysts.

    Args:
        seed: RNG seed; the same arguments give a bit-identical phantom.
        preset: grid preset (:data:`GRID_PRESETS`): ``'demo'`` (256², 1.45–1.75 mm, 2–3 mm
            slices), ``'full'`` (512², 0.70–0.95 mm, KiTS23 slice mix) or ``'tiny'`` (96², 4 mm).
        shape: ``(Z, Y, X)`` override (the preset's field of view is kept unless ``spacing`` given).
        spacing: ``(sz, sy, sx)`` mm override.
        phase: ``'random'`` (corticomedullary or nephrographic), or one of :data:`PHASES`.
        n_tumours: default 1–2; n_cysts: default 1–3 (so every label is present by default).
        noise_hu: quantum-noise sd; default :func:`default_noise_hu`.

    Returns:
        :class:`Phantom` (image int16 HU, labels uint8, internal ``I, P, L`` orientation).
    """
    if preset not in GRID_PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r}; use one of {sorted(GRID_PRESETS)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20251104]))
    shape, spacing = _draw_grid(rng, GRID_PRESETS[preset], shape, spacing)
    phase = _phase(rng, phase)
    extent = tuple(n * s for n, s in zip(shape, spacing))
    an = _draw_anatomy(rng, extent, n_tumours=n_tumours, n_cysts=n_cysts)
    cv = _Canvas(shape, spacing, _sub_slices(spacing))
    _paint_background(cv, an, rng)
    for k in an.kidneys:
        _paint_kidney(cv, an, k, rng)
    for les in sorted(an.lesions, key=lambda l: l.kind != "cyst"):  # cysts first, tumours win
        _paint_lesion(cv, les, rng)
    return _finish(cv, an, spacing, phase, int(seed), noise_hu, rng)


# --- CT around real labels ----------------------------------------------------------------------

def _label_components(labels: np.ndarray, spacing) -> List[Tuple[np.ndarray, int]]:
    """Centres (mm) and sizes of the two largest 26-connected foreground components."""
    fg = labels > 0
    if not fg.any():
        return []
    box = ndimage.find_objects(fg.astype(np.uint8))[0]
    comp, n = ndimage.label(fg[box], structure=np.ones((3, 3, 3)))
    sizes = np.bincount(comp.ravel())[1:]
    out = []
    for i in np.argsort(sizes)[::-1][:2]:
        idx = np.argwhere(comp == i + 1).mean(axis=0) + [b.start for b in box]
        out.append(((idx + 0.5) * np.array(spacing), int(sizes[i])))
    return out


def _anatomy_from_labels(rng, labels: np.ndarray, spacing) -> Anatomy:
    extent = tuple(n * s for n, s in zip(labels.shape, spacing))
    an = _draw_anatomy(rng, extent, synthetic_kidneys=False)
    comps = _label_components(labels, spacing)
    if len(comps) == 2 and abs(comps[0][0][2] - comps[1][0][2]) > 60:
        an.cx = float(0.5 * (comps[0][0][2] + comps[1][0][2]))
    for c, _ in comps:
        side = "right" if c[2] < an.cx else "left"
        an.z_kidney[side] = float(c[0])
    if comps:
        y_k = float(np.mean([c[1] for c, _ in comps]))
        an.y_spine = y_k - 12.0
        an.cy = an.y_spine + an.fat_mm + 62.0 - an.half_depth
        reach = max(abs(c[2] - an.cx) for c, _ in comps) + 60 + an.fat_mm
        an.half_width = max(an.half_width, reach)
    if len(comps) == 1:
        side = "right" if comps[0][0][2] < an.cx else "left"
        other = "left" if side == "right" else "right"
        an.z_kidney[other] = an.z_kidney[side]
    an.label_centres = [c for c, _ in comps]
    return an


def _label_tissues(cv: _Canvas, labels: np.ndarray, spacing, rng) -> None:
    """Paint kidney/tumour/cyst tissue exactly on the labelled voxels (all sub-slices)."""
    fg = labels > 0
    if not fg.any():
        return
    box = ndimage.find_objects(fg.astype(np.uint8))[0]
    margin = tuple(int(math.ceil(15.0 / s)) + 1 for s in spacing)
    box = tuple(slice(max(0, b.start - m), min(n, b.stop + m))
                for b, m, n in zip(box, margin, labels.shape))
    lab = labels[box]
    outside = ndimage.distance_transform_edt(lab == 0, sampling=spacing)
    depth_k = ndimage.distance_transform_edt(lab > 0, sampling=spacing)
    tissue = np.full(lab.shape, 255, np.uint8)
    tissue[(outside > 0) & (outside <= 12.0)] = T["visceral_fat"]  # perirenal fat
    mottled = _smooth_noise(rng, lab.shape, spacing, 8.0) > 0.2
    tissue[lab == 1] = np.where((depth_k[lab == 1] > 6.0) & mottled[lab == 1],
                                T["renal_medulla"], T["renal_cortex"])
    tissue[lab == 3] = T["cyst"]
    _tumour_tissue(tissue, lab, spacing, rng)
    fine = cv.tissue.reshape(labels.shape[0], cv.n_sub, *labels.shape[1:])
    sub = fine[box[0], :, box[1], box[2]]
    fat_ok = np.isin(sub, _CAVITY) & (tissue == T["visceral_fat"])[:, None]
    sub[fat_ok] = T["visceral_fat"]
    exact = np.broadcast_to((lab > 0)[:, None], sub.shape)
    sub[exact] = np.broadcast_to(tissue[:, None], sub.shape)[exact]
    fine[box[0], :, box[1], box[2]] = sub


def _tumour_tissue(tissue: np.ndarray, lab: np.ndarray, spacing, rng) -> None:
    tum = lab == 2
    if not tum.any():
        return
    comp, n = ndimage.label(tum, structure=np.ones((3, 3, 3)))
    depth = ndimage.distance_transform_edt(tum, sampling=spacing)
    for i in range(1, n + 1):
        m = comp == i
        kind = str(rng.choice(TUMOUR_TYPES, p=[0.7, 0.2, 0.1]))
        tissue[m] = T[kind]
        d_max = float(depth[m].max())
        if kind == "tumour_clear_cell" and d_max > 12 and rng.random() < 0.6:
            tissue[m & (depth > 0.55 * d_max)] = T["tumour_necrosis"]


def from_labels(segmentation: np.ndarray, spacing: Sequence[float], seed: int = 0, *,
                phase: str = "random", noise_hu: Optional[float] = None) -> Phantom:
    """Synthesise a CT around a real KiTS23 label map; the labels are kept exactly.

    Args:
        segmentation: ``(Z, Y, X)`` internal-orientation label map (0..3), e.g.
            ``io.load_nifti(path, label=True).array``.
        spacing: ``(sz, sy, sx)`` mm.
        seed, phase, noise_hu: as in :func:`make_phantom`.

    The body, spine, organs and bowel are drawn around the labelled kidneys (midline between the
    two largest components, spine just medial and anterior-posterior level with them); labelled
    voxels get kidney (cortex/medulla by depth), tumour (subtype, necrotic core) or cyst tissue,
    with a 12 mm rim of perirenal fat. ``Phantom.labels`` is a copy of ``segmentation``.
    """
    labels = np.asarray(segmentation)
    if labels.ndim != 3:
        raise ValueError(f"from_labels needs a 3D label map, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 3):
        raise ValueError(f"from_labels: labels must lie in 0..3, got range "
                         f"[{labels.min()}, {labels.max()}] in a {labels.shape} map")
    labels = labels.astype(np.uint8)
    spacing = io.check_spacing(spacing, "from_labels")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20251105]))
    phase = _phase(rng, phase)
    an = _anatomy_from_labels(rng, labels, spacing)
    cv = _Canvas(labels.shape, spacing, _sub_slices(spacing))
    _paint_background(cv, an, rng)
    _paint_renal_vessels(cv, an)
    _label_tissues(cv, labels, spacing, rng)
    return _finish(cv, an, spacing, phase, int(seed), noise_hu, rng, labels=labels.copy())


def _paint_renal_vessels(cv: _Canvas, an: Anatomy) -> None:
    for c in an.label_centres:
        aorta = (c[0], an.y_spine - 30, an.cx + 12)
        ivc = (c[0] + 5, an.y_spine - 28, an.cx - 22)
        _paint_tube(cv, T["artery"], [aorta, tuple(c)], 3.5, over=(T["visceral_fat"],))
        _paint_tube(cv, T["vein"], [ivc, tuple(c)], 5.0, over=(T["visceral_fat"],))


# --- writing ------------------------------------------------------------------------------------

def write_case(ph: Phantom, case_dir, *, overwrite: bool = False) -> Path:
    """Write ``case_dir/imaging.nii.gz`` (int16 HU) and ``segmentation.nii.gz`` (uint8), KiTS23
    layout and ``I, P, L`` affine. Existing files are kept unless ``overwrite``."""
    case_dir = Path(case_dir)
    for name in (io.IMAGE_NAME, io.LABEL_NAME):
        if (case_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{case_dir / name} exists; pass overwrite=True (--overwrite)")
    io.save_array(ph.image, ph.affine, case_dir / io.IMAGE_NAME, overwrite=overwrite)
    io.save_array(ph.labels, ph.affine, case_dir / io.LABEL_NAME, overwrite=overwrite)
    return case_dir


def write_dataset(out_dir, n: int, seed: int = 0, *, overwrite: bool = False, start: int = 0,
                  progress=None, **kwargs) -> List[Path]:
    """Write ``n`` phantoms as ``out_dir/case_{start+i:05d}``; case ``i`` uses seed
    ``seed * 100003 + i``. ``kwargs`` go to :func:`make_phantom`; ``progress(i, path)`` is called
    after each case."""
    out = []
    for i in range(int(n)):
        path = Path(out_dir) / f"case_{start + i:05d}"
        ph = make_phantom(int(seed) * 100003 + i, **kwargs)
        out.append(write_case(ph, path, overwrite=overwrite))
        if progress is not None:
            progress(i, path)
    return out


# --- calibration helper -------------------------------------------------------------------------

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


# Real-CT structures (TotalSegmentator label values in shared/data/totalseg_example) and the phantom
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
