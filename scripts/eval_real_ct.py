"""Kidney+masses Dice of the shipped weights on the real CT in data/totalseg_example.

The example is a 3 mm non-contrast abdominal CT with TotalSegmentator kidney labels (2 right, 3 left);
it has no tumour labels, so only the kidney+masses HEC is scored. It is a test case only: nothing was
trained or tuned on it.

    python scripts/eval_real_ct.py [--weights DIR] [--out PRED.nii.gz]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kidney import io, metrics
from kidney.pipeline import Segmenter, default_weights

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "totalseg_example"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the prediction here")
    args = ap.parse_args(argv)
    ct = io.load_nifti(args.data / "example_ct_sm.nii.gz")
    ref = io.load_nifti(args.data / "example_seg.nii.gz", label=True)
    io.check_same_grid(ct, ref)
    seg = Segmenter(*default_weights(args.weights))
    t0 = time.perf_counter()
    res = seg.segment(ct, details=True)
    secs = time.perf_counter() - t0
    pred = res.labels > 0
    truth = np.isin(ref.array, (2, 3))
    d = metrics.dice(pred, truth)
    sd = metrics.surface_dice(ct.to_file(truth), ct.to_file(pred), io.spacing_of(ct.affine),
                              metrics.HEC_TOLERANCE_MM["kidney"])
    print(f"real CT {ct.shape} at {tuple(round(s, 2) for s in ct.spacing)} mm: {len(res.rois)} ROI(s), "
          f"{secs:.1f} s")
    print(f"kidney+masses Dice {d:.4f}  Surface Dice {sd:.4f}  (predicted {int(pred.sum())} voxels, "
          f"truth {int(truth.sum())})")
    if args.out:
        io.save_nifti(res.labels, ct, args.out, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
