"""What a prediction gets wrong about masses: which tissue its false masses lie on, what the missed
lesion voxels were called instead.

    python scripts/mass_errors.py PRED DATA

PRED holds ``kidney segment``'s output (``<case>.nii.gz``), DATA the cases (KiTS layout, with
segmentations). Per case, in ml: the reference masses (tumour + cyst), the predicted ones, and their
Dice; the **false masses** (predicted mass, not a reference mass) split by what the reference says
lies there — normal kidney or background; the **missed lesion** voxels (reference mass, not
predicted a mass) split by what the prediction called them — kidney or background; and of the
false masses, those in a predicted mass (26-connected) that overlaps a reference lesion — a lesion
drawn too large — rather than in one apart from every lesion. A
``phantoms.csv`` in DATA (written by ``kidney phantom``) adds each case's contrast phase, and the
totals are then given per phase as well.

Masses Dice is a mean over cases, so a case with a small lesion loses nearly all of it to a few ml of
false masses: the table shows whether those lie on the kidney (the network takes normal parenchyma
for a lesion) or beside it, and whether a lesion it misses was called kidney (seen, not recognised)
or background (not taken for part of the kidney at all, as an exophytic lesion can be). The
joined share says whether the false masses are lesions of their own or found lesions' edges.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kidney import io, metrics
from kidney.components import label_parts
from kidney.phantom.dataset import read_manifest


def errors(pred: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict:
    """Mass volumes (ml) and Dice of one case; ``pred``, ``ref``: label maps (0–3) on one grid."""
    pm, rm = pred >= 2, ref >= 2
    false, missed = pm & ~rm, rm & ~pm
    parts, _ = label_parts(pm)
    found = np.unique(parts[pm & rm])  # the predicted masses (labels >= 1) that overlap a reference lesion
    ml = lambda m: float(np.count_nonzero(m)) * voxel_ml  # noqa: E731
    return {"ref": ml(rm), "pred": ml(pm), "dice": metrics.dice(pm, rm),
            "false_on_kidney": ml(false & (ref == 1)), "false_on_background": ml(false & (ref == 0)),
            "missed_as_kidney": ml(missed & (pred == 1)), "missed_as_background": ml(missed & (pred == 0)),
            "false_joined": ml(false & np.isin(parts, found))}


COLUMNS = ("ref", "pred", "dice", "false_on_kidney", "false_on_background", "missed_as_kidney",
           "missed_as_background", "false_joined")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", type=Path, help="folder of <case>.nii.gz predictions")
    ap.add_argument("data", type=Path, help="folder of case_*/imaging.nii.gz + segmentation.nii.gz")
    args = ap.parse_args(argv)
    cases = sorted(d for d in args.data.iterdir() if (d / io.LABEL_NAME).is_file())
    if not cases:
        ap.error(f"{args.data} holds no case_*/{io.LABEL_NAME}")
    phase = {case: row["phase"] for case, row in read_manifest(args.data).items()}
    print(f"{'case':24s} {'phase':17s} " + " ".join(f"{c:>10s}" for c in ("ref ml", "pred ml", "Dice",
          "FP kidney", "FP backgr", "FN kidney", "FN backgr", "FP joined")))
    rows = []
    for d in cases:
        pf = args.pred / f"{d.name}.nii.gz"
        if not pf.is_file():
            print(f"error: no prediction {pf} for case {d.name}", file=sys.stderr)
            return 2
        ref = io.load_nifti(d / io.LABEL_NAME)
        pred = io.load_nifti(pf)
        if pred.array.shape != ref.array.shape:
            print(f"error: {pf} has shape {pred.array.shape}, the reference {ref.array.shape}", file=sys.stderr)
            return 2
        e = errors(pred.array, ref.array, float(np.prod(ref.spacing)) / 1000.0)
        e["phase"] = phase.get(d.name, "")
        rows.append(e)
        print(f"{d.name:24s} {e['phase']:17s} " + " ".join(f"{e[c]:10.3f}" if c == "dice" else f"{e[c]:10.1f}"
                                                           for c in COLUMNS))
    groups = {"all": rows}
    for p in sorted({r["phase"] for r in rows} - {""}):
        groups[p] = [r for r in rows if r["phase"] == p]
    print("\ntotals (ml) and mean masses Dice")
    for name, g in groups.items():
        tot = {c: sum(r[c] for r in g) for c in COLUMNS if c != "dice"}
        false, missed = tot["false_on_kidney"] + tot["false_on_background"], \
            tot["missed_as_kidney"] + tot["missed_as_background"]
        share = lambda a, b: a / b if b else float("nan")  # noqa: E731
        print(f"{name:17s} {len(g):3d} cases  masses Dice {np.mean([r['dice'] for r in g]):.3f}  "
              f"false masses {false:.1f} ml ({share(tot['false_on_kidney'], false):.0%} on normal kidney, "
              f"{share(tot['false_joined'], false):.0%} joined to a found lesion)  "
              f"missed {missed:.1f} ml of {tot['ref']:.1f} ({share(tot['missed_as_background'], missed):.0%} "
              f"called background)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
