"""How visible each lesion is: its mean HU against the kidney around it, in units of the voxel spread.

    python scripts/lesion_contrast.py DATA [--pred PRED] [--min-ml 0.5]

DATA is a KiTS-layout folder written by ``kidney phantom`` (``phantoms.csv`` gives each case's
phase). For every lesion (tumour or cyst, 26-connected, at least ``--min-ml``): its volume, the mean
HU of its interior (eroded by one voxel when that leaves enough), the mean HU of the kidney in a
4-voxel shell around it (the kidney eroded by 2 voxels, so no partial volume with fat), and the
contrast ``(lesion - kidney) / pooled SD`` of the two regions' voxels. A lesion with ``|contrast|``
under 0.5 differs from its kidney by less than half the voxel-to-voxel spread (noise plus texture):
it can be found only by averaging over many voxels or by its shape. With ``--pred`` (a folder of
``CASE.nii.gz`` predictions, as ``kidney segment`` writes) each lesion's share labelled a mass,
kidney and background is printed too, and a last table sums them by visibility (|contrast| under 1,
1 to 2, 2 or more): whether the lesions a network misses are the ones it cannot see, and what it
calls them. Ends with a count per phase.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from kidney import io

CUBE = np.ones((3, 3, 3), bool)


def _region_pair(lesion, kidney_core, kidney):
    """(interior of the lesion, kidney shell around it) — boolean masks."""
    inner = ndi.binary_erosion(lesion)
    if inner.sum() < 20:
        inner = lesion
    grown = ndi.binary_dilation(lesion, iterations=4)
    shell = grown & kidney_core
    if shell.sum() < 20:
        shell = grown & kidney
    return inner, shell


def lesions_of(image, labels, spacing, min_ml):
    """Yield ``(kind, ml, lesion HU, kidney HU, contrast, lesion mask)`` per lesion of one case."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    kidney = labels == 1
    kidney_core = ndi.binary_erosion(kidney, iterations=2)
    comps, n = ndi.label(labels >= 2, structure=CUBE)
    for i, sl in enumerate(ndi.find_objects(comps), start=1):
        pad = tuple(slice(max(s.start - 8, 0), s.stop + 8) for s in sl)  # room for the shell
        lesion = comps[pad] == i
        ml = lesion.sum() * voxel_ml
        if ml < min_ml:
            continue
        inner, shell = _region_pair(lesion, kidney_core[pad], kidney[pad])
        if shell.sum() < 20:
            continue  # no kidney next to it (an exophytic lesion's far side only)
        a, b = image[pad][inner].astype(np.float64), image[pad][shell].astype(np.float64)
        spread = np.sqrt(0.5 * (a.var() + b.var()))
        kind = "tumour" if np.bincount(labels[pad][lesion]).argmax() == 2 else "cyst"
        yield kind, ml, a.mean(), b.mean(), (a.mean() - b.mean()) / max(spread, 1e-6), (pad, lesion)


BANDS = ("< 1", "1 to 2", ">= 2")


def visibility_band(contrast: float) -> str:
    """``|contrast|`` under 1, 1 to 2, or 2 and more (in voxel spreads)."""
    c = abs(contrast)
    return BANDS[0] if c < 1 else BANDS[1] if c < 2 else BANDS[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--pred", type=Path, default=None, help="folder of CASE.nii.gz predictions")
    p.add_argument("--min-ml", type=float, default=0.5, help="smallest lesion listed (ml, default 0.5)")
    args = p.parse_args(argv)
    with open(args.data / "phantoms.csv") as f:
        phases = {row["case"]: row["phase"] for row in csv.DictReader(f)}
    summary = defaultdict(lambda: [0, 0, 0])  # phase -> lesions, |c| < 0.5, |c| < 1
    by_visibility = defaultdict(lambda: np.zeros(4))  # (kind, band) -> lesions, mass / kidney / background shares
    print(f"{'case':11s} {'phase':17s} {'lesion':7s} {'ml':>8s} {'HU':>7s} {'kidney':>7s} {'contrast':>8s}"
          + ("   mass kidney     bg" if args.pred else ""))
    for case in sorted(phases):
        img = io.load_nifti(args.data / case / "imaging.nii.gz")
        labels = io.load_nifti(args.data / case / "segmentation.nii.gz").array.astype(np.int16)
        pred = io.load_nifti(args.pred / f"{case}.nii.gz").array if args.pred else None
        for kind, ml, hu, kid, contrast, (pad, lesion) in lesions_of(img.array, labels, img.spacing, args.min_ml):
            found = ""
            if pred is not None:
                got = pred[pad][lesion]
                shares = np.array([1.0, np.mean(got >= 2), np.mean(got == 1), np.mean(got == 0)])
                by_visibility[kind, visibility_band(contrast)] += shares
                found = "  " + " ".join(f"{v:6.2f}" for v in shares[1:])
            print(f"{case:11s} {phases[case]:17s} {kind:7s} {ml:8.2f} {hu:7.1f} {kid:7.1f} {contrast:8.2f}{found}")
            s = summary[phases[case]]
            s[0] += 1
            s[1] += abs(contrast) < 0.5
            s[2] += abs(contrast) < 1.0
    print(f"\n{'phase':17s} lesions  |contrast| < 0.5  < 1")
    for phase, (n, half, one) in summary.items():
        print(f"{phase:17s} {n:7d} {half:17d} {one:4d}")
    if by_visibility:
        print("\nmean share of a lesion labelled mass / kidney / background, by |contrast|")
        print(f"{'lesion':7s} {'|contrast|':10s} {'lesions':>7s}   mass kidney     bg")
        for (kind, band), (n, *shares) in sorted(by_visibility.items(), key=lambda kv: (kv[0][0], BANDS.index(kv[0][1]))):
            print(f"{kind:7s} {band:10s} {int(n):7d}  " + " ".join(f"{v / n:6.2f}" for v in shares))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
