"""Tissues of the phantoms: HU per contrast phase, texture, KiTS23 label; groups used by painting."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

PHASES = ("noncontrast", "corticomedullary", "nephrographic")


@dataclass(frozen=True)
class Tissue:
    """A tissue: HU mean per phase (noncontrast, corticomedullary, nephrographic), texture sd."""

    name: str
    hu: Tuple[float, float, float]
    sd: float
    label: int = 0


# Order = tissue id. Non-contrast means: the real CT (docs/phantom.md); enhanced: typical values.
TISSUES: Tuple[Tissue, ...] = (
    Tissue("air", (-1000, -1000, -1000), 3),
    Tissue("subcutaneous_fat", (-100, -100, -100), 10),
    Tissue("visceral_fat", (-95, -95, -95), 12),
    Tissue("muscle", (30, 45, 50), 8),
    Tissue("lung", (-820, -820, -820), 35),
    Tissue("cortical_bone", (750, 750, 750), 80),
    Tissue("cancellous_bone", (140, 140, 140), 30),
    Tissue("disc", (85, 85, 85), 10),
    Tissue("spinal_canal", (16, 16, 16), 6),
    Tissue("liver", (47, 75, 105), 6),
    Tissue("spleen", (35, 120, 115), 6),
    Tissue("pancreas", (30, 100, 85), 10),
    Tissue("gallbladder", (4, 4, 4), 4),
    Tissue("bowel_wall", (35, 90, 80), 8),
    Tissue("bowel_fluid", (15, 15, 15), 6),
    Tissue("gas", (-950, -950, -950), 25),
    Tissue("feces", (-60, -60, -60), 70),
    Tissue("artery", (42, 300, 170), 8),
    Tissue("vein", (40, 120, 150), 8),
    Tissue("portal_vein", (40, 150, 170), 8),
    Tissue("renal_cortex", (32, 180, 165), 8, 1),
    Tissue("renal_medulla", (28, 80, 160), 8, 1),
    Tissue("collecting_system", (8, 8, 10), 4, 1),
    Tissue("ureter", (8, 8, 10), 4),
    Tissue("cyst", (8, 8, 8), 4, 3),
    Tissue("tumour_clear_cell", (35, 140, 110), 25, 2),
    Tissue("tumour_papillary", (38, 55, 75), 10, 2),
    Tissue("tumour_chromophobe", (38, 100, 110), 15, 2),
    Tissue("tumour_necrosis", (22, 25, 25), 8, 2),
)
TISSUE_ID: Dict[str, int] = {t.name: i for i, t in enumerate(TISSUES)}


def tissue_name(i: int) -> str:
    """The name of tissue id ``i`` of a phantom's tissue map: a :data:`TISSUES` entry, or
    ``"lesion tissue"`` for the ids the ``varied`` appearances draw per lesion (beyond the table)."""
    return TISSUES[i].name if 0 <= i < len(TISSUES) else "lesion tissue"


T = TISSUE_ID
_LABEL_OF_TISSUE = np.array([t.label for t in TISSUES] + [0] * (256 - len(TISSUES)), np.uint8)
TUMOUR_TYPES = ("tumour_clear_cell", "tumour_papillary", "tumour_chromophobe")
_BONES = (T["cortical_bone"], T["cancellous_bone"], T["disc"], T["spinal_canal"])
_WALL = (T["air"], T["subcutaneous_fat"], T["muscle"]) + _BONES
_CAVITY = tuple(i for i in range(len(TISSUES)) if i not in _WALL)
