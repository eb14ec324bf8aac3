"""Grid presets of the phantoms (in-plane size, spacing, slices, z extent) and how a grid is drawn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from .. import io


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


def training_grid(seed: int, spacing) -> Tuple[float, float, float]:
    """A coarser grid for a training CT around a real label map: in-plane 1.1–1.6 mm (70 %) or
    2.0–3.2 mm (30 %, small-matrix and downsampled scans), slices one of 2, 2.5, 3, 5 mm, each never
    finer than ``spacing`` ``(sz, sy, sx)`` (drawn from ``seed``).

    Both stages run coarser than KiTS23's native grids (the shipped weights at 5.97 and 1.56 mm), so
    this keeps the synthesis and the training data small while varying partial volume in plane and
    across slices.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20261204]))
    s_in = float(rng.uniform(1.1, 1.6) if rng.random() < 0.7 else rng.uniform(2.0, 3.2))
    s_z = float(rng.choice([2.0, 2.5, 3.0, 5.0]))
    return (max(s_z, float(spacing[0])), max(s_in, float(spacing[1])), max(s_in, float(spacing[2])))
