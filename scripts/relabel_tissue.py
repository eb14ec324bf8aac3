"""Copy a folder of phantoms with the voxels of chosen tissues given another label.

    python scripts/relabel_tissue.py SRC DST --tissue NAME [NAME ...] --label L

SRC holds cases written with ``kidney phantom --tissue`` (``case_*/{imaging,segmentation,tissue}.nii.gz``).
Each case is written to ``DST/case_*`` with the same CT (copied byte for byte) and its labels changed
to ``L`` wherever the tissue map holds one of the named tissues (:data:`kidney.phantom.TISSUES`).
A label convention can then be changed without drawing the CT again: the classic phantoms label
their collecting system kidney (1), where the KiTS23 maps leave the renal sinus out of the kidney
(``--tissue collecting_system --label 0``). Prints how many voxels changed, per case and in all.
DST must not exist yet (nothing is overwritten).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from kidney import io
from kidney.phantom import TISSUE_NAME, TISSUES

_NAMES = [t.name for t in TISSUES]


def relabel_case(src: Path, dst: Path, ids, label: int) -> int:
    """Write ``dst`` from the case folder ``src``; returns the number of voxels relabelled."""
    seg_img = nib.load(src / io.LABEL_NAME)
    seg = np.asarray(seg_img.dataobj)
    tissue = np.asarray(nib.load(src / TISSUE_NAME).dataobj)
    if tissue.shape != seg.shape:
        raise SystemExit(f"{src}: tissue map {tissue.shape} and labels {seg.shape} differ in shape")
    where = np.isin(tissue, ids) & (seg != label)
    out = seg.copy()
    out[where] = label
    dst.mkdir(parents=True)
    shutil.copyfile(src / io.IMAGE_NAME, dst / io.IMAGE_NAME)
    nib.save(nib.Nifti1Image(out.astype(seg.dtype), seg_img.affine, seg_img.header), dst / io.LABEL_NAME)
    return int(where.sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, metavar="SRC")
    ap.add_argument("dst", type=Path, metavar="DST")
    ap.add_argument("--tissue", nargs="+", required=True, choices=_NAMES, metavar="NAME",
                    help="tissues whose voxels are relabelled (kidney.phantom.TISSUES names)")
    ap.add_argument("--label", type=int, required=True, choices=range(4), metavar="L",
                    help="the label they get: 0 background, 1 kidney, 2 tumour, 3 cyst")
    args = ap.parse_args(argv)
    cases = sorted(p for p in args.src.glob("case_*") if p.is_dir())
    if not cases:
        ap.error(f"{args.src} holds no case_* folders")
    missing = [str(c) for c in cases if not (c / TISSUE_NAME).is_file()]
    if missing:
        ap.error(f"no {TISSUE_NAME} in {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                 "(write the phantoms with kidney phantom --tissue)")
    if args.dst.exists():
        ap.error(f"{args.dst} exists; choose a new folder (nothing is overwritten)")
    ids = [_NAMES.index(n) for n in args.tissue]
    total = 0
    for c in cases:
        n = relabel_case(c, args.dst / c.name, ids, args.label)
        total += n
        print(f"{c.name}: {n} voxels relabelled {args.label}")
    print(f"{len(cases)} cases written to {args.dst}: {total} voxels relabelled {args.label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
