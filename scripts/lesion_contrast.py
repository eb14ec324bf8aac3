"""How visible each lesion is: its mean HU against the kidney around it, in units of the voxel spread.

    python scripts/lesion_contrast.py DATA [--pred PRED] [--min-ml 0.5]

DATA is a KiTS-layout folder written by ``kidney phantom`` (``phantoms.csv`` gives each case's
phase). For every lesion (tumour or cyst, 26-connected, at least ``--min-ml``): its volume, the mean
HU of its interior (eroded by one voxel when that leaves enough), the mean HU of the kidney in a
4-voxel shell around it (the kidney eroded by 2 voxels, so no partial volume with fat), and the
contrast ``(lesion - kidney) / pooled SD`` of the two regions' voxels. A lesion with ``|contrast|``
under 0.5 differs from its kidney by less than half the voxel-to-voxel spread (noise plus texture):
it can be found only by averaging over many voxels or by its shape. Each lesion's ``outside`` is the
share of the voxels just outside it (its 6-connected rim) that are background rather than kidney or
another lesion: near 0 for a lesion inside the kidney, near 1 for an exophytic one. With ``--pred``
(a folder of ``CASE.nii.gz`` predictions, as ``kidney segment`` writes) each lesion's share labelled
a mass, kidney and background is printed too, and two tables sum them, by visibility (|contrast|
under 1, 1 to 2, 2 or more) and by position (``outside`` under 1/3, 1/3 to 2/3, 2/3 or more):
whether the lesions a network misses are the ones it cannot see, or the ones that reach out of the
kidney, and what it calls them. Ends with a count per phase.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from kidney import io
from kidney.components import label_parts


class LesionStats(NamedTuple):
    kind: str  # "tumour" or "cyst" (the label most of its voxels carry)
    ml: float
    hu: float  # mean HU of its interior
    kidney_hu: float  # mean HU of the kidney shell around it
    contrast: float  # (hu - kidney_hu) / pooled SD of the two regions' voxels
    outside: float  # share of its 6-connected rim that is background
    where: tuple  # (pad, mask): the lesion as a mask of the box ``pad`` of the volume


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


def outside_share(labels, lesion):
    """Share of the voxels 6-adjacent to ``lesion`` (a mask of ``labels``' shape) labelled background."""
    rim = ndi.binary_dilation(lesion) & ~lesion
    return float(np.mean(labels[rim] == 0)) if rim.any() else 0.0


def lesion_masks(labels, spacing, min_ml, margin):
    """Yield ``(kind, ml, pad, mask)`` per lesion of one label map (tumours and cysts, 26-connected,
    at least ``min_ml``): ``mask`` the lesion in the box ``pad``, its bounding box grown by ``margin``
    voxels; ``kind`` the label most of its voxels carry."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    comps, _ = label_parts(labels >= 2)
    for i, sl in enumerate(ndi.find_objects(comps), start=1):
        pad = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in sl)
        lesion = comps[pad] == i
        ml = lesion.sum() * voxel_ml
        if ml >= min_ml:
            kind = "tumour" if np.bincount(labels[pad][lesion]).argmax() == 2 else "cyst"
            yield kind, ml, pad, lesion


def lesions_of(image, labels, spacing, min_ml):
    """Yield a :class:`LesionStats` per lesion of one case (tumours and cysts, 26-connected)."""
    kidney = labels == 1
    kidney_core = ndi.binary_erosion(kidney, iterations=2)
    for kind, ml, pad, lesion in lesion_masks(labels, spacing, min_ml, margin=8):  # room for the shell
        inner, shell = _region_pair(lesion, kidney_core[pad], kidney[pad])
        if shell.sum() < 20:
            continue  # no kidney next to it (an exophytic lesion's far side only)
        a, b = image[pad][inner].astype(np.float64), image[pad][shell].astype(np.float64)
        spread = np.sqrt(0.5 * (a.var() + b.var()))
        yield LesionStats(kind, ml, a.mean(), b.mean(), (a.mean() - b.mean()) / max(spread, 1e-6),
                          outside_share(labels[pad], lesion), (pad, lesion))


BANDS = ("< 1", "1 to 2", ">= 2")
POSITIONS = ("inside", "partly out", "exophytic")


def visibility_band(contrast: float) -> str:
    """``|contrast|`` under 1, 1 to 2, or 2 and more (in voxel spreads)."""
    c = abs(contrast)
    return BANDS[0] if c < 1 else BANDS[1] if c < 2 else BANDS[2]


def position(outside: float) -> str:
    """``outside`` (a share of the rim) under 1/3, 1/3 to 2/3, or 2/3 and more."""
    return POSITIONS[0] if outside < 1 / 3 else POSITIONS[1] if outside < 2 / 3 else POSITIONS[2]


def _share_table(title, groups, order):
    """Print the mean shares of ``groups`` ``{(kind, group): [lesions, mass, kidney, background]}``."""
    print(f"\nmean share of a lesion labelled mass / kidney / background, {title}")
    print(f"{'lesion':7s} {'group':10s} {'lesions':>7s}   mass kidney     bg")
    for (kind, group), (n, *shares) in sorted(groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        print(f"{kind:7s} {group:10s} {int(n):7d}  " + " ".join(f"{v / n:6.2f}" for v in shares))


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
    by_position = defaultdict(lambda: np.zeros(4))  # (kind, position) -> the same
    print(f"{'case':11s} {'phase':17s} {'lesion':7s} {'ml':>8s} {'HU':>7s} {'kidney':>7s} {'contrast':>8s} {'outside':>7s}"
          + ("   mass kidney     bg" if args.pred else ""))
    for case in sorted(phases):
        img = io.load_nifti(args.data / case / "imaging.nii.gz")
        labels = io.load_nifti(args.data / case / "segmentation.nii.gz").array.astype(np.int16)
        pred = io.load_nifti(args.pred / f"{case}.nii.gz").array if args.pred else None
        for les in lesions_of(img.array, labels, img.spacing, args.min_ml):
            found = ""
            if pred is not None:
                pad, lesion = les.where
                got = pred[pad][lesion]
                shares = np.array([1.0, np.mean(got >= 2), np.mean(got == 1), np.mean(got == 0)])
                by_visibility[les.kind, visibility_band(les.contrast)] += shares
                by_position[les.kind, position(les.outside)] += shares
                found = "  " + " ".join(f"{v:6.2f}" for v in shares[1:])
            print(f"{case:11s} {phases[case]:17s} {les.kind:7s} {les.ml:8.2f} {les.hu:7.1f} {les.kidney_hu:7.1f} "
                  f"{les.contrast:8.2f} {les.outside:7.2f}{found}")
            s = summary[phases[case]]
            s[0] += 1
            s[1] += abs(les.contrast) < 0.5
            s[2] += abs(les.contrast) < 1.0
    print(f"\n{'phase':17s} lesions  |contrast| < 0.5  < 1")
    for phase, (n, half, one) in summary.items():
        print(f"{phase:17s} {n:7d} {half:17d} {one:4d}")
    if by_visibility:
        _share_table("by position (the share of its rim that is background)", by_position, POSITIONS)
        _share_table("by |contrast|", by_visibility, BANDS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
