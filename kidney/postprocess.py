"""Post-processing of a label map: keep the largest connected parts of the foreground.

A person has at most two kidneys, and a kidney tumour or cyst grows from a kidney, so it touches
one. A predicted island of kidney, tumour or cyst apart from the two largest foreground parts is
then most likely a false positive — on the real CT, a patch of spleen taken for kidney.
:func:`keep_largest_components` removes such islands: it keeps the ``n`` largest 26-connected
components of ``labels > 0`` (with their labels as they were) and sets every other voxel to 0.

The rule is not in the paper. Like nnU-Net's post-processing, it is chosen per set of weights on
validation data (``scripts/choose_postprocess.py``) and stored with the stage-2 weights
(``keep_components`` in the file's metadata), which :class:`kidney.pipeline.Segmenter` reads; a
caller can override it (``Segmenter(keep_components=...)``, ``kidney segment --keep-components``).
A horseshoe kidney is one component, a single kidney one: keeping two never removes them.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

__all__ = ["keep_largest_components", "check_keep_components", "META_KEY"]

#: the stage-2 weights metadata entry that holds the chosen setting
META_KEY = "keep_components"
_FULL = np.ones((3, 3, 3), bool)  # 26-connectivity: voxels touching by a face, an edge or a corner


def check_keep_components(n, where: str = "keep_components") -> Optional[int]:
    """``n`` as an int >= 1, or None for "keep everything" (``None`` or 0); a clear error otherwise."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{where} must be a whole number >= 0 (0: keep every component), got {n!r}")
    return int(n) or None


def keep_largest_components(labels: np.ndarray, n: Optional[int]) -> np.ndarray:
    """A copy of ``labels`` with all but the ``n`` largest foreground components set to 0.

    Args:
        labels: ``(Z, Y, X)`` integer label map (0 background; any other value foreground).
        n: how many 26-connected components of ``labels > 0`` to keep, largest first; ``None`` or 0
            keeps all (the copy equals the input).

    Returns:
        array of the same shape and dtype. Of components of equal size the one whose first voxel
        comes first in C order is kept (scipy's numbering), so the result is deterministic.
    """
    n = check_keep_components(n)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"keep_largest_components needs a (Z, Y, X) label map, got shape {labels.shape}")
    out = labels.copy()
    if n is None:
        return out
    comp, count = ndimage.label(labels > 0, structure=_FULL)
    if count <= n:
        return out
    sizes = np.bincount(comp.ravel(), minlength=count + 1)[1:]
    keep = np.zeros(count + 1, bool)
    keep[np.argsort(-sizes, kind="stable")[:n] + 1] = True  # stable: equal sizes keep scipy's order
    out[~keep[comp]] = 0
    return out
