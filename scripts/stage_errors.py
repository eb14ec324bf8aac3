"""Where the pipeline's errors come from: stage-1 ROI coverage, and stage 2 on ground-truth ROIs.

    python scripts/stage_errors.py DATA [--weights DIR] [--lesions] [--slab half|tight|no-kidney]

Per case of DATA (KiTS layout, with segmentations): how many ROIs stage 1 finds; the share of the
truth's kidney+masses and masses voxels inside their dilated masks (stage 2 sees nothing else, so
this caps its recall); and the Dice per HEC of stage 2 run on (a) those ROIs — the pipeline — and
(b) ROIs made by the same rule from the ground-truth kidneys, as for stage-2 training crops (an
oracle stage 1). A large gap between (a) and (b) where coverage is high means stage 2 depends on the
shape of the ROI mask, not only on what lies inside it.

Then, over all cases, the reference lesions (tumours and cysts, 26-connected) by volume: how many,
how many the pipeline finds (half or more of the lesion labelled as a mass) and its mean share of
lesion voxels labelled as a mass — with the pipeline's ROIs and with ground-truth ROIs
(``--lesions``: every lesion on its own line).

``--slab KIND`` runs all of it on one slab of each scan instead of the whole scan, the slabs that
``kidney.slabs.fov_slabs`` cuts for ``scripts/fov_check.py`` (``half``: the scan cut through the
middle of its kidneys; ``tight``; ``no-kidney``), to tell whether stage 1 or stage 2 loses what a
field of view that cuts a kidney loses; cases without such a slab are left out.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from kidney import io, metrics
from kidney.pipeline import Segmenter, default_weights
from kidney.roi import crop_roi, find_rois, paste_probabilities, scan_box
from kidney.slabs import fov_slabs


def coverage(image, labels, spacing, rois):
    """Share of the truth's kidney+masses and masses voxels inside the ROI masks, on the scan grid.

    Each ROI's dilated mask is pasted back onto the scan grid as stage 2's probabilities are (linear,
    max-merged; inside where it reads >= 0.5), so the count is the truth voxels stage 2 can label —
    at most all of them (counting on the crops' grid instead reads above 1 where they resample
    the truth a little larger).
    """
    shape = np.shape(image)
    lo, hi = scan_box(rois, spacing, shape)
    merged = np.zeros(tuple(hi - lo) + (1,), np.float32)
    for r in rois:
        _, mask, _ = crop_roi(image, spacing, r)
        paste_probabilities(merged, mask[..., None].astype(np.float32), r, spacing, origin=lo)
    seen = np.zeros(shape, bool)
    seen[tuple(slice(a, b) for a, b in zip(lo, hi))] = merged[..., 0] >= 0.5
    truth = [labels > 0, labels >= 2]
    return np.array([np.count_nonzero(t & seen) / np.count_nonzero(t) if t.any() else np.nan for t in truth])


def labels_on_rois(seg: Segmenter, image, spacing, rois):
    """The pipeline's label map with the given ROIs (``Segmenter.labels_on_rois``, as ``segment``)."""
    out = np.zeros(image.shape, np.uint8)
    seg.labels_on_rois(image, spacing, rois, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder of case_*/imaging.nii.gz + segmentation.nii.gz")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped)")
    ap.add_argument("--lesions", action="store_true", help="also list every lesion (case, kind, volume, share)")
    ap.add_argument("--slab", choices=("half", "tight", "no-kidney"), default=None,
                    help="run on this slab of each scan (as scripts/fov_check.py cuts it) instead of the whole")
    args = ap.parse_args(argv)
    seg = Segmenter(*default_weights(args.weights))
    t1, t2 = seg.stage1.spacing, seg.stage2.spacing
    cases = sorted(d for d in args.data.iterdir() if (d / io.LABEL_NAME).is_file())
    if not cases:
        raise SystemExit(f"{args.data}: no case_*/{io.LABEL_NAME}")
    print(f"{'case':12s} ROIs  cover k+m  masses | pipeline Dice k/m/t | GT-ROI Dice k/m/t")
    rows, lesions, names = [], ([], []), []
    for d in cases:
        case = io.load_case(d, label=True)
        img, lab, sp = case.image.array.astype(np.float32), case.label.array, case.image.spacing
        if args.slab:
            cut = fov_slabs(lab, sp).get(args.slab)
            if cut is None:
                continue
            img, lab = np.ascontiguousarray(img[cut]), np.ascontiguousarray(lab[cut])
        extent = [n * s for n, s in zip(img.shape, sp)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prob1, _ = seg.stage1_probabilities(img, sp)
        rois = find_rois(prob1, t1, extent, t2, seg.roi_config)
        g1 = io.resampled_shape(lab.shape, sp, (t1,) * 3)
        truth1 = (io.resample(lab, sp, t1, order=0, out_shape=g1) > 0).astype(np.float32)
        gt_rois = find_rois(truth1, t1, extent, t2, seg.roi_config)
        cov = coverage(img, lab, sp, rois)
        pred, pred_gt = labels_on_rois(seg, img, sp, rois), labels_on_rois(seg, img, sp, gt_rois)
        a, b = metrics.hec_dice(pred, lab), metrics.hec_dice(pred_gt, lab)
        lesions[0].extend(metrics.lesion_recall(pred, lab, sp))
        lesions[1].extend(metrics.lesion_recall(pred_gt, lab, sp))
        names += [d.name] * (len(lesions[0]) - len(names))
        rows.append([len(rois), *cov, *a, *b])
        print(f"{d.name:12s} {len(rois):4d}  {cov[0]:9.3f} {cov[1]:7.3f} | {a[0]:.3f} {a[1]:.3f} {a[2]:.3f}"
              f"       | {b[0]:.3f} {b[1]:.3f} {b[2]:.3f}", flush=True)
    if not rows:
        raise SystemExit(f"{args.data}: no case has a {args.slab} slab")
    m = np.nanmean(np.array(rows, float), axis=0)
    print(f"{'mean':12s} {m[0]:4.1f}  {m[1]:9.3f} {m[2]:7.3f} | {m[3]:.3f} {m[4]:.3f} {m[5]:.3f}"
          f"       | {m[6]:.3f} {m[7]:.3f} {m[8]:.3f}")
    print(f"\n{'lesions':12s}    n | pipeline: found  recall | GT-ROI: found  recall")
    for (name, n, f, r), (_, _, fg, rg) in zip(metrics.lesion_table(lesions[0]), metrics.lesion_table(lesions[1])):
        print(f"{name:12s} {n:4d} |          {f:5d}  {r:6.3f} |        {fg:5d}  {rg:6.3f}")
    if args.lesions:
        print(f"\n{'case':12s} lesion  volume (ml) | share labelled a mass: pipeline  GT-ROI")
        for case, a, b in zip(names, *lesions):
            kind = "tumour" if a.label == 2 else "cyst"
            print(f"{case:12s} {kind:6s} {a.volume_ml:12.2f} |                        {a.recall:5.2f}  {b.recall:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
