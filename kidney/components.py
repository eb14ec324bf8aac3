"""Connected parts of a 3D mask: one meaning of "touching" for the whole package.

Two voxels touch when they share a face, an edge or a corner (26-connectivity): that is how KiTS23
counts a lesion, how the ROI rule finds a kidney in stage 1's output, how the post-processing keeps
a component, and how the phantoms paint one tissue per lesion. Every such count goes through
:func:`label_parts`, so a lesion is the same set of voxels wherever it is counted.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

__all__ = ["NEIGHBOURS_26", "label_parts"]

#: SciPy's structuring element for 26-connectivity: the full 3×3×3 cube around a voxel
NEIGHBOURS_26 = np.ones((3, 3, 3), bool)


def label_parts(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """The 26-connected parts of ``mask``.

    Args:
        mask: ``(Z, Y, X)``, true (non-zero) where a voxel belongs to some part.
    Returns:
        ``(parts, n)``: ``parts`` ``(Z, Y, X)`` int32, each part numbered 1..n in the order SciPy
        meets them (first voxel in C order), 0 outside; ``n`` the number of parts.
    """
    return ndimage.label(mask, structure=NEIGHBOURS_26)
