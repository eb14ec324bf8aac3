"""What stage 1 calls kidney away from the kidneys: its false positives beside them, on any CT set.

    python scripts/stage1_stray.py DATA [DATA ...] [--weights DIR] [--away-mm 10] [-n N] [--json FILE]
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
- ``near share``: of all that stage 1 calls kidney (probability >= 0.5, ``called``), the share within
  ``--away-mm`` of a labelled voxel (1 when it strays nowhere), per folder and, for several folders,
  pooled over them all;
- ``masses in ROI``: the share of the stage-1 voxels on the lesions (labels 2-3) that lie inside a
  ROI's dilated component (:meth:`Segmenter.find_rois`, the weights' ROI rule) — stage 2 sees
  nothing outside them, so a lesion stage 1 leaves out is lost whatever stage 2 does;
- for phantoms written with ``kidney phantom --tissue``: what the stray volume at 0.5 was painted as
  (liver, spleen, bowel wall, ...: the tissue at each stage-1 voxel's centre), summed per folder.

``--real-ct`` scores the real CT the same way (TotalSegmentator labels 2 and 3 are its kidneys).
``--json FILE`` also writes the sums per folder (and pooled, as ``"all"``) to FILE.
The probability is the max over stage 1's three sigmoid outputs, as the ROI rule takes it.
"""
from __future__ import annotations

import argparse
import json
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
          tissue: Optional[np.ndarray] = None, masses: Optional[np.ndarray] = None) -> dict:
    """Stage 1 on one scan against its labelled kidneys.

    Args:
        hu: ``(Z, Y, X)`` CT; spacing: its ``(sz, sy, sx)`` mm; truth: ``(Z, Y, X)`` bool, the kidneys
            with their lesions, on the CT's grid; tissue: the phantom's ``(Z, Y, X)`` uint8 tissue map,
            if known; masses: ``(Z, Y, X)`` bool, the lesions (tumour and cyst), if known.
    Returns:
        ``{"kidney": voxels on the kidneys, "found": of them >= 0.5, "called": ml >= 0.5 anywhere,
        "stray": ml >= 0.5 further than away_mm from truth, "stray_roi": the same >= the ROI
        threshold, "by_tissue": {tissue name: ml of "stray"} (empty without a tissue map)}``; with
        ``masses``, also ``"masses"``: voxels on the lesions, ``"masses_in_roi"``: of them inside a
        ROI's dilated component.
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
    out = {"kidney": int(on_kidney.sum()), "found": int((prob[on_kidney] >= 0.5).sum()),
           "called": float((prob >= 0.5).sum() * ml), "stray": float(strays.sum() * ml),
           "stray_roi": float((away & (prob >= seg.roi_config.threshold)).sum() * ml), "by_tissue": by_tissue}
    if masses is not None:
        in_roi = np.zeros(prob.shape, bool)
        for r in seg.find_rois(prob, hu.shape, spacing):
            in_roi |= r.mask1
        on_masses = at_stage1_centres(masses, spacing, prob.shape, t1)
        out.update(masses=int(on_masses.sum()), masses_in_roi=int((on_masses & in_roi).sum()))
    return out


def _cases(folder: Path, n):
    cases = sorted(d for d in folder.iterdir() if (d / io.LABEL_NAME).is_file())[:n]
    if not cases:
        raise SystemExit(f"{folder} holds no case_*/{io.LABEL_NAME}")
    for d in cases:
        case = io.load_case(d, label=True)
        tissue = io.load_nifti(d / TISSUE_NAME, label=True).array if (d / TISSUE_NAME).is_file() else None
        labels = case.label.array
        yield d.name, case.image.array, case.image.spacing, labels > 0, tissue, labels >= 2


def _real_ct(folder: Path):
    ct = io.load_nifti(folder / "example_ct_sm.nii.gz")
    ref = io.load_nifti(folder / "example_seg.nii.gz", label=True)
    io.check_same_grid(ct, ref)
    yield "real CT", ct.array, ct.spacing, np.isin(ref.array, (2, 3)), None, None  # organ labels: no lesions


def _summed(rows) -> dict:
    """The sums of :func:`stray`'s rows (or of earlier sums), with the found and near shares."""
    out = {"cases": sum(r.get("cases", 1) for r in rows), "by_tissue": {}}
    for key in ("kidney", "found", "called", "stray", "stray_roi"):
        out[key] = sum(r[key] for r in rows)
    if all("masses" in r for r in rows):
        out["masses"], out["masses_in_roi"] = (sum(r[k] for r in rows) for k in ("masses", "masses_in_roi"))
        out["masses_in_roi_share"] = out["masses_in_roi"] / out["masses"] if out["masses"] else 1.0
    out["cases_with_stray"] = sum(r.get("cases_with_stray", r["stray"] > 0) for r in rows)
    for r in rows:
        for k, v in r["by_tissue"].items():
            out["by_tissue"][k] = out["by_tissue"].get(k, 0.0) + v
    out["found_share"] = out["found"] / max(1, out["kidney"])
    out["near_share"] = 1.0 - out["stray"] / out["called"] if out["called"] else 1.0
    return out


