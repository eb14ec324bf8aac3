"""KiTS23 scoring: Dice and Surface Dice per hierarchical evaluation class (HEC).

HECs (docs/design.md, Labels and HECs; KiTS23 files and scoring): ``kidney`` = labels {1, 2, 3}
(kidney and masses), ``masses`` = {2, 3}, ``tumor`` = {2}. Per case and HEC: Dice ``2|P∧R| / (|P| + |R|)`` and Surface Dice at the official
tolerances (1.0331 / 1.1329 / 1.1498 mm); both masks empty -> 1, exactly one empty -> 0.

Surface Dice reproduces DeepMind's ``surface-distance`` (the code KiTS23 calls): crop both masks to
the bounding box of their union, pad one zero voxel on the high side, code each 2x2x2 corner
neighbourhood as 8 bits, keep codes other than 0 and 255 as surface points whose area comes from the
marching-cubes normal table (:mod:`kidney._surface_table`) scaled by the spacing, take distances
from ``scipy.ndimage.distance_transform_edt(sampling=spacing)`` and count a surfel when its distance
to the other surface is ``<=`` the tolerance. Only the union box is processed, so 512×512×600 scans
cost about as much as their kidneys.

Arrays are scored in the reference file's own axis order and spacing (as the official code does).
"""
from __future__ import annotations

import csv
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ._surface_table import normals_in_eighths
from .components import label_parts

HEC_LABELS: Dict[str, Tuple[int, ...]] = {"kidney": (1, 2, 3), "masses": (2, 3), "tumor": (2,)}
# kits23/configuration/labels.py HEC_SD_TOLERANCES_MM (kidney_and_mass, mass, tumor)
HEC_TOLERANCE_MM: Dict[str, float] = {"kidney": 1.0330772532390826, "masses": 1.1328796488598762,
                                      "tumor": 1.1498198361434828}
OFFICIAL_HEC_NAMES = {"kidney": "kidney_and_mass", "masses": "mass", "tumor": "tumor"}
CSV_COLUMNS = ("caseID", "Dice_kidney", "Dice_masses", "Dice_tumor", "SD_kidney", "SD_masses",
               "SD_tumor")
# the Dice per HEC the shipped weights are to reach on unseen test phantoms (``kidney demo`` and
# kidney/weights/weights.json report against these)
PHANTOM_DICE_TARGETS: Dict[str, float] = {"kidney": 0.93, "masses": 0.85, "tumor": 0.80}

__all__ = ["HEC_LABELS", "HEC_TOLERANCE_MM", "CSV_COLUMNS", "PHANTOM_DICE_TARGETS", "hec_mask", "dice", "surfel_area_table",
           "neighbour_codes", "surface_distances", "surface_dice", "score_case", "CaseScore",
           "evaluate_folder", "check_folders", "find_prediction", "Evaluation", "write_csv", "print_summary", "Lesion",
           "lesion_recall", "lesion_table", "LESION_BINS_ML", "hec_dice", "KITS_LABELS", "GRID_RTOL_SPACING", "GRID_ATOL_ORIGIN_MM", "GRID_ATOL_DIRECTION"]
KITS_LABELS = (0, 1, 2, 3)
# Prediction and reference share a grid when, on the internal (I, P, L) voxel order, their spacings
# agree to this relative tolerance, their voxel-0 centres to this many mm and their axis direction
# cosines to this absolute tolerance (float32 headers round well below all three).
GRID_RTOL_SPACING = 1e-3
GRID_ATOL_ORIGIN_MM = 1e-2
GRID_ATOL_DIRECTION = 1e-3


# --- masks and Dice -----------------------------------------------------------------------------

