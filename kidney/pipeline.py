"""The two-stage segmenter: ``segment(image) -> labels`` on the input's own grid (docs/design.md, The paper's method).

1. **Stage 1** — the whole scan resampled (linear) to the stage-1 grid, sparsified with the stage-1
   HU window; the network's full-resolution sigmoids are written into a dense grid (0 where a voxel
   was outside the window) and their max over the 3 HECs goes to the ROI rule (:mod:`kidney.roi`).
2. **ROI** — components, dilation, crop boxes on the stage-2 grid (:func:`kidney.roi.find_rois`).
3. **Stage 2** — each crop resampled (linear) from the *original* scan to the stage-2 grid;
   active voxels = in the stage-2 HU window *and* inside the crop's dilated component.
4. **Back to the scan grid** — each crop's three sigmoid maps (0 at inactive voxels) are
   interpolated (linear) at the scan voxels whose centres fall inside the crop box; where crops
   overlap the larger probability wins (max-merge, per HEC); voxels outside every crop, and voxels
   stage 2 did not see (outside its window or the dilated ROI), are background.
5. **Labels** — HEC probability ``>= 0.5``: 1 where kidney+masses, then 3 where masses, then 2 where
   tumour (each overwrites; masses and tumour only inside kidney+masses).
6. **Post-processing** (when the stage-2 weights or the caller ask for it; not in the paper) —
   only the largest connected parts of the foreground are kept (:mod:`kidney.postprocess`).

Test-time mirroring (``Segmenter(tta=True)``, ``kidney segment --tta``; off by default, the paper
does not state it): each stage's network also runs on its input flipped along every subset of the
three axes (8 passes), each output is flipped back, and the sigmoids are averaged before steps 2 and
5. The active set of a flipped input is the flipped active set, so the mean is over the same sites.
Training flips each axis with probability 0.3, so the network has seen every mirror image.

Test-time blur (``Segmenter(blur_tta=(0, 1))``, ``kidney segment --blur-tta 0,1``; not in the paper,
off unless asked for or stored with the stage-2 weights as ``blur_tta``): stage 2 also runs on each
crop blurred by an isotropic Gaussian of each σ (voxels of the stage-2 grid; 0 is the crop as is) and
its sigmoids are averaged over the passes before steps 4 and 5 — the blur of training's
augmentation (:mod:`kidney.augment`, step 5) applied at test time, so the network reads a scan at
several reconstruction sharpnesses it was trained on. Every pass reads the as-is crop's active sites
(a blurred value is clipped into the window there), so the mean is over the same sites.

Ensembles (``Segmenter(stage2=[a, b, c])``, ``kidney segment --stage2-weights A B C``, or a weights
folder holding several ``stage2*.npz``): the stage's sigmoids are the mean of its networks' (the
members share one grid), within each mirror pass, before steps 2 and 5 — nnU-Net's way with the
folds of a cross-validation. N members cost N times the stage's network time. A stage-1 ensemble
may hold members that read the scan anti-aliased (``antialias``) beside members that read it as it
is, if every member stores ``combine_readings``: the scan is then read both ways, each reading's
members averaged, and the two maps combined by their mean or their minimum before step 2.

No kidney found (empty stage-1 window, or no component above threshold and size) gives an
all-background map and a :class:`NoKidneyWarning`, not an error.

Which grids: the spacings come from the weights files' metadata (the paper's 1.99 / 0.78 mm unless
the weights were trained on another grid — the shipped CPU weights use 5.97 / 1.56 mm).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from sparseconv import no_grad
from sparseconv.device import normalize_device, to_host, use_device_backend
from sparseconv.functional.activation import sigmoid_array

from . import io
from .model import KidneyNet, WeightsError, labels_from_hecs, load_weights
from .peak_memory import PeakRSS
from .postprocess import META_KEY as KEEP_KEY, STAGE1 as KEEP_STAGE1, check_keep_components, \
    keep_anchored_components, keep_largest_components
from .roi import META_KEYS as ROI_META_KEYS, Roi, RoiConfig, cores_on_scan, crop_roi, find_rois, \
    paste_probabilities, roi_overrides, scan_box
from .sparsify import STAGE1, STAGE2, get_preset, in_window, sparsify, stage_preset

__all__ = ["Segmenter", "SegmentResult", "NoKidneyWarning", "segment", "segment_files", "default_weights",
           "WEIGHTS_DIR", "WEIGHT_SETS", "find_inputs"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: the stage-2 weights' metadata key of their test-time blur (:class:`Segmenter`'s ``blur_tta``)
BLUR_KEY = "blur_tta"
#: the stage-1 weights' metadata key: the scan is smoothed before it is shrunk to their grid
#: (:func:`kidney.io.resample`'s ``antialias``), as it was in their training
ANTIALIAS_KEY = "antialias"
#: the stage-1 weights' metadata key: how an ensemble whose members read the scan differently (some
#: anti-aliased, some not) combines its two readings, each the mean of its members: ``"mean"`` or
#: ``"min"`` (a voxel called only as far as both readings call it)
COMBINE_KEY = "combine_readings"
COMBINE_READINGS = ("mean", "min")
#: The 8 mirror images used by test-time mirroring: every subset of the axes (z, y, x), () first.
MIRROR_AXES = tuple(a for k in range(4) for a in itertools.combinations((0, 1, 2), k))
# the shipped weight sets, by name (``--weights NAME``): see kidney/weights/README.md
WEIGHT_SETS = {"phantoms": WEIGHTS_DIR, "varied": WEIGHTS_DIR / "varied"}
DEFAULT_STAGE1 = WEIGHTS_DIR / "stage1_compact.npz"
DEFAULT_STAGE2 = WEIGHTS_DIR / "stage2_compact.npz"
#: one stage's weights as :func:`default_weights` gives them: a file, or a tuple of files (an ensemble)
WeightFiles = Union[Path, Tuple[Path, ...]]


class NoKidneyWarning(UserWarning):
    """Stage 1 found no kidney: the output is all background."""


def default_weights(weights_dir=None) -> Tuple[WeightFiles, WeightFiles]:
    """``(stage1, stage2)`` weights in ``weights_dir`` (default: the shipped ones), each a file or,
    where the folder holds several files for a stage, the tuple of them in name order (an ensemble).

    ``weights_dir`` may also name a shipped set (:data:`WEIGHT_SETS`: ``"phantoms"``, the default,
    or ``"varied"``) when no folder of that name exists. A folder may hold ``stage1*.npz`` /
    ``stage2*.npz`` (e.g. ``stage1_compact.npz``) or, where it holds none for a stage, training
    output folders ``stage1/weights.npz`` and ``stage2/weights.npz``. Several ``stage2*.npz`` (the
    folds of a cross-validation, say), or several ``stage1*.npz`` (the shipped ``varied`` set's stage
    1), are one ensemble: :class:`Segmenter` averages their sigmoids, in name order.
    """
    if weights_dir is None:
        return DEFAULT_STAGE1, DEFAULT_STAGE2
    d = Path(weights_dir)
    if not d.exists() and str(weights_dir) in WEIGHT_SETS:
        d = WEIGHT_SETS[str(weights_dir)]
    if not d.is_dir():
        raise WeightsError(f"weights folder {d} does not exist")
    found = []
    for stage in (1, 2):
        files = [f for f in sorted(d.glob(f"stage{stage}*.npz")) if f.is_file()]
        if not files and (d / f"stage{stage}" / "weights.npz").is_file():
            files = [d / f"stage{stage}" / "weights.npz"]
        if not files:
            raise WeightsError(f"weights folder {d} holds no stage{stage}*.npz or stage{stage}/weights.npz")
        found.append(files[0] if len(files) == 1 else tuple(files))
    return found[0], found[1]


@dataclass
class SegmentResult:
    """What :meth:`Segmenter.segment` found.

    ``labels`` is on the input's grid; ``seconds`` and ``peak_mb`` are per stage (``stage1``,
    ``roi``, ``stage2``, ``merge``); ``peak_mb`` is the process's peak resident memory during the stage
    (Linux: reset before each stage; elsewhere the running maximum). ``probabilities`` (only when
    asked for) are the three HEC sigmoids (kidney+masses, masses, tumour) on the same grid as
    ``labels``, last axis the HEC, 0 outside the stage-2 crops.
    """

    labels: np.ndarray
    rois: List[Roi] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    peak_mb: Dict[str, float] = field(default_factory=dict)
    n_active: Dict[str, int] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    probabilities: Optional[np.ndarray] = None


class _Stage:
    def __init__(self, weights, stage: int):
        if isinstance(weights, KidneyNet):
            self.model, self.meta = weights, {"stage": stage}
        elif isinstance(weights, tuple):
            self.model, self.meta = weights
        else:
            self.model, self.meta = load_weights(weights)
            self.meta["path"] = str(weights)
        got = self.meta.get("stage", stage)
        if int(got) != stage:
            raise WeightsError(f"weights {self.meta.get('path', '')} are for stage {got}, not stage {stage}")
        self.model.eval()
        # weights record their own grid; without one, the paper's grid of the stage's preset
        self.spacing = float(self.meta.get("spacing_mm", stage_preset(stage).spacing_mm))
        self.antialias = check_antialias(self.meta, stage)
        check_combine_readings(self.meta, stage)
        #: ``[(antialias, stage)]``: how the scan is read, and what reads it (one network: itself)
        self.readings = [(self.antialias, self)]
        self.device = "cpu"

    def to(self, device: str) -> "_Stage":
        if device != self.device:
            self.model.to(device)
            self.device = device
        return self

    def probabilities(self, x):
        """``(N, 3)`` sigmoid outputs at the active sites of ``x`` (a host array)."""
        with no_grad():
            logits = self.model(x.to(self.device), n_outputs=1)[0].feats
        return sigmoid_array(to_host(logits))

    def describe(self) -> str:
        return self.model.config.name


class _Ensemble:
    """Several networks of one stage used as one: the mean of their sigmoids, as nnU-Net averages
    its cross-validation folds. The members share the stage's grid; their sum runs in the order
    given, so the result is deterministic.

    Stage-1 members may read the scan differently (some store ``antialias``) if all store how the
    two readings combine (``combine_readings``): :attr:`readings` then holds the members of each
    reading, as it is first, and :meth:`Segmenter.stage1_probabilities` reads the scan once per
    reading, averages each reading's members on it and combines the two maps."""

    def __init__(self, members: List[_Stage]):
        where = [f"{m.meta.get('path', 'a model')} ({m.spacing} mm)" for m in members]
        if len({m.spacing for m in members}) > 1:
            raise WeightsError("an ensemble's weights must share one grid, got " + ", ".join(where))
        self.members = members
        self.spacing = members[0].spacing
        self.meta = {"stage": members[0].meta.get("stage"), "path": ", ".join(str(m.meta.get("path", "a model"))
                                                                               for m in members)}
        settings = ((KEEP_KEY, "choose one with keep_components= / --keep-components"),
                    (BLUR_KEY, "choose one with blur_tta= / --blur-tta"),
                    (COMBINE_KEY, "store one with scripts/store_settings.py --combine-readings"),
                    *((k, f"choose one with {k}= / --{k.replace('_', '-')}") for k in ROI_META_KEYS))
        for key, hint in settings:  # stored with the weights
            stored = {json.dumps(m.meta.get(key)) for m in members}
            if len(stored) > 1:
                raise WeightsError(f"an ensemble's weights store different {key} settings ({sorted(stored)}); {hint}")
            if members[0].meta.get(key) is not None:
                self.meta[key] = members[0].meta[key]
        self.device = "cpu"
        read = sorted({m.antialias for m in members})  # as it is (False) first
        if len(read) > 1 and COMBINE_KEY not in self.meta:
            raise WeightsError(f"an ensemble's weights store different {ANTIALIAS_KEY} settings ("
                               + ", ".join(f"{m.meta.get('path', 'a model')}: {m.antialias}" for m in members)
                               + "); the members must read the scan alike (kidney train --antialias), or all "
                               f"store how the two readings combine (scripts/store_settings.py --combine-readings "
                               f"{'|'.join(COMBINE_READINGS)})")
        #: ``True`` / ``False`` when every member reads the scan alike; ``None`` when they differ
        self.antialias = read[0] if len(read) == 1 else None
        #: the readings combined as :data:`COMBINE_KEY` says (one reading: the plain mean)
        self.combine = self.meta.get(COMBINE_KEY, "mean")
        self.readings = [(self.antialias, self)] if len(read) == 1 else [
            (a, _ensemble_or_one([m for m in members if m.antialias == a])) for a in read]

    def to(self, device: str) -> "_Ensemble":
        for m in self.members:
            m.to(device)
        self.device = device
        return self

    def probabilities(self, x):
        """``(N, 3)``: the members' sigmoids at the active sites of ``x``, averaged."""
        if self.antialias is None:
            raise WeightsError("this ensemble's members read the scan differently: each reading is its own "
                               "input (Segmenter.stage1_probabilities reads the scan once per reading)")
        total = self.members[0].probabilities(x)
        for m in self.members[1:]:
            total = total + m.probabilities(x)
        return total / np.float32(len(self.members))

    def describe(self) -> str:
        text = f"ensemble of {len(self.members)} ({', '.join(m.describe() for m in self.members)})"
        if self.antialias is None:
            text += f", the scan read as it is and anti-aliased, the readings' {self.combine}"
        return text


