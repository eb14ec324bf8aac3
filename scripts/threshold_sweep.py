"""How much a set of weights gains from other HEC probability thresholds than 0.5 (validation only).

    python scripts/threshold_sweep.py DATA [DATA ...] [--weights varied] [--top 10]

Segments every case of each DATA folder (KiTS layout, with segmentations) with the weights, keeps
the three HEC probabilities that stage 2 merges onto the scan's grid (``Segmenter.segment(...,
probabilities=True)``, made at threshold 0.3 so that every threshold of the sweep can be read off
them), and scores every combination of a kidney+masses threshold (0.3-0.7) and a masses and a
tumour threshold (0.3-0.9 each) with the KiTS Dice per HEC, labels made as the segmenter makes them
(:func:`kidney.model.labels_from_hecs`). Prints the mean Dice at 0.5 / 0.5 / 0.5 and the best
combinations by the mean of the three HECs.

What it tells: whether the network's errors sit near the decision boundary (a threshold moves
them) or are confident (no threshold does). It chooses nothing and writes nothing; a threshold
taken from it would have to be chosen on validation data, never on a test set.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kidney import io
from kidney.pipeline import Segmenter

KIDNEY = (0.3, 0.4, 0.5, 0.6, 0.7)
LESION = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FLOOR = 0.3  # the probabilities below this are not kept (the segmenter skips them when merging)


def sweep_case(probs: np.ndarray, ref: np.ndarray) -> dict:
    """``{(tk, tm, tt): (3,) Dice}`` of kidney+masses, masses, tumour over the sweep's grid for one case.

    probs: ``(Z, Y, X, 3) float`` HEC probabilities; ref: ``(Z, Y, X)`` labels 0..3. Labels as
    ``labels_from_hecs`` makes them: kidney where p0 >= tk, tumour where also p2 >= tt, cyst where
    also p1 >= tm and not tumour; so the masses HEC is kidney & (p1 >= tm or p2 >= tt). Scored on the
    box of the voxels with p0 >= ``FLOOR`` (no threshold labels any other); the reference is counted
    over the whole volume. Each mask is made once per threshold it depends on.
    """
    inside = np.argwhere(probs[..., 0] >= FLOOR)
    lo = inside.min(axis=0) if len(inside) else np.zeros(3, int)
    hi = inside.max(axis=0) + 1 if len(inside) else np.zeros(3, int)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p, r = probs[box], ref[box]
    wants = (r > 0, r >= 2, r == 2)
    ref_counts = ((ref > 0).sum(), (ref >= 2).sum(), (ref == 2).sum())
    cyst_at = {tm: p[..., 1] >= tm for tm in LESION}
    tumour_at = {tt: p[..., 2] >= tt for tt in LESION}
    out = {}
    for tk in KIDNEY:
        kidney = p[..., 0] >= tk
        for tt in LESION:
            tumour = kidney & tumour_at[tt]
            for tm in LESION:
                masses = tumour | (kidney & cyst_at[tm])
                dice = []
                for pred, want, n_ref in zip((kidney, masses, tumour), wants, ref_counts):
                    total = pred.sum() + n_ref
                    dice.append(1.0 if total == 0 else 2.0 * (pred & want).sum() / total)
                out[tk, tm, tt] = np.array(dice)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, nargs="+", help="KiTS-layout folders of validation cases")
    p.add_argument("--weights", default=None, help="weights folder or shipped set (default: the default set)")
    p.add_argument("--top", type=int, default=10, help="best combinations printed (default 10)")
    args = p.parse_args(argv)
    seg = Segmenter(weights_dir=args.weights, threshold=FLOOR)
    scores = {}
    n = 0
    for folder in args.data:
        for case in sorted(folder.glob("case_*")):
            vol = io.load_nifti(case / "imaging.nii.gz")
            ref = io.load_nifti(case / "segmentation.nii.gz", label=True).array
            probs = seg.segment(vol, probabilities=True).probabilities
            for key, dice in sweep_case(probs, ref).items():
                scores[key] = scores.get(key, 0.0) + dice
            n += 1
            at_half = scores[0.5, 0.5, 0.5] / n
            print(f"{folder.name}/{case.name}: running mean at 0.5: " + " / ".join(f"{v:.4f}" for v in at_half),
                  flush=True)
    if n == 0:
        raise SystemExit("no case_* folders in " + ", ".join(map(str, args.data)))
    means = {k: v / n for k, v in scores.items()}
    base = means[0.5, 0.5, 0.5]
    print(f"\n{n} cases; Dice kidney+masses / masses / tumour (mean of the three)")
    print(f"thresholds 0.5 / 0.5 / 0.5: {base[0]:.4f} / {base[1]:.4f} / {base[2]:.4f} ({base.mean():.4f})")
    print("best (kidney+masses, masses, tumour thresholds):")
    for key, v in sorted(means.items(), key=lambda kv: -kv[1].mean())[:args.top]:
        print(f"  {key[0]:.1f} / {key[1]:.1f} / {key[2]:.1f}: {v[0]:.4f} / {v[1]:.4f} / {v[2]:.4f} ({v.mean():.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
