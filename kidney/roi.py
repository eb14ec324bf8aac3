"""Stage-1 output -> kidney regions -> stage-2 crops (docs/design.md, ROI rule).

The rule, at the paper's spacings (stage 1 on a 1.99 mm grid, stage 2 on a 0.78 mm grid):

1. ``max`` over stage 1's three sigmoid outputs ``>= 0.1`` (voxels stage 1 did not see — outside
   the HU window — count as 0);
2. drop 26-connected components of fewer than **50** voxels;
3. the remaining 26-connected components, each dilated on its own with a ball of diameter
   **11** voxels (radius 5);
4. back to the scan grid: each dilated component's box (in mm) becomes a box on the whole-scan
   0.78 mm grid, widened by **±10** voxels cranio-caudally (axis 0) and **±35** in-plane (axes 1, 2)
   and clipped to the scan. Stage 2 sees the voxels of that box that lie in its HU window *and*
   inside the dilated component (resampled to the crop grid, nearest neighbour).

Sizes are defined in voxels of the paper's grids (the spacings of the stage presets,
:data:`kidney.sparsify.STAGE1` / :data:`~kidney.sparsify.STAGE2`); with other spacings (a documented
CPU config, e.g. the shipped weights' own grids) they are converted through millimetres —
``min_voxels · 1.99³ mm³``, a ball of diameter ``11 · 1.99 mm``, margins ``(10, 35, 35) · 0.78 mm``
— so they are exactly the paper's numbers at the paper's spacings and the same physical sizes
otherwise. :class:`RoiConfig` holds these numbers (the one place they are defined).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .components import label_parts
from .sparsify import STAGE1, STAGE2

__all__ = ["RoiConfig", "META_KEYS", "roi_overrides", "Roi", "find_rois", "component_masks", "crop_box",
           "resample_box", "crop_roi", "paste_probabilities", "scan_box", "cores_on_scan", "at_stage1_centres",
           "ball"]


#: the stage-1 weights metadata entries that hold a ROI rule chosen for those weights, and the
#: RoiConfig field each sets (see :meth:`RoiConfig.stored_with`)
META_KEYS = {"roi_threshold": "threshold", "roi_dilation": "dilation_diameter"}


def roi_overrides(threshold=None, dilation=None) -> dict:
    """The :data:`META_KEYS` entries for the settings given (None: not given)."""
    return {k: v for k, v in (("roi_threshold", threshold), ("roi_dilation", dilation)) if v is not None}


@dataclass(frozen=True)
class RoiConfig:
    """ROI rule constants (docs/design.md, ROI rule), in voxels of the paper's grids."""

    threshold: float = 0.1
    min_voxels: int = 50                 # stage-1 voxels at 1.99 mm
    dilation_diameter: int = 11          # stage-1 voxels at 1.99 mm
    margin: Tuple[int, int, int] = (10, 35, 35)  # stage-2 voxels at 0.78 mm: (cranio-caudal, y, x)
    ref_stage1_mm: float = STAGE1.spacing_mm   # the grids the voxel counts above refer to
    ref_stage2_mm: float = STAGE2.spacing_mm

    def stored_with(self, meta: dict, where: str = "in the metadata of the stage-1 weights") -> "RoiConfig":
        """This rule with the settings a stage-1 weights file stores, or a caller gives
        (:data:`META_KEYS`: a threshold in (0, 1), a dilation diameter, a whole number >= 1 of
        voxels at the paper's 1.99 mm); what is not given stays as it is. A bad value raises
        ``ValueError`` naming the entry and ``where`` it came from."""
        changes = {}
        for key, field in META_KEYS.items():
            if key not in meta:
                continue
            v = meta[key]
            if field == "threshold":
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v < 1.0
            else:
                ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
            if not ok:
                want = "a number in (0, 1)" if field == "threshold" else "a whole number >= 1"
                raise ValueError(f"{key} {where} must be {want}, got {v!r}")
            changes[field] = float(v) if field == "threshold" else int(v)
        return replace(self, **changes) if changes else self

    def min_voxels_at(self, spacing1: float) -> int:
        return max(1, int(round(self.min_voxels * (self.ref_stage1_mm / spacing1) ** 3)))

    def dilation_diameter_at(self, spacing1: float) -> float:
        """Ball diameter in stage-1 voxels (11 at the paper's spacing)."""
        return self.dilation_diameter * self.ref_stage1_mm / spacing1

    def margin_at(self, spacing2: float) -> Tuple[int, int, int]:
        return tuple(int(round(m * self.ref_stage2_mm / spacing2)) for m in self.margin)


