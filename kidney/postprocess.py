"""Post-processing of a label map: keep the connected parts of the foreground that are kidneys.

A person has at most two kidneys, and a kidney tumour or cyst grows from a kidney, so it touches
one. A predicted island of kidney, tumour or cyst apart from the kidneys is then most likely a
false positive — on the real CT, a patch of spleen taken for kidney. Two rules remove such islands,
both on the 26-connected components of ``labels > 0`` (a kept component keeps its labels as they
were, every other voxel is set to 0):

- ``keep_components = N`` (:func:`keep_largest_components`): the ``N`` largest components. Where
  an island outgrows what was found of a kidney, the kidney goes instead.
- ``keep_components = "stage1"`` (:func:`keep_anchored_components`): the components that touch a
  stage-1 kidney — a voxel of a component of stage 1's map that made a ROI, before its dilation
  (:func:`kidney.roi.cores_on_scan`). Stage 2 sees each ROI's dilated component, which reaches
  about a centimetre past what stage 1 found; an island that lies wholly in that rim, or in
  another ROI's, is dropped, and a kidney stage 1 found is never dropped for its size.

The rules are not in the paper. Like nnU-Net's post-processing, the setting is chosen per set of
weights on validation data (``scripts/choose_postprocess.py`` for the first rule) and stored with
the stage-2 weights (``keep_components`` in the file's metadata), which
:class:`kidney.pipeline.Segmenter` reads; a caller can override it (``Segmenter(keep_components=...)``,
``kidney segment --keep-components``). A horseshoe kidney is one component, a single kidney one:
keeping two never removes them.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .components import label_parts

__all__ = ["keep_largest_components", "keep_anchored_components", "check_keep_components",
           "META_KEY", "STAGE1"]

#: the stage-2 weights metadata entry that holds the chosen setting
META_KEY = "keep_components"
#: the setting that keeps the components touching stage 1's kidneys
STAGE1 = "stage1"


def check_keep_components(n, where: str = "keep_components") -> Union[int, str, None]:
    """``n`` as an int >= 1, ``"stage1"``, or None for "keep everything" (``None`` or 0); a clear
    error otherwise."""
    if n is None or n == STAGE1:
        return n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{where} must be a whole number >= 0 (0: keep every component) or "
                         f"{STAGE1!r} (keep what touches stage 1's kidneys), got {n!r}")
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
    if n == STAGE1:
        raise ValueError(f"keep_largest_components takes a number; {STAGE1!r} is keep_anchored_components' rule")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"keep_largest_components needs a (Z, Y, X) label map, got shape {labels.shape}")
    out = labels.copy()
    if n is None:
        return out
    comp, count = label_parts(labels > 0)
    if count <= n:
        return out
    sizes = np.bincount(comp.ravel(), minlength=count + 1)[1:]
    keep = np.zeros(count + 1, bool)
    keep[np.argsort(-sizes, kind="stable")[:n] + 1] = True  # stable: equal sizes keep scipy's order
    out[~keep[comp]] = 0
    return out


def keep_anchored_components(labels: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """A copy of ``labels`` with every foreground component that has no voxel in ``anchor`` set to 0.

    Args:
        labels: ``(Z, Y, X)`` integer label map (0 background; any other value foreground).
        anchor: ``(Z, Y, X)`` bool, the same shape: where stage 1 found a kidney
            (:func:`kidney.roi.cores_on_scan`).

    Returns:
        array of the same shape and dtype; 26-connected components of ``labels > 0``.
    """
    labels, anchor = np.asarray(labels), np.asarray(anchor, bool)
    if labels.ndim != 3 or anchor.shape != labels.shape:
        raise ValueError(f"keep_anchored_components needs a (Z, Y, X) label map and an anchor of its shape, "
                         f"got {labels.shape} and {anchor.shape}")
    out = labels.copy()
    comp, count = label_parts(labels > 0)
    if count == 0:
        return out
    keep = np.zeros(count + 1, bool)
    keep[np.unique(comp[anchor])] = True
    keep[0] = False
    out[~keep[comp]] = 0
    return out
