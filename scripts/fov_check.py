"""Stage 1 at other fields of view: slabs of each scan, with and without kidney.

    python scripts/fov_check.py DATA [--weights DIR] [-n 10] [--json FILE]

For each case of DATA (KiTS layout, with segmentations) three slabs of slices are cut from the scan
(:func:`kidney.slabs.fov_slabs`): ``no-kidney`` (the longest run of slices above or below every
labelled voxel, if 40 mm or more), ``half`` (the scan cut through the middle of its kidneys: the
cranial half) and ``tight`` (the kidneys' slices plus 15 mm either side, as a kidney-level scan).
Prints each slab's ROIs (the stage-1 volume at the ROI threshold inside each one's dilated
component: the component it was grown from, and any other such voxels its dilation reaches) and,
on a slab without kidney, the volume labelled there all the same (false positives, ml); then, per
slab kind, how many slabs got at least one ROI, and the kidney+masses Dice on the slabs that hold
kidney. A slab with no kidney should get no ROI, and nothing labelled. ``--json FILE`` also writes
those sums per slab kind to FILE.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from kidney import io, metrics
from kidney.pipeline import Segmenter, default_weights
from kidney.slabs import fov_slabs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("-n", type=int, default=None, help="first N cases only")
    ap.add_argument("--json", type=Path, default=None, help="also write the sums per slab kind to this file")
    args = ap.parse_args(argv)
    seg = Segmenter(*default_weights(args.weights))
    stats = {}
    cases = sorted(d for d in args.data.iterdir() if (d / io.LABEL_NAME).is_file())[: args.n]
    if not cases:
        ap.error(f"{args.data} holds no case_*/segmentation.nii.gz")
    for case_dir in cases:
        case = io.load_case(case_dir, label=True)
        img, lab, sp = case.image.array, case.label.array, case.image.spacing
        for kind, sl in fov_slabs(lab, sp).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = seg.segment(np.ascontiguousarray(img[sl]), sp, details=True)
            truth = lab[sl] > 0
            d = metrics.dice(res.labels > 0, truth) if truth.any() else None
            s = stats.setdefault(kind, {"slabs": 0, "with_roi": 0, "dice": [], "false_ml": []})
            s["slabs"] += 1
            s["with_roi"] += bool(res.rois)
            if d is not None:
                s["dice"].append(d)
            else:  # nothing here is kidney: whatever is labelled is a false positive
                false_ml = float((res.labels > 0).sum()) * float(np.prod(sp)) / 1000
                s["false_ml"].append(false_ml)
            sizes = " ".join(f"{r.voxels1 * r.spacing1 ** 3 / 1000:.1f}" for r in res.rois)
            print(f"{case_dir.name} {kind:9s} {sl.stop - sl.start:4d} slices  {len(res.rois)} ROI(s)"
                  + (f" (stage-1 components of {sizes} ml)" if res.rois else "")
                  + (f"  kidney+masses Dice {d:.3f}" if d is not None else f"  labelled {false_ml:.1f} ml"),
                  flush=True)
    print("slab kind   slabs  with an ROI  mean kidney+masses Dice")
    for kind, s in stats.items():
        dice = f"{np.mean(s['dice']):.3f}" if s["dice"] else "—"
        print(f"{kind:10s} {s['slabs']:6d} {s['with_roi']:12d}  {dice}")
    false_ml = [v for s in stats.values() for v in s["false_ml"]]
    if false_ml:
        print(f"labelled on the slabs without kidney: {sum(v > 0 for v in false_ml)} of {len(false_ml)}, "
              f"{sum(false_ml):.1f} ml in all")
    if args.json:
        args.json.write_text(json.dumps({kind: {"slabs": s["slabs"], "with_roi": s["with_roi"],
                                                "dice": float(np.mean(s["dice"])) if s["dice"] else None,
                                                "labelled_ml": float(sum(s["false_ml"]))}
                                         for kind, s in stats.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
