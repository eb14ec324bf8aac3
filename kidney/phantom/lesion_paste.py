"""Real lesions moved into other real kidneys: more lesion geometry from the same label maps.

A KiTS23 label map holds a few lesions, each at one place in one kidney, so 100 training maps teach
about 200 lesion shapes in 200 places. Object-level copy-paste (as TumorCP does for KiTS19 CT)
multiplies that: a lesion of one map — its own shape, its tumour and cyst voxels as they were —
is resampled to another map's grid, scaled and mirrored a little, and pasted into one of that map's
kidneys, centred on a kidney voxel drawn at random, so it may lie deep inside the kidney or bulge
out of it. Pasting works on the labels alone, before :func:`~kidney.phantom.from_labels` paints
the CT around them, so a pasted lesion gets its own tissue like every other lesion, and the CT and
its labels agree by construction.

Label maps: ``(Z, Y, X)`` uint8, 0 background, 1 kidney, 2 tumour, 3 cyst; spacings ``(sz, sy, sx)``
mm. Everything is drawn from the ``rng`` the caller passes, so a seed replays bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .. import io
from ..components import label_parts


@dataclass(frozen=True, eq=False)  # equal only to itself: arrays have no single truth value
class Lesion:
    """One lesion cut out of a label map.

    ``labels``: ``(z, y, x)`` uint8 box, the lesion's own labels (2 tumour, 3 cyst) and 0 around
    it (one voxel of 0 on every side); ``spacing``: its grid in mm; ``source``: the map it came from.
    """

    labels: np.ndarray
    spacing: Tuple[float, float, float]
    source: str

    @property
    def ml(self) -> float:
        return float(np.count_nonzero(self.labels)) * float(np.prod(self.spacing)) / 1000.0

    @property
    def kind(self) -> str:
        """``'tumour'`` or ``'cyst'``: the label most of its voxels carry."""
        return "tumour" if np.count_nonzero(self.labels == 2) >= np.count_nonzero(self.labels == 3) \
            else "cyst"


def lesions_of(labels: np.ndarray, spacing: Sequence[float], source: str,
               min_ml: float = 0.5) -> List[Lesion]:
    """Every lesion of ``labels`` of ``min_ml`` or more: the 26-connected components of the
    tumour and cyst labels together (a tumour with a cyst inside it stays one lesion)."""
    labels = np.asarray(labels)
    spacing = io.check_spacing(spacing, "lesions_of")
    comps, _ = label_parts(labels >= 2)
    out = []
    for i, box in enumerate(ndimage.find_objects(comps), start=1):
        mine = comps[box] == i
        lesion = Lesion(np.pad(np.where(mine, labels[box], 0).astype(np.uint8), 1), spacing, source)
        if lesion.ml >= min_ml:
            out.append(lesion)
    return out


def _placed(lesion: Lesion, spacing, rng) -> np.ndarray:
    """The lesion on a grid of ``spacing``, scaled by 0.8-1.2 and mirrored along each axis with
    probability 1/2."""
    scale = float(rng.uniform(0.8, 1.2))
    src = tuple(s * scale for s in lesion.spacing)  # a larger voxel: the lesion grows by ``scale``
    box = io.resample(lesion.labels, src, spacing, order=0)
    flips = tuple(ax for ax in range(3) if rng.random() < 0.5)
    return np.flip(box, axis=flips) if flips else box


def paste_lesions(labels: np.ndarray, spacing: Sequence[float], donors: Sequence[Lesion], rng,
                  n: int = 1, max_share: float = 0.5,
                  tries: int = 20) -> Tuple[np.ndarray, List[Lesion]]:
    """Paste ``n`` lesions drawn from ``donors`` into the kidneys of ``labels``.

    Each paste draws a donor, places it (:func:`_placed`) with its centroid on a kidney voxel
    (label 1) drawn uniformly, and writes its labels where the map holds background or kidney (a
    lesion already there is never overwritten). A donor larger than ``max_share`` of the
    kidney (with its lesions) it would go into, one that vanishes on this grid (thinner than
    its voxels), or one that would write nothing (every voxel on a lesion already there) is drawn
    again, up to ``tries`` times: a 1-litre tumour does not fit a small kidney.

    Args:
        labels: ``(Z, Y, X)`` label map (0..3); not modified.
        spacing: its ``(sz, sy, sx)`` mm.
        donors: lesions to draw from (:func:`lesions_of` of other maps).
        rng: a ``numpy.random.Generator``.

    Returns:
        ``(new_labels, pasted)``: a uint8 copy with the lesions pasted, and the donors pasted (fewer
        than ``n`` when the map has no kidney voxel left or no donor fits).
    """
    out = np.array(labels, dtype=np.uint8, copy=True)
    if out.ndim != 3:
        raise ValueError(f"paste_lesions needs a 3D label map, got shape {out.shape}")
    spacing = io.check_spacing(spacing, "paste_lesions")
    if not donors:
        raise ValueError("paste_lesions: no donor lesions to paste")
    pasted: List[Lesion] = []
    for _ in range(int(n)):
        kidney = np.argwhere(out == 1)
        if not len(kidney):
            break
        organs, _ = label_parts(out > 0)
        organ_sizes = np.bincount(organs.ravel())  # voxels of each kidney (with its lesions)
        for _ in range(int(tries)):
            donor = donors[int(rng.integers(len(donors)))]
            centre = kidney[int(rng.integers(len(kidney)))]
            box = _placed(donor, spacing, rng)
            organ_voxels = organ_sizes[organs[tuple(centre)]]
            if 0 < np.count_nonzero(box) <= max_share * organ_voxels and _write(out, box, centre):
                pasted.append(donor)
                break
    return out, pasted


def _write(out: np.ndarray, box: np.ndarray, centre: np.ndarray) -> int:
    """Write ``box``'s lesion voxels into ``out`` with the box's centroid on ``centre``, clipped to
    the volume, over background and kidney only; the number of voxels written."""
    corner = centre - np.round(np.argwhere(box > 0).mean(axis=0)).astype(int)
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + box.shape, out.shape)
    if np.any(hi <= lo):
        return 0
    src = box[tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner))]
    dst = out[tuple(slice(a, b) for a, b in zip(lo, hi))]
    free = (src > 0) & (dst <= 1)
    dst[free] = src[free]
    return int(np.count_nonzero(free))
