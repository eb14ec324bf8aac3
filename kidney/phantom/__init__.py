"""Synthetic abdominal CT in HU with KiTS23 labels, and CT synthesised around real label maps.

Arrays are internal ``(z, y, x)`` = ``I, P, L`` (see :mod:`kidney.io`): ``z`` grows toward the feet,
``y`` toward the back, ``x`` toward the patient's left. Physical coordinates are mm from the corner
of voxel 0: voxel ``k`` of an axis with spacing ``s`` has its centre at ``(k + 0.5) s``.

How a phantom is made (:func:`make_phantom`):

1. Draw an anatomy (:class:`Anatomy`) from the seed: body outline, fat thickness, spine level,
   kidney positions, sizes and tilts, tumours (size, position, exophytic or not, subtype, necrosis)
   and cysts.
2. Paint tissue ids (:data:`TISSUES`) structure by structure on a grid that is 3× finer along ``z``
   when slices are thicker than 1.6 mm (to model the slice's partial volume). Later structures
   overwrite earlier ones only where allowed (organs never overwrite bone or the abdominal wall).
3. Labels come from the final tissue map: cortex, medulla and collecting system -> 1, tumour tissue
   (including necrosis) -> 2, cyst -> 3.
4. HU = tissue mean for the contrast phase + tissue texture (correlated noise) -> averaged over the
   sub-slices of each slice -> Gaussian blur (0.45 voxel in-plane, point spread) -> correlated
   quantum noise -> int16.

The HU table was calibrated on the real non-contrast CT in ``data/totalseg_example`` (see
``docs/phantom.md`` and ``scripts/calibrate_phantom_hu.py``); enhanced phases use typical values.

One job per module: :mod:`.tissues` (the HU table), :mod:`.grid` (grid presets), :mod:`.anatomy`
(geometry drawn from the seed), :mod:`.canvas`, :mod:`.body` and :mod:`.kidneys` (painting tissue
ids), :mod:`.render` (HU), :mod:`.synthetic` (:func:`make_phantom`), :mod:`.around_labels`
(:func:`from_labels`), :mod:`.lesion_paste` (lesions of one label map pasted into another's
kidneys, for ``from_labels``), :mod:`.fascia` (the thin tissue in the fat, ``varied-fascia``), :mod:`.dataset` (KiTS23 layout on disk), :mod:`.calibration`.
"""
from __future__ import annotations

from .anatomy import Anatomy
from .around_labels import from_labels
from .calibration import CALIBRATION_MAP, fat_detail, phantom_masks, real_ct_masks, texture_correlation, tissue_statistics
from .dataset import TISSUE_NAME, write_case, write_dataset
from .appearance import APPEARANCES, Look
from .grid import GRID_PRESETS, GridPreset, training_grid
from .lesion_paste import Lesion, lesions_of, paste_lesions
from .render import default_noise_hu
from .synthetic import Phantom, make_phantom
from .tissues import PHASES, TISSUE_ID, TISSUES, TUMOUR_TYPES, Tissue, tissue_name

__all__ = ["Tissue", "TISSUES", "TISSUE_ID", "PHASES", "GRID_PRESETS", "Phantom", "Anatomy",
           "make_phantom", "from_labels", "write_case", "write_dataset", "tissue_statistics",
           "texture_correlation", "fat_detail",
           "default_noise_hu", "CALIBRATION_MAP", "real_ct_masks", "phantom_masks", "GridPreset",
           "TUMOUR_TYPES", "APPEARANCES", "Look", "training_grid", "Lesion", "lesions_of",
           "paste_lesions", "TISSUE_NAME", "tissue_name"]
