"""Where accuracy is lost between the project's own phantoms and CT around real KiTS23 label maps.

    python scripts/generalisation_gap.py --labels KITS_LABELS [--split validation] [-n 10]
           [--weights DIR] [--json OUT.json]

Scores one set of weights (default: the shipped ones) on cohorts that change one thing at a time:

=================  ==============================================================================
``phantom``        ``make_phantom`` cases, enhanced phases (what the weights were trained on)
``phantom-paint``  the same phantoms' label maps repainted by ``from_labels`` (same geometry and
                   grid, other painting): the cost of *appearance* alone
``real-grid``      ``from_labels`` around real label maps, resampled to a phantom-like grid
                   (1.6 mm in-plane, 2.5 mm slices), enhanced: the cost of real *geometry*
``real``           ``from_labels`` around the same real maps on their own grid, enhanced: adds the
                   scanner grid (0.5-5 mm slices, 0.6-1 mm in-plane)
``real-nc``        as ``real``, non-contrast phase: adds the phase the phantoms never showed
=================  ==============================================================================

Prints, per case, Dice per HEC and the predicted mass volume over the true one; then mean Dice per
HEC per cohort, and each cohort's reference lesions by volume with how many were found (half or more
labelled as a mass). ``KITS_LABELS`` holds ``case_XXXXX/
segmentation.nii.gz`` KiTS23 label maps (the cases of ``--split`` in ``kidney/data/kits23_split.json``
are used; the maps are in the KiTS23 repository, ``dataset/case_XXXXX/segmentation.nii.gz``).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from kidney import io, metrics, phantom, splits
from kidney.pipeline import Segmenter, default_weights

HECS = tuple(metrics.HEC_LABELS)
PHANTOM_GRID = (2.5, 1.6, 1.6)


def score(seg: Segmenter, image, labels, spacing):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = seg.segment(image, spacing)
    true_masses = np.count_nonzero(labels >= 2)
    ratio = np.count_nonzero(pred >= 2) / true_masses if true_masses else float("nan")
    return metrics.hec_dice(pred, labels), metrics.lesion_recall(pred, labels, spacing), ratio


def real_cases(labels_dir: Path, split: str, n: int):
    ids = splits.load_split()[split][:n]
    for c in ids:
        path = labels_dir / c / io.LABEL_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (case {c} of the {split} split)")
        vol = io.load_nifti(path, label=True)
        yield c, vol.array, vol.spacing


def cohorts(labels_dir: Path, split: str, n: int, seed: int):
    for i in range(n):
        ph = phantom.make_phantom(seed + i)
        yield "phantom", f"ph{seed + i}", ph.image, ph.labels, ph.spacing
        rp = phantom.from_labels(ph.labels, ph.spacing, seed + i, phase=ph.phase)
        yield "phantom-paint", f"ph{seed + i}", rp.image, rp.labels, rp.spacing
    for i, (c, lab, sp) in enumerate(real_cases(labels_dir, split, n)):
        shape = io.resampled_shape(lab.shape, sp, PHANTOM_GRID)
        small = io.resample(lab, sp, PHANTOM_GRID, order=0, out_shape=shape)
        ph = phantom.from_labels(small, PHANTOM_GRID, seed + i)
        yield "real-grid", c, ph.image, ph.labels, ph.spacing
        ph = phantom.from_labels(lab, sp, seed + i, phase=ph.phase)
        yield "real", c, ph.image, ph.labels, ph.spacing
        ph = phantom.from_labels(lab, sp, seed + i, phase="noncontrast")
        yield "real-nc", c, ph.image, ph.labels, ph.spacing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, required=True, help="folder of KiTS23 case_*/segmentation.nii.gz")
    ap.add_argument("--split", default="validation", choices=splits.SPLITS)
    ap.add_argument("-n", type=int, default=10, help="cases per cohort (default 10)")
    ap.add_argument("--seed", type=int, default=2000, help="phantom seeds seed..seed+n-1 (default 2000)")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write every per-case score here")
    args = ap.parse_args(argv)
    if not args.labels.is_dir():
        ap.error(f"--labels {args.labels}: no such folder")
    seg = Segmenter(*default_weights(args.weights))
    rows = []
    for cohort, case, image, labels, spacing in cohorts(args.labels, args.split, args.n, args.seed):
        d, lesions, ratio = score(seg, image, labels, spacing)
        rows.append(dict(cohort=cohort, case=case, dice=d, masses_volume_ratio=ratio,
                         lesions=[(l.label, l.volume_ml, l.recall) for l in lesions]))
        print(f"{cohort:14s} {case:12s} " + " ".join(f"{v:.3f}" for v in d)
              + f"  predicted / true mass volume {ratio:.1f}", file=sys.stderr, flush=True)
    print(f"{'cohort':14s} {'n':>3s}  " + "  ".join(f"{h:>7s}" for h in HECS) + "   lesions found by volume (ml)")
    for cohort in dict.fromkeys(r["cohort"] for r in rows):
        rs = [r for r in rows if r["cohort"] == cohort]
        mean = np.mean([r["dice"] for r in rs], axis=0)
        les = [metrics.Lesion(*l) for r in rs for l in r["lesions"]]
        bins = [f"{name}: {found}/{n}" for name, n, found, _ in metrics.lesion_table(les)]
        print(f"{cohort:14s} {len(rs):3d}  " + "  ".join(f"{v:7.3f}" for v in mean) + "   " + ", ".join(bins))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