def ball(diameter: float) -> np.ndarray:
    """Boolean ball structuring element of radius ``r = (diameter - 1) / 2`` voxels: offsets with
    ``dz² + dy² + dx² <= r²`` (diameter 11 -> radius 5, an 11×11×11 element, as skimage's ``ball(5)``)."""
    r = max(0.0, (diameter - 1) / 2.0)
    n = int(np.floor(r + 1e-9))
    ax = np.arange(-n, n + 1)
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    return (z * z + y * y + x * x) <= r * r


def component_masks(prob: np.ndarray, spacing1: float = STAGE1.spacing_mm,
                    config: RoiConfig = RoiConfig()) -> List[np.ndarray]:
    """Steps 1–3: the dilated kidney components of a stage-1 probability map (largest first).

    Args:
        prob: ``(Z, Y, X)`` max-over-HECs sigmoid on the stage-1 grid (or a boolean mask).
        spacing1: the stage-1 grid spacing in mm.
    Returns:
        One boolean ``(Z, Y, X)`` mask per kept component, each dilated on its own.
    """
    return [dilated for _, dilated in _components(prob, spacing1, config)]


def _components(prob: np.ndarray, spacing1: float, config: RoiConfig) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Steps 1–3 as ``(core, dilated)`` boolean mask pairs, largest first: ``core`` is the kept
    component itself, ``dilated`` the same component dilated on its own."""
    prob = np.asarray(prob)
    fg = prob if prob.dtype == bool else prob >= config.threshold
    lab, n = label_parts(fg)
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = [i for i in range(1, n + 1) if sizes[i] >= config.min_voxels_at(spacing1)]
    keep.sort(key=lambda i: (-sizes[i], i))
    element = ball(config.dilation_diameter_at(spacing1))
    boxes = ndimage.find_objects(lab)
    out = []
    pad = element.shape[0] // 2
    for i in keep:
        sl = boxes[i - 1]
        lo = [max(0, s.start - pad) for s in sl]
        hi = [min(n_, s.stop + pad) for s, n_ in zip(sl, lab.shape)]
        sub = tuple(slice(a, b) for a, b in zip(lo, hi))
        core = lab == i
        comp = np.zeros(lab.shape, bool)
        comp[sub] = ndimage.binary_dilation(core[sub], structure=element)
        out.append((core, comp))
    return out


@dataclass
class Roi:
    """One kidney region.

    Attributes:
        lo, hi: the crop box ``[lo, hi)`` on the whole-scan stage-2 grid (voxel indices).
        grid2_shape: shape of the whole-scan stage-2 grid (the box is clipped to it).
        spacing2: stage-2 spacing (mm).
        mask1: the dilated component on the stage-1 grid.
        spacing1: stage-1 spacing (mm).
        voxels1: stage-1 voxels at the threshold inside the dilated component (the component
            itself, and any other such voxels its dilation reaches); ``core1.sum()`` counts the
            component alone.
        core1: the component before dilation, on the stage-1 grid (what stage 1 took for a
            kidney; the post-processing ``keep_components="stage1"`` keeps what touches it).
            ``None`` for a ROI built by hand without it.
    """

    lo: Tuple[int, int, int]
    hi: Tuple[int, int, int]
    grid2_shape: Tuple[int, int, int]
    spacing2: float
    mask1: np.ndarray
    spacing1: float
    voxels1: int = 0
    core1: Optional[np.ndarray] = None

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(b - a) for a, b in zip(self.lo, self.hi))

    @property
    def box_mm(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        return (tuple(a * self.spacing2 for a in self.lo), tuple(b * self.spacing2 for b in self.hi))

    def mask2(self) -> np.ndarray:
        """The dilated component on this crop's stage-2 grid (nearest neighbour)."""
        return resample_box(self.mask1.astype(np.uint8), (self.spacing1,) * 3, self.spacing2,
                            self.lo, self.shape, order=0).astype(bool)


