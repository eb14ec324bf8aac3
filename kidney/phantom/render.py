"""From tissue ids to HU: tissue means for the phase, texture, slice partial volume, blur, quantum noise."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from .appearance import Look


def default_noise_hu(spacing: Sequence[float]) -> float:
    """Quantum-noise sd (HU) for a voxel size: ``11 * (27 mm³ / V)^0.25``, clipped to [8, 25].

    11 HU matches the real 3 mm CT (liver sd 12.9 with texture); smaller voxels are noisier, but
    clinical kernels smooth, hence the 1/4 power rather than 1/2.
    """
    volume = float(np.prod(spacing))
    return float(np.clip(11.0 * (27.0 / volume) ** 0.25, 8.0, 25.0))


def smooth_noise(rng, shape, spacing, corr_mm: float) -> np.ndarray:
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


def _render_hu(tissue_fine: np.ndarray, n_sub: int, spacing, look: Look, noise_hu: float,
               rng) -> np.ndarray:
    """HU (int16) of a tissue-id volume: ``look``'s mean + sd × texture (+ its coarse field, if
    any), averaged over the ``n_sub`` sub-slices, ``look.blur`` point spread, then quantum noise of
    sd ``noise_hu``."""
    mean, sd = look.mean, look.sd
    fine_spacing = (spacing[0] / n_sub, spacing[1], spacing[2])
    tex = smooth_noise(rng, tissue_fine.shape, fine_spacing, 3.0)
    hu = mean[tissue_fine] + sd[tissue_fine] * tex
    del tex
    if look.coarse_sd is not None:  # varied-texture: from its own stream, the rest keeps its draws
        coarse = smooth_noise(np.random.default_rng(look.coarse_seed), tissue_fine.shape, fine_spacing,
                               look.coarse_mm)
        hu += look.coarse_sd[tissue_fine] * coarse
        del coarse
    if n_sub > 1:
        hu = hu.reshape(-1, n_sub, *hu.shape[1:]).mean(axis=1)
    hu = ndimage.gaussian_filter(hu, sigma=look.blur, mode="nearest")
    noise = rng.standard_normal(hu.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0, 0.5, 0.5), mode="wrap")
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    hu += noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


# --- public API ---------------------------------------------------------------------------------
