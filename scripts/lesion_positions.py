"""How deep in the kidney lesions lie: real label maps against drawn phantoms, from labels alone.

    python scripts/lesion_positions.py --maps DIR [--split train]      # KiTS-layout label maps
    python scripts/lesion_positions.py --phantoms 24 [--lesion-depth real] [--seed 90000]

For every lesion (tumours and cysts, 26-connected, at least ``--min-ml``): its ``outside``, the share of
the voxels just outside it (its 6-connected rim) that are background rather than kidney or another
lesion (``scripts/lesion_contrast.py``: near 0 inside the kidney, near 1 for an exophytic lesion).
Prints, per kind, the median and quartiles of ``outside`` and how many lesions (and what share of
their volume) lie inside (under 1/3), partly out (1/3 to 2/3) and exophytic (2/3 or more). The
``real`` lesion depth of ``kidney phantom`` (``kidney.phantom.anatomy.LESION_DEPTHS``) was set by
comparing the two.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lesion_contrast as lc  # noqa: E402

from kidney import io  # noqa: E402

def lesion_positions(labels, spacing, min_ml=0.5):
    """``[(kind, ml, outside)]`` of the lesions of one label map."""
    return [(kind, ml, lc.outside_share(labels[pad], lesion))  # margin 1: room for the rim
            for kind, ml, pad, lesion in lc.lesion_masks(labels, spacing, min_ml, margin=1)]


def summary(rows):
    """Lines of the per-kind table for ``rows`` ``[(kind, ml, outside)]``."""
    lines = [f"{'lesion':7s} {'n':>4s} {'median':>6s} {'quartiles':>11s}   "
             + "   ".join(f"{p} (volume)" for p in lc.POSITIONS)]
    for kind in ("tumour", "cyst"):
        mine = [(ml, o) for k, ml, o in rows if k == kind]
        if not mine:
            continue
        ml, o = np.array(mine).T
        q1, med, q3 = np.percentile(o, [25, 50, 75])
        cells = []
        for p in lc.POSITIONS:
            at = np.array([lc.position(v) == p for v in o])
            cells.append(f"{int(at.sum()):3d} ({ml[at].sum() / ml.sum():.2f})")
        lines.append(f"{kind:7s} {len(o):4d} {med:6.2f} {q1:5.2f}-{q3:4.2f}   " + "   ".join(
            f"{c:>{len(p) + 9}s}" for c, p in zip(cells, lc.POSITIONS)))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--maps", type=Path, help="folder of case_*/segmentation.nii.gz")
    src.add_argument("--phantoms", type=int, help="draw this many phantoms (kidney.phantom.make_phantom)")
    p.add_argument("--split", choices=("train", "validation", "test"), default=None,
                   help="with --maps: only this part of the fixed KiTS23 split")
    p.add_argument("--lesion-depth", default="classic", help="with --phantoms (default classic)")
    p.add_argument("--seed", type=int, default=90000, help="with --phantoms: seeds SEED, SEED+1, ...")
    p.add_argument("--preset", default="demo", help="with --phantoms: grid preset (default demo)")
    p.add_argument("--min-ml", type=float, default=0.5, help="smallest lesion counted (ml, default 0.5)")
    args = p.parse_args(argv)
    rows = []
    if args.maps is not None:
        cases = sorted(c for c in args.maps.glob("case_*") if (c / io.LABEL_NAME).is_file())
        if args.split is not None:
            from kidney.splits import load_split
            keep = set(load_split()[args.split])
            cases = [c for c in cases if c.name in keep]
        if not cases:
            p.error(f"no case_*/{io.LABEL_NAME} in {args.maps}" + (f" of the {args.split} split" if args.split else ""))
        for case in cases:
            seg = io.load_nifti(case / io.LABEL_NAME)
            rows += lesion_positions(seg.array.astype(np.int16), seg.spacing, args.min_ml)
        what = f"{len(cases)} label maps in {args.maps}" + (f" ({args.split})" if args.split else "")
    else:
        from kidney import phantom
        if args.phantoms < 1:
            p.error(f"--phantoms must be >= 1, got {args.phantoms}")
        for i in range(args.phantoms):
            ph = phantom.make_phantom(args.seed + i, preset=args.preset, lesion_depth=args.lesion_depth)
            rows += lesion_positions(ph.labels.astype(np.int16), ph.spacing, args.min_ml)
        what = f"{args.phantoms} phantoms, lesion depth {args.lesion_depth}, seeds {args.seed}-{args.seed + args.phantoms - 1}"
    print(f"{what}: {len(rows)} lesions of {args.min_ml:g} ml or more; outside = the share of a lesion's rim that is background")
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
