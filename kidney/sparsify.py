"""HU-window sparsification: a CT volume -> a :class:`sparseconv.SparseTensor`.

Rule (docs/design.md, Sparsification): keep voxel ``p`` iff ``lo <= HU[p] <= hi`` (and ``mask[p]``
when a mask, e.g. the dilated ROI, is given); its single feature is the standardised HU
``(HU - mean) / std``. Coordinates are the voxel indices ``[batch, z, y, x]`` of the (already
resampled) grid it was given.

Presets hold the paper's two stages: :data:`STAGE1` (whole scan at 1.99 mm, window
``[-53.4, 283.2]``, ``(HU - 48.10) / 62.65``) and :data:`STAGE2` (ROI crops at 0.78 mm, window
``[-300, 500]``, ``(HU - 57.80) / 81.26``). They are the one definition of these constants:
training, the pipeline and the ROI rule read them from here (:func:`stage_preset`). The windows and
standardisation hold for every grid; ``spacing_mm`` is the paper's grid, the default wherever no
other grid is given (weights trained on another grid record it in their metadata, ``spacing_mm``,
and the pipeline runs them on that grid; the ROI rule's sizes are defined in voxels of these grids).

Empty result: :func:`sparsify` never fails because nothing lies in the window. It returns a
:class:`Sparsified` whose ``tensor`` has 0 rows and whose ``empty`` flag is true; the pipeline
checks ``result.empty`` (e.g. to output an all-background label map) or calls
:meth:`Sparsified.require`, which raises :class:`EmptyVolumeError` (a ``ValueError``) naming the
window, mask and volume shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from sparseconv import SparseTensor

__all__ = ["Preset", "STAGE1", "STAGE2", "PRESETS", "STAGE_PRESETS", "Sparsified", "EmptyVolumeError",
           "in_window", "standardise", "sparsify", "get_preset", "stage_preset"]


@dataclass(frozen=True)
class Preset:
    """One stage's sparsification constants.

    Attributes:
        name: ``'stage1'`` / ``'stage2'``.
        spacing_mm: the paper's isotropic grid spacing for this stage (the default grid the volume
            is resampled to before sparsifying; weights may record another).
        window: ``(lo, hi)`` HU, both inclusive.
        mean, std: standardisation ``(HU - mean) / std``.
    """

    name: str
    spacing_mm: float
    window: Tuple[float, float]
    mean: float
    std: float


STAGE1 = Preset("stage1", 1.99, (-53.4, 283.2), 48.10, 62.65)
STAGE2 = Preset("stage2", 0.78, (-300.0, 500.0), 57.80, 81.26)
PRESETS = {p.name: p for p in (STAGE1, STAGE2)}
#: The preset of each stage number.
STAGE_PRESETS = {1: STAGE1, 2: STAGE2}


def get_preset(preset) -> Preset:
    """A :class:`Preset` from itself or its name (``'stage1'``, ``'stage2'``)."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[str(preset)]
    except KeyError:
        raise ValueError(f"unknown sparsification preset {preset!r}; use one of "
                         f"{sorted(PRESETS)}") from None


def stage_preset(stage: int) -> Preset:
    """The :class:`Preset` of stage ``1`` or ``2``."""
    try:
        return STAGE_PRESETS[stage]
    except (KeyError, TypeError):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}") from None


class EmptyVolumeError(ValueError):
    """No voxel of a volume lies in the HU window (and mask)."""


@dataclass(frozen=True)
class Sparsified:
    """Result of :func:`sparsify`.

    Attributes:
        tensor: ``SparseTensor`` with coords ``(N, 4) int32`` and feats ``(N, 1) float32``; 0 rows
            when empty.
        active_fraction: ``N / (Z * Y * X)`` of the input grid (0.0 for an empty result).
        n_active: ``N``.
        preset: the constants used.
        masked: whether an ROI mask restricted the result.
    """

    tensor: SparseTensor
    active_fraction: float
    n_active: int
    preset: Preset
    masked: bool

    @property
    def empty(self) -> bool:
        return self.n_active == 0

    @property
    def spatial_shape(self) -> Tuple[int, int, int]:
        return self.tensor.spatial_shape

    def require(self) -> SparseTensor:
        """The tensor, or :class:`EmptyVolumeError` when nothing was kept."""
        if self.empty:
            lo, hi = self.preset.window
            where = " inside the mask" if self.masked else ""
            raise EmptyVolumeError(f"no voxel of the {self.spatial_shape} volume lies in the "
                                   f"{self.preset.name} window [{lo}, {hi}] HU{where}")
        return self.tensor


def in_window(hu: np.ndarray, preset) -> np.ndarray:
    """Boolean mask ``lo <= hu <= hi`` (same shape as ``hu``)."""
    lo, hi = get_preset(preset).window
    hu = np.asarray(hu)
    return (hu >= lo) & (hu <= hi)


def standardise(hu, preset) -> np.ndarray:
    """``(hu - mean) / std`` as float32 (computed in float64)."""
    p = get_preset(preset)
    return ((np.asarray(hu, dtype=np.float64) - p.mean) / p.std).astype(np.float32)


def sparsify(hu: np.ndarray, preset="stage1", *, mask: Optional[np.ndarray] = None,
             batch_index: int = 0) -> Sparsified:
    """Active voxels of a HU volume as a one-channel sparse tensor.

    Args:
        hu: ``(Z, Y, X)`` HU volume on the grid the network sees (already resampled to
            ``preset.spacing_mm``), finite.
        preset: :data:`STAGE1`, :data:`STAGE2`, another :class:`Preset`, or a preset name.
        mask: optional ``(Z, Y, X)`` bool ROI; voxels outside it are dropped.
        batch_index: value of the batch column of the coords (the tensor's ``batch_size`` is
            ``batch_index + 1``).

    Returns:
        :class:`Sparsified` (check ``.empty``; see the module docstring).
    """
    p = get_preset(preset)
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"sparsify needs a (Z, Y, X) volume, got shape {hu.shape}")
    if np.issubdtype(hu.dtype, np.floating) and not np.isfinite(hu).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(hu))[0])
        raise ValueError(f"sparsify: non-finite HU {hu[first]} at index {first} of a "
                         f"{hu.shape} volume")
    keep = in_window(hu, p)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != hu.shape:
            raise ValueError(f"sparsify: mask shape {mask.shape} != volume shape {hu.shape}")
        keep &= mask.astype(bool, copy=False)
    zyx = np.argwhere(keep)  # row-major: already in canonical (z, y, x) order
    coords = np.empty((len(zyx), 4), dtype=np.int32)
    coords[:, 0] = batch_index
    coords[:, 1:] = zyx
    feats = standardise(hu[keep], p).reshape(-1, 1)
    tensor = SparseTensor(coords, feats, hu.shape, batch_size=batch_index + 1)
    n = len(coords)
    return Sparsified(tensor, n / hu.size if hu.size else 0.0, n, p, mask is not None)