def _ensemble_or_one(members: List[_Stage]):
    return members[0] if len(members) == 1 else _Ensemble(members)


def combine_readings(probs: Sequence[np.ndarray], how: str) -> np.ndarray:
    """One stage-1 map from several readings' maps of one grid (each ``(Z, Y, X, 3)`` float32, 0
    where that reading has no active site): their mean (summed in order) or their minimum."""
    if how == "min":
        return np.minimum.reduce(list(probs))
    total = probs[0]
    for p in probs[1:]:
        total = total + p
    return total / np.float32(len(probs))


def _one_weights(w) -> bool:
    """Whether ``w`` is one network's weights: a file, a model, or a ``(model, meta)`` pair."""
    return isinstance(w, (str, os.PathLike, KidneyNet)) or (
        isinstance(w, tuple) and len(w) == 2 and isinstance(w[0], KidneyNet))


def _load_stage(weights, stage: int):
    """A :class:`_Stage` for one network's weights, an :class:`_Ensemble` for a list or tuple of them."""
    if _one_weights(weights):
        return _Stage(weights, stage)
    if not isinstance(weights, (list, tuple)) or not weights:
        raise WeightsError(f"stage-{stage} weights must be a file, a model, a (model, meta) pair or a non-empty "
                           f"list of them, got {weights!r}")
    return _ensemble_or_one([_Stage(w, stage) for w in weights])