def hec_mask(labels: np.ndarray, hec: str) -> np.ndarray:
    """Boolean mask of HEC ``hec`` (``'kidney'``, ``'masses'`` or ``'tumor'``) in a label map."""
    wanted = HEC_LABELS[hec]
    labels = np.asarray(labels)
    return labels == wanted[0] if len(wanted) == 1 else np.isin(labels, wanted)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks with the KiTS rule: both empty -> 1.0, one empty -> 0.0."""
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred == 0 and n_ref == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref)


# --- lesions (not a KiTS metric: a diagnostic of which masses a segmenter misses) -------------

@dataclass(frozen=True)
class Lesion:
    """One reference lesion: ``label`` 2 (tumour) or 3 (cyst), its volume, and how much of it the
    prediction labels as a mass (2 or 3; a tumour called a cyst still counts as found)."""

    label: int
    volume_ml: float
    recall: float


def lesion_recall(pred_labels: np.ndarray, ref_labels: np.ndarray,
                  spacing: Sequence[float]) -> List[Lesion]:
    """Every lesion of the reference (26-connected components of label 2 and of label 3) with the
    share of its voxels the prediction labels 2 or 3.

    Args:
        pred_labels, ref_labels: ``(Z, Y, X)`` integer label maps (0..3) of equal shape.
        spacing: voxel size in mm, in the arrays' axis order.
    """
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} != reference shape "
                         f"{ref_labels.shape}")
    found = hec_mask(pred_labels, "masses")
    ml = float(np.prod(spacing)) / 1000.0
    out = []
    for label in (2, 3):
        comp, n = label_parts(ref_labels == label)
        if n == 0:
            continue
        size = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        hit = np.bincount(comp[found], minlength=n + 1)[1:]
        out += [Lesion(label, float(v) * ml, float(h) / float(v)) for v, h in zip(size, hit)]
    return out


LESION_BINS_ML = (0.0, 2.0, 10.0, 50.0, np.inf)


def lesion_table(lesions: Sequence[Lesion]) -> List[Tuple[str, int, int, float]]:
    """Rows ``(bin label, n, found, mean recall)`` of :func:`lesion_recall` results by volume
    (:data:`LESION_BINS_ML`); a lesion is found when half or more of it is labelled a mass."""
    rows = []
    for lo, hi in zip(LESION_BINS_ML[:-1], LESION_BINS_ML[1:]):
        sel = [l for l in lesions if lo <= l.volume_ml < hi]
        name = f">= {lo:g} ml" if np.isinf(hi) else f"{lo:g}-{hi:g} ml"
        recall = float(np.mean([l.recall for l in sel])) if sel else float("nan")
        rows.append((name, len(sel), sum(l.recall >= 0.5 for l in sel), recall))
    return rows


def hec_dice(pred_labels: np.ndarray, ref_labels: np.ndarray) -> List[float]:
    """Dice of each HEC (:data:`HEC_LABELS` order) between two label maps of one shape."""
    return [dice(hec_mask(pred_labels, h), hec_mask(ref_labels, h)) for h in HEC_LABELS]


# --- surfaces -----------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _area_table(spacing: Tuple[float, float, float]) -> np.ndarray:
    s0, s1, s2 = spacing
    scale = np.array([s1 * s2, s0 * s2, s0 * s1]) / 8.0
    table = np.array([np.linalg.norm(n * scale, axis=1).sum() for n in normals_in_eighths()])
    table.setflags(write=False)
    return table


def surfel_area_table(spacing: Sequence[float]) -> np.ndarray:
    """``(256,) float64``: surface area (mm²) of the surfels of each 2x2x2 neighbour code."""
    return _area_table(tuple(float(s) for s in spacing))


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """``uint8`` 2x2x2 neighbour codes of a 3D bool mask, shape ``mask.shape + 1``.

    Code ``c[i, j, k]`` packs voxels ``mask[i-1+a, j-1+b, k-1+c]`` (outside = 0) with bit weight
    ``128 >> (4a + 2b + c)`` — DeepMind's ``ENCODE_NEIGHBOURHOOD_3D_KERNEL`` applied by correlation.
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=np.uint8)
    padded[1:-1, 1:-1, 1:-1] = mask
    out_shape = tuple(n + 1 for n in mask.shape)
    codes = np.zeros(out_shape, dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                view = padded[a:a + out_shape[0], b:b + out_shape[1], c:c + out_shape[2]]
                codes |= view << np.uint8(7 - (4 * a + 2 * b + c))
    return codes


@dataclass
class SurfaceDistances:
    """Per-surfel distances (mm) to the other surface and surfel areas (mm²), unsorted."""

    ref_to_pred: np.ndarray
    pred_to_ref: np.ndarray
    ref_areas: np.ndarray
    pred_areas: np.ndarray


def _union_box(a: np.ndarray, b: np.ndarray) -> Optional[Tuple[slice, slice, slice]]:
    box = []
    for axis in range(3):
        others = tuple(i for i in range(3) if i != axis)
        hit = np.flatnonzero(np.any(a, axis=others) | np.any(b, axis=others))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def surface_distances(ref: np.ndarray, pred: np.ndarray,
                      spacing: Sequence[float]) -> SurfaceDistances:
    """Surfels of both masks and their distances to the other surface (DeepMind algorithm).

    Args:
        ref, pred: 3D bool masks of equal shape.
        spacing: voxel size (mm) of the three axes, in the masks' axis order.
    """
    ref, pred = np.asarray(ref, dtype=bool), np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape or ref.ndim != 3:
        raise ValueError(f"masks must be 3D and equal in shape, got {ref.shape} and {pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    box = _union_box(ref, pred)
    empty = np.zeros(0)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    codes_ref, codes_pred = neighbour_codes(ref[box]), neighbour_codes(pred[box])
    border_ref = (codes_ref != 0) & (codes_ref != 255)
    border_pred = (codes_pred != 0) & (codes_pred != 255)
    table = surfel_area_table(spacing)
    dist_to_ref = _distance_map(border_ref, spacing)
    dist_to_pred = _distance_map(border_pred, spacing)
    return SurfaceDistances(dist_to_pred[border_ref], dist_to_ref[border_pred],
                            table[codes_ref[border_ref]], table[codes_pred[border_pred]])


def _distance_map(border: np.ndarray, spacing) -> np.ndarray:
    if not border.any():
        return np.full(border.shape, np.inf)
    return ndimage.distance_transform_edt(~border, sampling=spacing)


def surface_dice(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                 tolerance_mm: float) -> float:
    """Surface Dice at ``tolerance_mm``; KiTS empty-mask rule (both empty 1, one empty 0)."""
    ref, pred = np.asarray(ref, dtype=bool), np.asarray(pred, dtype=bool)
    has_ref, has_pred = bool(ref.any()), bool(pred.any())
    if not has_ref or not has_pred:
        return 1.0 if has_ref == has_pred else 0.0
    d = surface_distances(ref, pred, spacing)
    overlap = (d.ref_areas[d.ref_to_pred <= tolerance_mm].sum()
               + d.pred_areas[d.pred_to_ref <= tolerance_mm].sum())
    return float(overlap / (d.ref_areas.sum() + d.pred_areas.sum()))


# --- per case -----------------------------------------------------------------------------------

def score_case(pred_labels: np.ndarray, ref_labels: np.ndarray,
               spacing: Sequence[float]) -> Dict[str, Tuple[float, float]]:
    """``{hec: (dice, surface_dice)}`` for one case.

    Args:
        pred_labels, ref_labels: integer label maps of equal 3D shape (0..3).
        spacing: reference voxel size in mm, in the arrays' axis order.
    """
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} != reference shape "
                         f"{ref_labels.shape}")
    box = _union_box(pred_labels > 0, ref_labels > 0)
    if box is not None:  # every HEC lies inside the union box of labels > 0
        pred_labels, ref_labels = pred_labels[box], ref_labels[box]
    out = {}
    for hec in HEC_LABELS:
        p, r = hec_mask(pred_labels, hec), hec_mask(ref_labels, hec)
        out[hec] = (dice(p, r), surface_dice(r, p, spacing, HEC_TOLERANCE_MM[hec]))
    return out


