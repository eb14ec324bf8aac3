"""Field-of-view slabs: a scan cut along its cranio-caudal axis, to test stage 1 at other fields of view.

A KiTS23 scan usually spans the whole abdomen; a user's scan may end inside a kidney or hold none.
:func:`fov_slabs` cuts three kinds of slab from a labelled scan (axis 0 is cranio-caudal, as
:mod:`kidney.io` reads it):

``no-kidney``  the longest run of slices above or below every labelled voxel, if 40 mm or more:
               stage 1 should propose no ROI there;
``half``       the scan cut through the middle of its kidneys (the cranial half): kidneys cut by
               the volume's edge;
``tight``      the kidneys' slices plus 15 mm either side: a kidney-level scan.

``scripts/fov_check.py`` and ``scripts/stage_errors.py --slab`` score the pipeline on them.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fov_slabs", "NO_KIDNEY_MIN_MM", "TIGHT_MARGIN_MM"]

NO_KIDNEY_MIN_MM = 40.0  # a kidney-free slab thinner than this is not cut
TIGHT_MARGIN_MM = 15.0   # the tight slab's margin above and below the kidneys


def fov_slabs(labels: np.ndarray, spacing) -> dict:
    """``{kind: slice}`` along axis 0 for ``labels`` ``(Z, Y, X)`` (KiTS labels, 0 = background) on a
    grid of ``spacing`` ``(z, y, x)`` mm; empty when nothing is labelled."""
    z = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    out = {}
    if z.size == 0:
        return out
    lo, hi, n = int(z[0]), int(z[-1]) + 1, labels.shape[0]
    above, below = lo, n - hi
    need = int(np.ceil(NO_KIDNEY_MIN_MM / spacing[0]))
    if max(above, below) >= need:
        out["no-kidney"] = slice(0, above) if above >= below else slice(hi, n)
    out["half"] = slice(0, (lo + hi) // 2)
    m = int(np.ceil(TIGHT_MARGIN_MM / spacing[0]))
    out["tight"] = slice(max(0, lo - m), min(n, hi + m))
    return out
