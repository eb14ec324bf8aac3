"""Training augmentation on the dense HU volume, before sparsification (DESIGN §4).

In order, each drawn from one seeded ``numpy.random.Generator`` (same generator state, same result):

1. affine (probability ``p_affine``): rotation ±22.5° in the axial plane (about the cranio-caudal
   axis 0) and ±5° about each of the other two axes, isotropic scale ×(1 ± 0.15), about the volume
   centre; HU linear (outside → −1000 HU air), labels and ROI mask nearest;
2. flips: each axis with probability 0.3;
3. intensity: HU ×(1 ± 0.1) and ± 5 HU;
4. Gaussian noise σ = 1 HU;
5. Gaussian blur σ ∈ [0.25, 1.5] voxels (probability ``p_blur``).

The paper gives the ranges; the probabilities of the affine and the blur are not stated there and
are this module's choice (:class:`AugmentConfig`). Intensity changes happen before the HU window is
applied, so they also move voxels across the window, as they would on a real scanner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

__all__ = ["AugmentConfig", "augment", "NO_AUGMENT"]


@dataclass(frozen=True)
class AugmentConfig:
    p_affine: float = 0.5
    rotate_deg: Tuple[float, float, float] = (22.5, 5.0, 5.0)  # about axis 0 (axial plane), 1, 2
    scale: float = 0.15
    p_flip: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift_hu: float = 5.0
    noise_hu: float = 1.0
    p_blur: float = 0.2
    blur_sigma: Tuple[float, float] = (0.25, 1.5)
    enabled: bool = True


NO_AUGMENT = AugmentConfig(enabled=False)


def _rotation(angles_rad) -> np.ndarray:
    a0, a1, a2 = angles_rad
    c, s = math.cos(a0), math.sin(a0)
    r0 = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # about axis 0: mixes y and x (in-plane)
    c, s = math.cos(a1), math.sin(a1)
    r1 = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # about axis 1: mixes z and x
    c, s = math.cos(a2), math.sin(a2)
    r2 = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # about axis 2: mixes z and y
    return r0 @ r1 @ r2


def augment(hu: np.ndarray, labels: Optional[np.ndarray], rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig(), mask: Optional[np.ndarray] = None):
    """``(hu, labels, mask)`` augmented; inputs are not modified. ``labels``/``mask`` may be None."""
    hu = np.asarray(hu, np.float32)
    if not config.enabled:
        return hu, labels, mask
    if rng.random() < config.p_affine:
        angles = [math.radians(rng.uniform(-a, a)) for a in config.rotate_deg]
        zoom = rng.uniform(1 - config.scale, 1 + config.scale)
        matrix = _rotation(angles) / zoom  # output -> input coordinates
        centre = (np.array(hu.shape) - 1) / 2.0
        offset = centre - matrix @ centre
        hu = ndimage.affine_transform(hu, matrix, offset=offset, order=1, mode="constant", cval=-1000.0,
                                      prefilter=False)
        if labels is not None:
            labels = ndimage.affine_transform(labels, matrix, offset=offset, order=0, mode="constant", cval=0)
        if mask is not None:
            mask = ndimage.affine_transform(mask.astype(np.uint8), matrix, offset=offset, order=0,
                                            mode="constant", cval=0).astype(bool)
    for axis in range(3):
        if rng.random() < config.p_flip:
            hu = np.flip(hu, axis)
            labels = None if labels is None else np.flip(labels, axis)
            mask = None if mask is None else np.flip(mask, axis)
    hu = hu * np.float32(rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale))
    hu = hu + np.float32(rng.uniform(-config.intensity_shift_hu, config.intensity_shift_hu))
    if config.noise_hu > 0:
        hu = hu + rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(config.noise_hu)
    if rng.random() < config.p_blur:
        hu = ndimage.gaussian_filter(hu, sigma=rng.uniform(*config.blur_sigma), mode="nearest")
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    labels = None if labels is None else np.ascontiguousarray(labels)
    mask = None if mask is None else np.ascontiguousarray(mask)
    return hu, labels, mask