@dataclass
class CaseScore:
    """One row of ``evaluation.csv``; ``problem`` is set (and all scores 0) when it failed."""

    case_id: str
    dice: Dict[str, float] = field(default_factory=dict)
    sd: Dict[str, float] = field(default_factory=dict)
    problem: Optional[str] = None
    warning: Optional[str] = None

    def row(self) -> List[float]:
        """Dice of the 3 HECs, then Surface Dice of the 3 HECs (zeros for a failed case)."""
        return ([self.dice.get(h, 0.0) for h in HEC_LABELS]
                + [self.sd.get(h, 0.0) for h in HEC_LABELS])


def find_prediction(pred_dir, case_id: str) -> Optional[Path]:
    """The prediction file of ``case_id`` in ``pred_dir`` (``case_id.nii.gz``, ``case_id.nii``,
    ``case_id/segmentation.nii.gz`` or ``case_id/prediction.nii.gz``), or None."""
    pred_dir = Path(pred_dir)
    for candidate in (pred_dir / f"{case_id}.nii.gz", pred_dir / f"{case_id}.nii",
                      pred_dir / case_id / "segmentation.nii.gz",
                      pred_dir / case_id / "prediction.nii.gz"):
        if candidate.is_file():
            return candidate
    return None


def _bad_labels(array: np.ndarray, path, what: str) -> Optional[str]:
    """``None``, or which values outside 0..3 ``array`` holds and in how many voxels each."""
    counts = np.bincount(np.asarray(array, np.uint8).ravel(), minlength=256)
    bad = [(v, int(counts[v])) for v in np.flatnonzero(counts) if v not in KITS_LABELS]
    if not bad:
        return None
    values = ", ".join(f"{v} ({n:,} voxel{'s' if n != 1 else ''})" for v, n in bad)
    return f"{what} {path} holds label value{'s' if len(bad) > 1 else ''} outside 0..3: {values}"


