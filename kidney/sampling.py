"""What a stage-2 training step reads: crops picked through a mass, boxes cut from them.

A stage-2 crop holds a whole kidney and its margin. Drawn uniformly, many crops hold no lesion (a
case's other kidney, or a ROI stage 1 put elsewhere), and a small lesion beside a large one is a few
hundred of the crop's tens of thousands of active voxels. nnU-Net trains on patches (its KiTS
patch is about 10 cm a side) and centres a third of them on a foreground voxel ("foreground
oversampling"), so rare classes are seen often. Two ways to do the same here, both drawn from the
step's own generator (a sample stays a function of ``(seed, micro_step)``):

- :func:`mass_owners` lists, for every mass (KiTS label 2 or 3, a 26-connected part) of every
  training crop, the crop that holds it. Picking a crop as ``owners[rng.integers(len(owners))]``
  picks one mass uniformly among all of them: a crop with two lesions comes twice as often, a crop
  with none never, a crop with a 1 ml lesion as often as one with a 1 litre lesion.
- :func:`patch_box` cuts a box of ``size`` voxels a side from a crop (the crop's own length where it
  is shorter, shifted to lie inside it); with probability ``lesion_share`` centred on a voxel of a
  mass — first one mass drawn uniformly among the crop's, then one of its voxels — otherwise
  anywhere. Inference still reads whole crops. The convolutions do not depend on the box's size (a
  box's faces are where its active voxels end, as a ROI's are), but the blocks' GRN normalises each
  channel over every active voxel of the sample, so a box that holds mostly lesion gives it other
  statistics than a whole crop: how far that matters is measured, not assumed
  (docs/generalisation.md, rounds 47 and 48).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .components import label_parts

__all__ = ["mass_owners", "patch_box", "MASS_LABELS"]

MASS_LABELS = (2, 3)  # KiTS23: tumour, cyst (kidney+masses and masses are built from these)


def _masses(labels: np.ndarray) -> Tuple[np.ndarray, int]:
    """``(parts, n)``: the 26-connected masses of a label map, numbered 1..n (0 elsewhere)."""
    return label_parts(np.isin(labels, MASS_LABELS))


def mass_owners(labels: Sequence[np.ndarray]) -> np.ndarray:
    """``(M,)`` int64: for each of the ``M`` masses of the crops ``labels`` (each a ``(Z, Y, X)`` KiTS
    label map), the index of the crop that holds it, in crop order. Empty when no crop holds a mass."""
    counts = [_masses(np.asarray(lab))[1] for lab in labels]
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


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
        parts, n = _masses(labels)
        if n:
            voxels = np.argwhere(parts == int(rng.integers(1, n + 1)))
            return _centred(voxels[int(rng.integers(len(voxels)))], int(size), labels.shape)
    start = [int(rng.integers(0, max(n - int(size), 0) + 1)) for n in labels.shape]
    return tuple(slice(s, s + min(int(size), n)) for s, n in zip(start, labels.shape))
