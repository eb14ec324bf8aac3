"""Training patches: a fixed-size box cut from a stage-2 crop, centred on a lesion for a share of draws.

A stage-2 crop holds a whole kidney and its margin (about 10 × 10 × 14 cm), so a step on it costs a
whole kidney's voxels, and a small lesion in it is a few hundred of the step's hundred thousand
voxels. nnU-Net trains on patches instead (its KiTS patch is about 10 cm a side) and centres a third
of them on a foreground voxel ("foreground oversampling"), so rare classes are seen often. Here:

- ``patch_box(labels, size, rng, lesion_share)``: with probability ``lesion_share`` a box centred
  on a voxel of a mass (KiTS label 2 or 3) — first one mass, a 26-connected part, drawn uniformly
  among the crop's masses, then one of its voxels — so a 1 ml lesion is centred as often as a
  1 litre one; otherwise (and when the crop holds no mass) a box anywhere in the crop.
- The box is ``size`` voxels along each axis (the crop's own length where it is shorter), shifted to
  lie inside the crop. Inference still reads whole crops: the network's convolutions do not depend
  on the box's size, and a box's faces are where its active voxels end, as a ROI's are.

Every draw comes from ``rng``; the training step passes its own generator, so a patch is a function
of ``(seed, micro_step)`` like the rest of the step's sample.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

__all__ = ["patch_box", "MASS_LABELS"]

MASS_LABELS = (2, 3)  # KiTS23: tumour, cyst (kidney+masses and masses are built from these)


def _centred(centre, size: int, shape) -> Tuple[slice, ...]:
    """The box of ``min(size, n)`` voxels per axis around ``centre``, shifted to lie in ``shape``."""
    box = []
    for c, n in zip(centre, shape):
        m = min(size, n)
        start = int(np.clip(int(c) - m // 2, 0, n - m))
        box.append(slice(start, start + m))
    return tuple(box)


def patch_box(labels: np.ndarray, size: int, rng: np.random.Generator,
              lesion_share: float = 0.0) -> Tuple[slice, ...]:
    """A training patch of a stage-2 crop: a tuple of 3 slices into ``labels`` ``(Z, Y, X)`` (KiTS
    labels, any integer dtype). ``size`` >= 1 voxels a side; ``lesion_share`` in [0, 1]."""
    if int(size) < 1:
        raise ValueError(f"patch size must be >= 1 voxel, got {size}")
    if not 0.0 <= lesion_share <= 1.0:
        raise ValueError(f"lesion_share must lie in [0, 1], got {lesion_share}")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3-d (Z, Y, X) array, got shape {labels.shape}")
    if lesion_share > 0 and rng.random() < lesion_share:
        parts, n = ndimage.label(np.isin(labels, MASS_LABELS), structure=np.ones((3, 3, 3), bool))
        if n:
            voxels = np.argwhere(parts == int(rng.integers(1, n + 1)))
            return _centred(voxels[int(rng.integers(len(voxels)))], int(size), labels.shape)
    start = [int(rng.integers(0, max(n - int(size), 0) + 1)) for n in labels.shape]
    return tuple(slice(s, s + min(int(size), n)) for s, n in zip(start, labels.shape))