def _print_sum(name: str, s: dict) -> None:
    print(f"{name[-32:]:32s} {s['cases']} cases: found {s['found_share']:.3f}; stray {s['stray']:.1f} ml "
          f"(at the ROI threshold {s['stray_roi']:.1f} ml); cases with stray: {s['cases_with_stray']}; "
          f"called kidney {s['called']:.1f} ml, near share {s['near_share']:.3f}"
          + (f"; masses inside a ROI {s['masses_in_roi_share']:.3f}" if "masses" in s else ""))
    if s["by_tissue"]:
        top = sorted(s["by_tissue"].items(), key=lambda kv: -kv[1])
        print(f"{'':32s} stray painted as: " + ", ".join(f"{k} {v:.1f} ml" for k, v in top[:6])
              + (f", {len(top) - 6} more tissues {sum(v for _, v in top[6:]):.1f} ml" if len(top) > 6 else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="*")
    ap.add_argument("--real-ct", action="store_true", help="score the real CT in data/totalseg_example")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--away-mm", type=float, default=10.0, help="how far from every labelled voxel a "
                    "stage-1 voxel must lie to count as stray (default 10)")
    ap.add_argument("-n", type=int, default=None, help="first N cases of each folder only")
    ap.add_argument("--json", type=Path, default=None, help="also write the sums per folder to this file")
    args = ap.parse_args(argv)
    if not args.data and not args.real_ct:
        ap.error("give DATA folders or --real-ct")
    if args.away_mm < 0:
        ap.error(f"--away-mm must be >= 0, got {args.away_mm}")
    seg = Segmenter.stage1_only(default_weights(args.weights)[0])
    sets = [(str(f), _cases(f, args.n)) for f in args.data] + ([("real CT", _real_ct(REAL_CT))] if args.real_ct else [])
    print(f"stage 1 ({seg.stage1.spacing:g} mm); stray: probability >= 0.5 (>= {seg.roi_config.threshold:g}) "
          f"further than {args.away_mm:g} mm from every labelled voxel")
    print("case                              found   stray ml  stray@roi ml  masses in ROI")
    sums = {}
    for name, cases in sets:
        rows = []
        for case, hu, sp, truth, tissue, masses in cases:
            r = stray(seg, hu, sp, truth, args.away_mm, tissue, masses)
            rows.append(r)
            in_roi = f" {r['masses_in_roi'] / r['masses']:14.3f}" if r.get("masses") else ""
            print(f"{case[-32:]:32s} {r['found'] / max(1, r['kidney']):6.3f} {r['stray']:10.1f} {r['stray_roi']:13.1f}"
                  + in_roi, flush=True)
        sums[name] = _summed(rows)
        _print_sum(name, sums[name])
    if len(sums) > 1:
        sums["all"] = _summed(list(sums.values()))
        _print_sum(f"all {len(sets)} folders", sums["all"])
    if args.json:
        args.json.write_text(json.dumps(sums, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