class Segmenter:
    """Both stages with their weights; call :meth:`segment` on as many scans as you like.

    Args:
        stage1, stage2: weight files (``.npz`` from ``kidney train``), ``(model, meta)`` pairs, or
            models; or a list of them, an ensemble whose sigmoids are averaged (the members share
            the stage's grid); default the shipped compact weights. ``stage2=None`` builds a stage-1-only
            segmenter (for training crops).
        roi_config: the ROI rule; ``None`` (default) takes the paper's with the settings stored
            with the stage-1 weights (``roi_threshold``, ``roi_dilation`` in their metadata:
            :meth:`kidney.roi.RoiConfig.stored_with`).
        roi_threshold, roi_dilation: override that rule's threshold (in (0, 1)) or dilation
            diameter (voxels at 1.99 mm, a whole number >= 1); ``None`` keeps it.
        threshold: HEC probability threshold (0.5).
        tta: test-time mirroring — average each stage's sigmoids over the 8 flips of its input
            (8x the network time; off by default, as the paper does not state it).
        device: ``"cpu"`` (default) or ``"cuda"``: the networks and features live on the GPU, and
            sparseconv's ``cupy`` backend is selected if a CPU backend was.
        keep_components: keep only this many largest connected parts of the predicted foreground,
            or with ``"stage1"`` the parts that touch a kidney stage 1 found (:mod:`kidney.postprocess`);
            0 keeps all; ``None`` (default) takes the setting stored with the stage-2 weights
            (``keep_components`` in their metadata; none stored: keep all).
        blur_tta: test-time blur — the σ (voxels of the stage-2 grid, >= 0; 0: the crop as is) of
            the Gaussians stage 2 also reads each crop through, its sigmoids averaged over them
            (module docstring; one pass per σ); ``None`` (default) takes the setting stored with
            the stage-2 weights (``blur_tta`` in their metadata; none stored: ``(0,)``, as is).
    """

    def __init__(self, stage1=None, stage2=None, *, weights_dir=None, roi_config: Optional[RoiConfig] = None,
                 threshold: float = 0.5, tta: bool = False, device: str = "cpu",
                 keep_components: Union[int, str, None] = None, roi_threshold: Optional[float] = None,
                 roi_dilation: Optional[int] = None, blur_tta: Optional[Sequence[float]] = None,
                 _stage2_default=True):
        d1, d2 = default_weights(weights_dir) if (stage1 is None or stage2 is None) else (None, None)
        self.stage1 = _load_stage(stage1 if stage1 is not None else d1, 1)
        self.stage2 = _load_stage(stage2 if stage2 is not None else d2, 2) \
            if (stage2 is not None or _stage2_default) else None
        #: the ROI rule (the paper's, with what the stage-1 weights store, unless one was given)
        rule = roi_config if roi_config is not None else RoiConfig().stored_with(
            self.stage1.meta, f"in the metadata of {self.stage1.meta.get('path', 'the stage-1 weights')}")
        self.roi_config = rule.stored_with(roi_overrides(roi_threshold, roi_dilation), "(given)")
        self.threshold = float(threshold)
        self.mirror_axes = MIRROR_AXES if tta else ((),)
        self.device = normalize_device(device)
        #: components kept by the post-processing (None: all)
        self.keep_components = check_keep_components(*self._stage2_setting(keep_components, KEEP_KEY))
        blur_tta, where = self._stage2_setting(blur_tta, BLUR_KEY)
        #: the σ (stage-2 voxels) of test-time blur's passes; ``(0.0,)``: one pass, as is
        self.blur_tta = check_blur_tta((0.0,) if blur_tta is None else blur_tta, where)
        if self.device == "cuda":
            use_device_backend(self.device)
            for stage in (self.stage1, self.stage2):
                if stage is not None:
                    stage.to("cuda")

    def _stage2_setting(self, given, key: str):
        """``(value, where)`` of a setting: ``given`` unless None, else what the stage-2 weights
        store under ``key`` (None when they store nothing); ``where`` names it for errors."""
        if given is not None or self.stage2 is None or key not in self.stage2.meta:
            return given, key
        return self.stage2.meta[key], f"{key} in the metadata of {self.stage2.meta.get('path', 'the stage-2 weights')}"

    @classmethod
    def stage1_only(cls, stage1):
        return cls(stage1, None, _stage2_default=False)

    # --- stages -----------------------------------------------------------------------------------
    def probabilities_on_grid(self, stage: "_Stage", hu: np.ndarray, preset, mask=None) -> Tuple[np.ndarray, int]:
        """``(probs (Z, Y, X, 3), n_active)``: the sigmoids of ``stage`` on the grid of ``hu`` (0 at
        voxels outside the window or ``mask``), averaged over :attr:`mirror_axes`."""
        probs = np.zeros(hu.shape + (3,), np.float32)
        n_active = 0
        for axes in self.mirror_axes:
            sp = sparsify(np.flip(hu, axes), preset, mask=None if mask is None else np.flip(mask, axes))
            if sp.empty:
                return probs, 0  # a flip keeps the active set's size: all flips are empty
            n_active = sp.n_active
            z, y, x = sp.tensor.coords[:, 1:].T
            flipped = np.flip(probs, axes)  # a view: writing it writes probs at the mirrored sites
            flipped[z, y, x] += stage.probabilities(sp.tensor)
        probs /= np.float32(len(self.mirror_axes))  # exact for one pass (x / 1 == x)
        return probs, n_active

    def stage1_probabilities(self, image: np.ndarray, spacing) -> Tuple[np.ndarray, int]:
        """``(prob, n_active)``: max-over-HECs stage-1 sigmoid on the stage-1 grid (0 outside the
        window). An ensemble that reads the scan two ways (``combine_readings``) reads it once per
        way; ``n_active`` is then the larger reading's count."""
        image = np.asarray(image, np.float32)
        maps, n_active = [], 0
        for antialias, stage in self.stage1.readings:
            hu = io.resample(image, spacing, self.stage1.spacing, order=1, antialias=antialias)
            probs, n = self.probabilities_on_grid(stage, hu, STAGE1)
            maps.append(probs)
            n_active = max(n_active, n)
        probs = maps[0] if len(maps) == 1 else combine_readings(maps, self.stage1.combine)
        return probs.max(axis=3), n_active

    def stage2_probabilities(self, image: np.ndarray, spacing, roi: Roi) -> Tuple[np.ndarray, int]:
        """``(probs (Z, Y, X, 3), n_active)`` of one crop on its stage-2 grid (0 at inactive voxels)."""
        hu, mask, _ = crop_roi(np.asarray(image, np.float32), spacing, roi)
        if self.blur_tta == (0.0,):
            return self.probabilities_on_grid(self.stage2, hu, STAGE2, mask)
        active = in_window(hu, STAGE2) & mask  # every pass reads these sites: the mean is over them
        lo, hi = (np.float32(w) for w in get_preset(STAGE2).window)
        probs = np.zeros(hu.shape + (3,), np.float32)
        n_active = 0
        for sigma in self.blur_tta:
            # the blur of training's augmentation (kidney.augment, step 5), the same call
            read = hu if sigma == 0 else ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest")
            read = np.where(active, np.clip(read, lo, hi), read)
            p, n_active = self.probabilities_on_grid(self.stage2, read, STAGE2, active)
            probs += p
        probs /= np.float32(len(self.blur_tta))
        return probs, n_active

    def find_rois(self, prob1: np.ndarray, shape, spacing) -> List[Roi]:
        """The ROIs (:func:`kidney.roi.find_rois`, this segmenter's rule and grids) of a stage-1 map
        ``prob1`` of a scan of ``shape`` voxels of ``spacing`` mm. A stage-1-only segmenter has no
        crop grid: its ROIs' boxes are on the stage-1 grid (their masks do not depend on it)."""
        extent = [n * s for n, s in zip(shape, spacing)]
        crop = self.stage2.spacing if self.stage2 is not None else self.stage1.spacing
        return find_rois(prob1, self.stage1.spacing, extent, crop, self.roi_config)

    # --- the whole thing --------------------------------------------------------------------------
    def segment(self, image, spacing=None, *, details: bool = False, probabilities: bool = False):
        """Label map (uint8, 0–3) on the input's exact grid, in the input's own voxel order.

        Args:
            image: a NIfTI path or a nibabel image (labels come in the file's voxel order:
                ``nib.Nifti1Image(labels, img.affine)`` is the prediction); a :class:`kidney.io.Volume`
                (labels in the order of ``image.array``); or a ``(Z, Y, X)`` HU array in the internal
                ``I, P, L`` orientation (then ``spacing`` ``(sz, sy, sx)`` mm is required).
            details: return a :class:`SegmentResult` (timings, memory, ROIs) instead of the array.
            probabilities: also keep the HEC probabilities in ``SegmentResult.probabilities``
                (``labels.shape + (3,)`` float32); returns the :class:`SegmentResult`.
        """
        if self.stage2 is None:
            raise ValueError("this Segmenter has no stage-2 weights")
        res = self._segment(image, spacing, probabilities)
        return res if (details or probabilities) else res.labels

    def _segment(self, image, spacing, keep_probabilities: bool) -> SegmentResult:
        file_grid = None  # the file's voxel order is the output's for a path or a nibabel image
        if isinstance(image, (str, os.PathLike)):
            image = file_grid = io.load_nifti(image)
        elif isinstance(image, nib.spatialimages.SpatialImage):
            image = file_grid = io.from_image(image)
        if isinstance(image, io.Volume):
            spacing, arr = image.spacing, image.array
        else:
            if spacing is None:
                raise ValueError(f"segment(array) needs spacing=(sz, sy, sx) in mm for a {type(image).__name__}; "
                                 "a NIfTI path, a nibabel image or a kidney.io.Volume carries its own")
            arr = np.asarray(image)
            spacing = io.check_spacing(spacing, "segment input")
        if arr.ndim != 3:
            raise ValueError(f"segment needs a 3D (Z, Y, X) volume, got shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ValueError("segment: the image holds non-finite values")
        res = SegmentResult(np.zeros(arr.shape, np.uint8))
        if keep_probabilities:
            res.probabilities = np.zeros(arr.shape + (3,), np.float32)

        def timed(name, fn):
            t0 = time.perf_counter()
            with PeakRSS() as mem:
                out = fn()
            res.seconds[name] = res.seconds.get(name, 0.0) + time.perf_counter() - t0
            res.peak_mb[name] = max(res.peak_mb.get(name, 0.0), mem.mb)
            return out

        prob1, n1 = timed("stage1", lambda: self.stage1_probabilities(arr, spacing))
        res.n_active["stage1"] = n1
        rois = timed("roi", lambda: self.find_rois(prob1, arr.shape, spacing))
        res.rois = rois
        if not rois:
            msg = ("no kidney found: stage 1 " + ("saw no voxel in its HU window" if n1 == 0 else
                   f"found no component >= {self.roi_config.threshold} of enough voxels")
                   + "; the output is all background")
            warnings.warn(msg, NoKidneyWarning, stacklevel=3)
            res.warnings.append(msg)
        else:
            res.n_active["stage2"] = self.labels_on_rois(arr, spacing, rois, res.labels, timed,
                                                         probabilities=res.probabilities)
        if file_grid is not None:
            res.labels = np.ascontiguousarray(file_grid.to_file(res.labels))
            if res.probabilities is not None:
                res.probabilities = np.ascontiguousarray(io.from_internal(res.probabilities, file_grid.affine))
        return res

    def labels_on_rois(self, image: np.ndarray, spacing, rois: Sequence[Roi], out: np.ndarray,
                       timed=None, probabilities: Optional[np.ndarray] = None) -> int:
        """Stage 2 on each ROI, max-merged onto the scan grid, then the label rule and the
        post-processing (:attr:`keep_components`), written into ``out`` (``(Z, Y, X)`` uint8, the
        image's grid; voxels outside every crop are left as they are).

        The merged probabilities live only on the scan-grid box covering every crop; they are also
        written into ``probabilities`` (``(Z, Y, X, 3)``) if given. ``timed(name, fn)`` times the
        ``stage2`` and ``merge`` steps (default: not timed). Returns the number of stage-2 active voxels.
        """
        if not rois:
            return 0
        timed = timed or (lambda name, fn: fn())
        ulo, uhi = scan_box(rois, spacing, image.shape)
        merged = np.zeros(tuple(uhi - ulo) + (3,), np.float32)
        n2 = 0
        for r in rois:
            probs, n = timed("stage2", lambda: self.stage2_probabilities(image, spacing, r))
            n2 += n
            timed("merge", lambda: paste_probabilities(merged, probs, r, spacing, origin=ulo,
                                                         skip_below=self.threshold))

        def finish():
            th = self.threshold
            sub = labels_from_hecs(merged[..., 0] >= th, merged[..., 1] >= th, merged[..., 2] >= th)
            if self.keep_components == KEEP_STAGE1:  # every label lies in this box: the rest is background
                sub = keep_anchored_components(sub, cores_on_scan(rois, spacing, ulo, uhi))
            elif self.keep_components is not None:
                sub = keep_largest_components(sub, self.keep_components)
            box = tuple(slice(a, b) for a, b in zip(ulo, uhi))
            out[box] = sub
            if probabilities is not None:
                probabilities[box] = merged
        timed("merge", finish)
        return n2


def check_antialias(meta: dict, stage: int) -> bool:
    """The ``antialias`` setting of a stage's weights metadata (absent: False); only stage 1 reads
    a whole scan shrunk to its grid, so a stage-2 file holding it is refused, as is a non-bool."""
    value = meta.get(ANTIALIAS_KEY, False)
    where = f"{ANTIALIAS_KEY} in the metadata of {meta.get('path', f'the stage-{stage} weights')}"
    if not isinstance(value, bool):
        raise WeightsError(f"{where} must be true or false, got {value!r}")
    if value and stage != 1:
        raise WeightsError(f"{where}: anti-aliasing is a stage-1 setting (stage 2 reads crops near its own grid)")
    return value


def check_combine_readings(meta: dict, stage: int) -> Optional[str]:
    """The ``combine_readings`` setting of a stage's weights metadata (absent: None): one of
    :data:`COMBINE_READINGS`, and only on stage-1 weights (only stage 1 reads the whole scan)."""
    value = meta.get(COMBINE_KEY)
    where = f"{COMBINE_KEY} in the metadata of {meta.get('path', f'the stage-{stage} weights')}"
    if value is None:
        return None
    if value not in COMBINE_READINGS:
        raise WeightsError(f"{where} must be one of {', '.join(COMBINE_READINGS)}, got {value!r}")
    if stage != 1:
        raise WeightsError(f"{where}: combining readings is a stage-1 setting (stage 2 reads crops)")
    return value


def check_blur_tta(sigmas, where: str = "blur_tta") -> Tuple[float, ...]:
    """``sigmas`` (σ in stage-2 voxels, each finite and >= 0, none repeated, at least one) as a
    tuple of floats; a clear error naming ``where`` otherwise."""
    try:
        values = tuple(float(s) for s in np.atleast_1d(np.asarray(sigmas, dtype=np.float64)))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: takes σ values (numbers >= 0), got {sigmas!r}") from None
    if not values:
        raise ValueError(f"{where}: needs at least one σ (0: the crop as is)")
    bad = [s for s in values if not (np.isfinite(s) and s >= 0)]
    if bad:
        raise ValueError(f"{where}: every σ must be a finite number >= 0, got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: a σ is repeated in {list(values)}")
    return values


_DEFAULT: Optional[Segmenter] = None


def segment(image, spacing=None, *, weights_dir=None, details: bool = False, probabilities: bool = False):
    """Segment one scan with the shipped (or ``weights_dir``'s) weights; see :meth:`Segmenter.segment`.

    ``image``: a NIfTI path, a nibabel image, a :class:`kidney.io.Volume`, or a ``(Z, Y, X)`` array
    with ``spacing=(sz, sy, sx)`` mm.
    """
    global _DEFAULT
    if weights_dir is not None:
        return Segmenter(weights_dir=weights_dir).segment(image, spacing, details=details,
                                                          probabilities=probabilities)
    if _DEFAULT is None:
        _DEFAULT = Segmenter()
    return _DEFAULT.segment(image, spacing, details=details, probabilities=probabilities)


# --- files and folders --------------------------------------------------------------------------

def find_inputs(path) -> List[Tuple[str, Path]]:
    """``(case_id, image_path)`` pairs of a file or folder.

    A folder may be in KiTS23 layout (``case_*/imaging.nii.gz``) or nnU-Net style (``*.nii.gz``,
    with a ``_0000`` channel suffix dropped from the case id); hidden names (a leading dot, as the
    temporary files of an unfinished write) are left out.
    """
    path = Path(path)
    if path.is_file():
        return [(_case_id(path), path)]
    if not path.is_dir():
        raise FileNotFoundError(f"no such input file or folder: {path}")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]  # hidden: temporary files
    kits = sorted(d / io.IMAGE_NAME for d in entries if (d / io.IMAGE_NAME).is_file())
    if kits:
        return [(p.parent.name, p) for p in kits]
    files = sorted(p for p in entries if p.is_file() and (p.name.endswith(".nii.gz") or p.name.endswith(".nii")))
    if not files:
        raise FileNotFoundError(f"{path} holds no case_*/imaging.nii.gz and no *.nii(.gz) files")
    return [(_case_id(p), p) for p in files]


