"""The CT-like active set every conv benchmark uses, so figures compare across tools and cards.

In a grid (D, H, W), the body is the elliptic cylinder along D with semi-axes 0.80·H/2 and
0.95·W/2 centred in every slice; a float32 N(0, 1) field from ``np.random.default_rng(1234)`` is
smoothed with ``scipy.ndimage.gaussian_filter(sigma=2)``, and the active voxels are the body
voxels above the in-body quantile that leaves exactly ``round(density · D·H·W)`` active.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# (name, grid, density) — the two sets the benchmarks report
CT_LIKE_SETS = [("ct15", (128, 256, 256), 0.15), ("ct05", (96, 512, 512), 0.05)]


def ct_like_coords(shape=(128, 256, 256), density=0.15, seed=1234) -> np.ndarray:
    """``(N, 4) int32 [batch=0, z, y, x]`` in canonical order, ``N = round(density · D·H·W)``."""
    D, H, W = shape
    y, x = np.ogrid[:H, :W]
    body2d = ((y - (H - 1) / 2) / (0.80 * H / 2)) ** 2 + ((x - (W - 1) / 2) / (0.95 * W / 2)) ** 2 <= 1
    body = np.broadcast_to(body2d, shape)
    field = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    field = ndimage.gaussian_filter(field, sigma=2)
    n_active = int(round(density * D * H * W))
    inside = field[body]
    if n_active > inside.size:
        raise ValueError(f"density {density} needs {n_active} voxels but the body has only {inside.size}")
    # the n_active largest in-body values (ties are measure-zero for a continuous field)
    threshold = np.partition(inside, inside.size - n_active)[inside.size - n_active]
    active = body & (field >= threshold)
    zyx = np.argwhere(active)
    return np.concatenate([np.zeros((len(zyx), 1), np.int64), zyx], axis=1).astype(np.int32)