def crop_box(mask1: np.ndarray, spacing1: float, scan_extent_mm: Sequence[float], spacing2: float,
             config: RoiConfig = RoiConfig()):
    """Step 4: ``(lo, hi, grid2_shape)`` of a component's crop on the whole-scan stage-2 grid.

    The component's box ``[a, b)`` in stage-1 voxels spans ``[a·t1, b·t1)`` mm from the scan's
    corner; on the stage-2 grid that is ``[floor(a·t1/t2), ceil(b·t1/t2))``, then ± margins,
    clipped to ``[0, grid2_shape)``.
    """
    idx = np.argwhere(mask1)
    a, b = idx.min(axis=0), idx.max(axis=0) + 1
    grid2 = tuple(max(1, int(round(e / spacing2))) for e in scan_extent_mm)
    margin = np.array(config.margin_at(spacing2))
    lo = np.floor(a * spacing1 / spacing2 + 1e-6).astype(int) - margin
    hi = np.ceil(b * spacing1 / spacing2 - 1e-6).astype(int) + margin
    lo = np.clip(lo, 0, np.array(grid2) - 1)
    hi = np.clip(hi, lo + 1, np.array(grid2))
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi), grid2


def find_rois(prob: np.ndarray, spacing1: float, scan_extent_mm: Sequence[float], spacing2: float,
              config: RoiConfig = RoiConfig()) -> List[Roi]:
    """The whole ROI rule: stage-1 probabilities (on its grid) -> list of :class:`Roi` (largest first)."""
    rois = []
    fg = np.asarray(prob) >= config.threshold if np.asarray(prob).dtype != bool else np.asarray(prob)
    for core, comp in _components(prob, spacing1, config):
        lo, hi, grid2 = crop_box(comp, spacing1, scan_extent_mm, spacing2, config)
        rois.append(Roi(lo, hi, grid2, float(spacing2), comp, float(spacing1), int((comp & fg).sum()), core))
    return rois


def at_stage1_centres(array: np.ndarray, spacing, shape1: Sequence[int], spacing1: float) -> np.ndarray:
    """A scan-grid volume read at the centre of each voxel of the stage-1 grid (nearest): ``shape1``,
    ``array``'s dtype. Stage-1 voxel ``j``'s centre, ``(j + 0.5)·t1`` mm from the scan's corner, lies
    in scan voxel ``floor((j + 0.5)·t1 / s)`` (the inverse of :func:`cores_on_scan`'s mapping)."""
    idx = [np.minimum(((np.arange(n) + 0.5) * spacing1 / s).astype(int), m - 1)
           for n, s, m in zip(shape1, spacing, np.shape(array))]
    return np.asarray(array)[np.ix_(*idx)]