def _case_id(p: Path) -> str:
    name = p.name
    if name == io.IMAGE_NAME:
        return p.parent.name
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    return name[:-5] if name.endswith("_0000") else name


def segment_files(inputs: Sequence[Tuple[str, Path]], out_dir, segmenter: Optional[Segmenter] = None, *,
                  overwrite: bool = False, progress: bool = True) -> List[Tuple[str, Path, SegmentResult]]:
    """Segment many scans (one progress bar); writes ``out_dir/<case_id>.nii.gz`` on each input's grid.

    Stops at the first error. For a cohort (a manifest, failure isolation, resuming, Dask) use
    :func:`kidney.cohort.segment_cohort`, what ``kidney segment -i DIR -o DIR`` runs. Raises
    :class:`kidney.cohort.InputOverwriteError` before any work when an output would be an input.
    """
    from .cohort import Case, check_outputs, output_path

    segmenter = segmenter or Segmenter()
    out_dir = Path(out_dir)
    check_outputs([Case(cid, os.path.abspath(p), output_path(out_dir, cid)) for cid, p in inputs])
    results = []
    it = inputs
    bar = None
    if progress and len(inputs) > 1:
        try:
            from tqdm import tqdm
            bar = it = tqdm(inputs, desc="segment", unit="case")
        except ImportError:
            pass
    for case_id, path in it:
        out = out_dir / f"{case_id}.nii.gz"
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        vol = io.load_nifti(path)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always", NoKidneyWarning)
            res = segmenter.segment(vol, details=True)
        io.save_nifti(res.labels, vol, out, overwrite=overwrite)
        for w in res.warnings:
            print(f"warning {case_id}: {w}", file=sys.stderr)
        if bar is None and progress:
            print(f"{case_id}: {len(res.rois)} ROI(s), {sum(res.seconds.values()):.1f} s -> {out}", file=sys.stderr)
        results.append((case_id, out, res))
    return results
