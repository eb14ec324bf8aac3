"""Painting the body around the kidneys: wall, spine, back muscles, ribs, organs, vessels and bowel."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .anatomy import Anatomy, _rotation
from .appearance import Organs
from .canvas import _Canvas, _box_around, _lumps, _paint_ellipsoid, _paint_tube
from .tissues import T, _CAVITY


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


def _kidney_centre(an: Anatomy, side: str) -> np.ndarray:
    """Centre (mm) of the ``side`` kidney: the drawn one, the label component on that side of the
    midline, or (no such component) the default place level with ``z_kidney``."""
    sign = -1.0 if side == "right" else 1.0
    for k in an.kidneys:
        if k.side == side:
            return np.asarray(k.centre, float)
    for c in an.label_centres:
        if sign * (c[2] - an.cx) > 0:
            return np.asarray(c, float)
    return np.array([an.z_kidney[side], an.y_spine + 10.0, an.cx + sign * 70.0])


def _paint_beside_kidneys(cv: _Canvas, an: Anatomy, organs: Organs) -> None:
    """The liver's inferior lobe and the spleen's lower pole beside the kidneys (``varied-organs``)."""
    rng = np.random.default_rng(organs.lump_seed)  # not the geometry's stream: the rest stays the same
    for side, tissue, shape in (("right", "liver", organs.liver_lobe), ("left", "spleen", organs.spleen_pole)):
        if shape is None:
            continue
        (dz, dy, dx), radii = shape
        lateral = -1.0 if side == "right" else 1.0
        centre = _kidney_centre(an, side) + (dz, dy, lateral * dx)
        _paint_ellipsoid(cv, T[tissue], tuple(centre), radii, None, _lumps(rng),
                         over=(T["visceral_fat"], T["lung"]))


def _paint_organs(cv: _Canvas, an: Anatomy, rng, organs: Optional[Organs] = None) -> None:
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
    if organs is not None:
        _paint_beside_kidneys(cv, an, organs)
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