def cores_on_scan(rois: Sequence[Roi], spacing, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """The union of the ROIs' stage-1 components (:attr:`Roi.core1`, before dilation) on the scan
    voxels ``[lo, hi)`` (spacing ``spacing`` mm): ``(hi - lo)`` bool. Scan voxel ``i`` takes the
    stage-1 voxel its centre lies in, ``floor((i + 0.5)·s / t1)`` (the stage-1 grid starts at the
    scan's corner, as every grid here does)."""
    out = np.zeros(tuple(int(b - a) for a, b in zip(lo, hi)), bool)
    for r in rois:
        if r.core1 is None:
            raise ValueError("a ROI without its stage-1 component (core1) cannot anchor the post-processing")
        idx = [np.minimum(((np.arange(a, b) + 0.5) * s / r.spacing1).astype(int), n - 1)
               for a, b, s, n in zip(lo, hi, spacing, r.core1.shape)]
        out |= r.core1[np.ix_(*idx)]
    return out


def resample_box(array: np.ndarray, spacing, new_spacing: float, lo: Sequence[int],
                 shape: Sequence[int], *, order: int = 1, cval: Optional[float] = None) -> np.ndarray:
    """The box ``[lo, lo + shape)`` of ``array`` resampled to ``new_spacing`` (same convention as
    :func:`kidney.io.resample`: output voxel ``j`` of the whole new grid samples input
    ``(j + 0.5)·t/s − 0.5``), without resampling the rest of the scan. Edges: nearest value."""
    array = np.asarray(array)
    scale = np.array([new_spacing] * 3, float) / np.array(spacing, float)
    offset = (np.array(lo, float) + 0.5) * scale - 0.5
    if order >= 1 and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    # read only the input window the box needs (plus 2 voxels), to keep it fast on big scans
    start = np.maximum(np.floor(offset).astype(int) - 2, 0)
    stop = np.minimum(np.ceil(offset + scale * (np.array(shape) - 1)).astype(int) + 3, array.shape)
    start = np.minimum(start, np.array(array.shape) - 1)
    sub = array[tuple(slice(a, b) for a, b in zip(start, stop))]
    return ndimage.affine_transform(sub, scale, offset=offset - start, output_shape=tuple(int(s) for s in shape),
                                    order=order, mode="nearest", prefilter=False)


def crop_roi(image: np.ndarray, spacing, roi: Roi, *, labels: Optional[np.ndarray] = None):
    """``(hu, mask, labels)`` of a ROI on its stage-2 crop grid (labels nearest; ``None`` if not given)."""
    hu = resample_box(image, spacing, roi.spacing2, roi.lo, roi.shape, order=1)
    lab = None if labels is None else resample_box(labels, spacing, roi.spacing2, roi.lo, roi.shape, order=0)
    return hu, roi.mask2(), lab


def scan_box(rois: Sequence[Roi], spacing, shape) -> Tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int arrays: the box of scan voxels (``shape``, spacing ``spacing`` mm) that
    covers every ROI's crop box, one voxel of margin, clipped to the scan. Stage 2's probabilities
    are merged on this box only, not on the whole scan. No ROI: an empty box at the origin."""
    if not rois:
        return np.zeros(3, int), np.zeros(3, int)
    s = np.array(spacing, float)
    los = [np.clip(np.floor(np.array(r.lo) * r.spacing2 / s).astype(int) - 1, 0, shape) for r in rois]
    his = [np.clip(np.ceil(np.array(r.hi) * r.spacing2 / s).astype(int) + 1, 0, shape) for r in rois]
    return np.min(los, axis=0), np.max(his, axis=0)


def paste_probabilities(out: np.ndarray, crop_probs: np.ndarray, roi: Roi, spacing,
                        origin: Sequence[int] = (0, 0, 0), skip_below: Optional[float] = None) -> None:
    """Max-merge a crop's ``(Z, Y, X, C)`` probabilities into ``out`` ``(Z', Y', X', C)``, which holds
    the scan voxels from ``origin`` on (the whole scan grid when ``origin`` is 0).

    Scan voxel ``i`` (centre ``(i + 0.5)·s`` mm) reads the crop at ``(i + 0.5)·s/t2 − 0.5 − lo``
    (linear interpolation); only scan voxels whose centres lie inside the crop box are written, and
    where crops overlap the larger probability wins.

    ``skip_below``: channels whose crop probabilities all lie below it are not pasted. Linear
    interpolation of such values stays below it and a max-merge with them cannot lift a voxel over
    it, so which voxels of ``out`` reach the threshold is unchanged (the values below it may be
    smaller). The pipeline passes its label threshold: most false-positive crops are then free.
    """
    s = np.array(spacing, float)
    t = roi.spacing2
    origin = np.array(origin, int)
    lo_vox = np.ceil(np.array(roi.lo) * t / s - 0.5).astype(int)        # first scan voxel inside
    hi_vox = np.floor(np.array(roi.hi) * t / s - 0.5).astype(int) + 1   # one past the last
    a = np.clip(lo_vox - origin, 0, out.shape[:3])
    b = np.clip(hi_vox - origin, a, out.shape[:3])
    if np.any(b <= a):
        return
    scale = s / t
    offset = (a + origin + 0.5) * scale - 0.5 - np.array(roi.lo)
    shape = tuple(int(v) for v in b - a)
    sub = tuple(slice(int(x), int(y)) for x, y in zip(a, b))
    for c in range(crop_probs.shape[-1]):
        if skip_below is not None and not crop_probs[..., c].max() >= skip_below:
            continue
        vals = ndimage.affine_transform(crop_probs[..., c], scale, offset=offset, output_shape=shape,
                                        order=1, mode="nearest", prefilter=False)
        np.maximum(out[sub + (c,)], vals, out=out[sub + (c,)])
