"""What stage 1 calls kidney away from the kidneys: its false positives beside them, on any CT set.

    python scripts/stage1_stray.py DATA [DATA ...] [--weights DIR] [--away-mm 10] [-n N]
    python scripts/stage1_stray.py --real-ct [--weights DIR]

Stage 1 decides where stage 2 looks: a kidney's neighbour it calls kidney lies inside a ROI, and
stage 2 is handed it (on the real CT in ``data/totalseg_example``, the spleen's lower pole and a tip
of the liver; ``scripts/eval_real_ct.py`` prints them by organ). This script measures that on
labelled data, with no organ labels needed. For each case (KiTS layout, with segmentations) stage 1
runs on the whole scan; each stage-1 voxel takes the reference label at its centre, and its
distance to the nearest labelled voxel (kidney, tumour or cyst) is measured in mm on the stage-1
grid. Printed per case and summed per folder:

- ``found``: the share of the stage-1 voxels on the kidneys (labels 1-3) with probability >= 0.5;
- ``stray ml``: the volume of stage-1 voxels more than ``--away-mm`` (10) from every labelled voxel
  with probability >= 0.5, and (``stray@roi``) >= the ROI threshold (0.1), the level that grows ROIs;
- ``cases with stray``: how many cases hold any such volume at 0.5;
- for phantoms written with ``kidney phantom --tissue``: what the stray volume at 0.5 was painted as
  (liver, spleen, bowel wall, ...: the tissue at each stage-1 voxel's centre), summed per folder.

``--real-ct`` scores the real CT the same way (TotalSegmentator labels 2 and 3 are its kidneys).
The probability is the max over stage 1's three sigmoid outputs, as the ROI rule takes it.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage

from kidney import io
from kidney.phantom import TISSUE_NAME, tissue_name
from kidney.pipeline import Segmenter, default_weights
from kidney.roi import at_stage1_centres

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO / "data" / "totalseg_example"


def stray(seg: Segmenter, hu: np.ndarray, spacing, truth: np.ndarray, away_mm: float,
          tissue: Optional[np.ndarray] = None) -> dict:
    """Stage 1 on one scan against its labelled kidneys.

    Args:
        hu: ``(Z, Y, X)`` CT; spacing: its ``(sz, sy, sx)`` mm; truth: ``(Z, Y, X)`` bool, the kidneys
            with their lesions, on the CT's grid; tissue: the phantom's ``(Z, Y, X)`` uint8 tissue map,
            if known.
    Returns:
        ``{"kidney": voxels on the kidneys, "found": of them >= 0.5, "stray": ml >= 0.5 further than
        away_mm from truth, "stray_roi": the same >= the ROI threshold, "by_tissue": {tissue name:
        ml of "stray"} (empty without a tissue map)}``.
    """
    prob, _ = seg.stage1_probabilities(hu, spacing)
    t1 = seg.stage1.spacing
    on_kidney = at_stage1_centres(truth, spacing, prob.shape, t1)
    away = ndimage.distance_transform_edt(~on_kidney, sampling=t1) > away_mm if on_kidney.any() \
        else np.ones(prob.shape, bool)
    ml = t1 ** 3 / 1000.0
    strays = away & (prob >= 0.5)
    by_tissue = {}
    if tissue is not None:
        ids, counts = np.unique(at_stage1_centres(tissue, spacing, prob.shape, t1)[strays], return_counts=True)
        for i, n in zip(ids, counts):
            name = tissue_name(int(i))
            by_tissue[name] = by_tissue.get(name, 0.0) + float(n) * ml
    return {"kidney": int(on_kidney.sum()), "found": int((prob[on_kidney] >= 0.5).sum()),
            "stray": float(strays.sum() * ml),
            "stray_roi": float((away & (prob >= seg.roi_config.threshold)).sum() * ml), "by_tissue": by_tissue}


def _cases(folder: Path, n):
    cases = sorted(d for d in folder.iterdir() if (d / io.LABEL_NAME).is_file())[:n]
    if not cases:
        raise SystemExit(f"{folder} holds no case_*/{io.LABEL_NAME}")
    for d in cases:
        case = io.load_case(d, label=True)
        tissue = io.load_nifti(d / TISSUE_NAME, label=True).array if (d / TISSUE_NAME).is_file() else None
        yield d.name, case.image.array, case.image.spacing, case.label.array > 0, tissue


def _real_ct(folder: Path):
    ct = io.load_nifti(folder / "example_ct_sm.nii.gz")
    ref = io.load_nifti(folder / "example_seg.nii.gz", label=True)
    io.check_same_grid(ct, ref)
    yield "real CT", ct.array, ct.spacing, np.isin(ref.array, (2, 3)), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="*")
    ap.add_argument("--real-ct", action="store_true", help="score the real CT in data/totalseg_example")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--away-mm", type=float, default=10.0, help="how far from every labelled voxel a "
                    "stage-1 voxel must lie to count as stray (default 10)")
    ap.add_argument("-n", type=int, default=None, help="first N cases of each folder only")
    args = ap.parse_args(argv)
    if not args.data and not args.real_ct:
        ap.error("give DATA folders or --real-ct")
    if args.away_mm < 0:
        ap.error(f"--away-mm must be >= 0, got {args.away_mm}")
    seg = Segmenter.stage1_only(default_weights(args.weights)[0])
    sets = [(str(f), _cases(f, args.n)) for f in args.data] + ([("real CT", _real_ct(REAL_CT))] if args.real_ct else [])
    print(f"stage 1 ({seg.stage1.spacing:g} mm); stray: probability >= 0.5 (>= {seg.roi_config.threshold:g}) "
          f"further than {args.away_mm:g} mm from every labelled voxel")
    print("case                              found   stray ml  stray@roi ml")
    for name, cases in sets:
        rows = []
        for case, hu, sp, truth, tissue in cases:
            r = stray(seg, hu, sp, truth, args.away_mm, tissue)
            rows.append(r)
            print(f"{case[-32:]:32s} {r['found'] / max(1, r['kidney']):6.3f} {r['stray']:10.1f} {r['stray_roi']:13.1f}",
                  flush=True)
        found = sum(r["found"] for r in rows) / max(1, sum(r["kidney"] for r in rows))
        print(f"{name[-32:]:32s} {len(rows)} cases: found {found:.3f}; stray {sum(r['stray'] for r in rows):.1f} ml "
              f"(at the ROI threshold {sum(r['stray_roi'] for r in rows):.1f} ml); cases with stray: "
              f"{sum(r['stray'] > 0 for r in rows)}")
        by_tissue = {}
        for r in rows:
            for k, v in r["by_tissue"].items():
                by_tissue[k] = by_tissue.get(k, 0.0) + v
        if by_tissue:
            top = sorted(by_tissue.items(), key=lambda kv: -kv[1])
            print(f"{'':32s} stray painted as: " + ", ".join(f"{k} {v:.1f} ml" for k, v in top[:6])
                  + (f", {len(top) - 6} more tissues {sum(v for _, v in top[6:]):.1f} ml" if len(top) > 6 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