def _grid_difference(pred, ref) -> Optional[str]:
    """``None`` when two volumes of equal internal shape lie on the same grid (see the ``GRID_``
    tolerances), else what differs. Compared in the internal voxel order, so a file stored in
    another axis order on the same grid matches."""
    a, b = pred.internal_affine, ref.internal_affine
    sa, sb = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    out = []
    if not np.allclose(sa, sb, rtol=GRID_RTOL_SPACING, atol=0):
        out.append(f"spacing {tuple(round(float(v), 4) for v in sa)} vs {tuple(round(float(v), 4) for v in sb)} mm")
    if not np.allclose(a[:3, 3], b[:3, 3], rtol=0, atol=GRID_ATOL_ORIGIN_MM):
        out.append(f"origin {tuple(round(float(v), 3) for v in a[:3, 3])} vs "
                   f"{tuple(round(float(v), 3) for v in b[:3, 3])} mm")
    if not np.allclose(a[:3, :3] / sa, b[:3, :3] / sb, rtol=0, atol=GRID_ATOL_DIRECTION):
        codes = (f" ({''.join(pred.file_axcodes)} vs {''.join(ref.file_axcodes)})"
                 if pred.file_axcodes != ref.file_axcodes else "")
        out.append(f"direction cosines differ by up to "
                   f"{float(np.abs(a[:3, :3] / sa - b[:3, :3] / sb).max()):.3g}{codes}")
    return "; ".join(out) or None


def _score_files(case_id: str, pred_path: Optional[Path], ref_path: Path,
                 voxel_grid: bool = False) -> CaseScore:
    from . import io  # local: keeps `import kidney.metrics` free of nibabel for array users

    if pred_path is None:
        return CaseScore(case_id, problem=f"missing prediction for {case_id} (looked for "
                                          f"{case_id}.nii.gz and {case_id}/segmentation.nii.gz)")
    try:
        ref = io.load_nifti(ref_path, label=True)
        pred = io.load_nifti(pred_path, label=True)
        bad = [m for m in (_bad_labels(pred.array, pred_path, "prediction"),
                           _bad_labels(ref.array, ref_path, "reference")) if m]
        if bad:
            return CaseScore(case_id, problem="; ".join(bad))
        if pred.shape != ref.shape:
            return CaseScore(case_id, problem=f"{pred_path}: shape {pred.file_shape} "
                                              f"({''.join(pred.file_axcodes)}) does not match "
                                              f"reference {ref_path} shape {ref.file_shape} "
                                              f"({''.join(ref.file_axcodes)})")
        warning = None
        differ = _grid_difference(pred, ref)
        if differ and not voxel_grid:
            return CaseScore(case_id, problem=f"{pred_path} is not on the grid of reference {ref_path}: "
                                              f"{differ}; pass --voxel-grid to score it on voxel indices anyway")
        if differ:
            warning = f"{pred_path} is not on the grid of reference {ref_path}: {differ}; scored on voxel indices"
        spacing = io.spacing_of(ref.affine)
        scores = score_case(ref.to_file(pred.array), ref.to_file(ref.array), spacing)
    except (ValueError, OSError) as exc:
        return CaseScore(case_id, problem=f"{case_id}: {exc}")
    return CaseScore(case_id, {h: s[0] for h, s in scores.items()},
                     {h: s[1] for h, s in scores.items()}, warning=warning)


