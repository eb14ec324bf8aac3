"""The painting canvas (tissue ids on a mm grid) and the shapes painted on it: ellipsoids and tubes."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


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

    @property
    def fine_spacing(self):
        """``(sz / n_sub, sy, sx)`` mm: the spacing of :attr:`tissue`'s own (sub-slice) grid."""
        return (self.spacing[0] / self.n_sub, self.spacing[1], self.spacing[2])

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


def grown_box(mask: np.ndarray, margin_mm: float, spacing):
    """The bounding box (slices) of ``mask`` (bool) grown by ``ceil(margin_mm / s) + 1`` voxels
    per axis of spacing ``s``, clipped to the array; None when ``mask`` is empty."""
    if not mask.any():
        return None
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    margin = [int(math.ceil(margin_mm / s)) + 1 for s in spacing]
    return tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, mask.shape))


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