@dataclass
class Evaluation:
    """All case rows (reference order) and their mean (failed cases count as 0)."""

    cases: List[CaseScore]
    extra_predictions: List[str]

    @property
    def mean(self) -> List[float]:
        rows = np.array([c.row() for c in self.cases], dtype=float)
        return list(rows.mean(axis=0)) if len(rows) else [float("nan")] * 6

    @property
    def problems(self) -> List[str]:
        return [c.problem for c in self.cases if c.problem]


def check_folders(pred_dir, data_dir) -> List[Tuple[str, Path]]:
    """``(case_id, reference path)`` of every case of ``data_dir``; :class:`FileNotFoundError`
    naming the folder if either folder is missing or ``data_dir`` holds no case."""
    if not Path(pred_dir).is_dir():
        raise FileNotFoundError(f"no such prediction folder: {pred_dir}")
    return _reference_cases(Path(data_dir))


def _reference_cases(data_dir: Path) -> List[Tuple[str, Path]]:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no such data folder: {data_dir}")
    cases = sorted((d.name, d / "segmentation.nii.gz") for d in data_dir.iterdir()
                   if d.is_dir() and (d / "segmentation.nii.gz").is_file())
    if not cases:
        raise FileNotFoundError(f"{data_dir} holds no case folders with segmentation.nii.gz")
    return cases


def evaluate_folder(pred_dir, data_dir, *, workers: int = 1, voxel_grid: bool = False) -> Evaluation:
    """Score every reference case of ``data_dir`` (``case_X/segmentation.nii.gz``).

    Predictions are looked up as ``pred_dir/case_X.nii.gz`` (KiTS submission layout) or
    ``pred_dir/case_X/segmentation.nii.gz``. A missing, unreadable or mis-shaped prediction, a
    prediction or reference holding a label outside 0..3, or a prediction on another grid than its
    reference (spacing, origin or direction; see the ``GRID_`` tolerances) gives a row of zeros with
    ``problem`` set — never a skipped case. ``voxel_grid=True`` scores the last kind on voxel
    indices anyway, with ``warning`` set.
    """
    pred_dir, data_dir = Path(pred_dir), Path(data_dir)
    refs = check_folders(pred_dir, data_dir)
    jobs = [(cid, find_prediction(pred_dir, cid), ref, voxel_grid) for cid, ref in refs]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            cases = list(pool.map(_score_files, *zip(*jobs)))
    else:
        cases = [_score_files(*job) for job in jobs]
    known = {cid for cid, _ in refs}
    extra = sorted(p.name for p in pred_dir.iterdir()
                   if p.name.startswith("case_") and p.name.split(".")[0] not in known)
    return Evaluation(cases, extra)


def write_csv(evaluation: Evaluation, path, *, overwrite: bool = True) -> Path:
    """Write ``evaluation.csv``: official columns, one row per case, then an ``average`` row."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for case in evaluation.cases:
            writer.writerow([case.case_id] + [f"{v:0.8f}" for v in case.row()])
        writer.writerow(["average"] + [f"{v:0.8f}" for v in evaluation.mean])
    tmp.replace(path)
    return path


def print_summary(evaluation: Evaluation, stream=None) -> None:
    """Print the number of cases and problems and the per-HEC means (to stdout by default)."""
    stream = sys.stdout if stream is None else stream
    mean = evaluation.mean
    names = list(HEC_LABELS)
    print(f"{len(evaluation.cases)} cases, {len(evaluation.problems)} with problems", file=stream)
    for i, hec in enumerate(names):
        print(f"  {hec:7s} Dice {mean[i]:.4f}   Surface Dice {mean[3 + i]:.4f}", file=stream)
    print(f"  mean    Dice {np.mean(mean[:3]):.4f}   Surface Dice {np.mean(mean[3:]):.4f}",
          file=stream)
