"""Choose the post-processing of a set of weights on validation predictions, and store it with them.

    python scripts/choose_postprocess.py PRED:DATA [PRED:DATA ...] [--candidates 0,2] [--write STAGE2.npz]
    python scripts/choose_postprocess.py --set stage1 --write STAGE2.npz

Each PRED folder holds predictions made with the post-processing off (``kidney segment
--keep-components 0``) for the validation cases of DATA (KiTS layout, with segmentations). For every
candidate N (0: keep every component) the predictions are post-processed as the segmenter would
(:func:`kidney.postprocess.keep_largest_components`) and scored with the KiTS Dice per HEC, as
``kidney evaluate`` does. Prints, per folder and pooled over every case, the mean Dice of the three
HECs and of their mean, and chooses the candidate with the best pooled mean; on a tie, the one that
removes less (0 first, then the larger N). It also prints, per candidate, the largest loss of
kidney+masses Dice any one case suffers against keeping all: the mean can hide a case whose whole
kidney was removed (a false island larger than a kidney), which no choice by the mean guards
against. With ``--write`` the choice is stored in the stage-2 weights file's metadata
(``keep_components``; the arrays are not touched, which is checked), where ``kidney segment``
reads it. Choose on validation data only: never on a test set.

``--set SETTING --write STAGE2.npz`` stores a setting chosen elsewhere. The rule ``stage1`` (keep
the parts that touch a kidney stage 1 found) needs stage 1's map, which a saved prediction does not
hold: score it on validation with ``kidney segment --keep-components stage1`` against
``--keep-components 0``, then store it this way.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kidney import io, metrics
from kidney.model import write_metadata
from kidney.postprocess import META_KEY, check_keep_components, keep_largest_components


def pair(text: str):
    pred, sep, data = text.rpartition(":")
    if not sep or not pred or not data:
        raise argparse.ArgumentTypeError(f"expected PRED_DIR:DATA_DIR, got {text!r}")
    return Path(pred), Path(data)


def candidates(text: str):
    try:
        values = sorted({int(v) for v in text.split(",")}, key=lambda n: (n != 0, -n))  # removes-less first
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 0,2, got {text!r}") from None
    if any(n < 0 for n in values):
        raise argparse.ArgumentTypeError(f"candidates must be >= 0, got {text!r}")
    return values


def score_folder(pred_dir: Path, data_dir: Path, cands):
    """``{N: (cases, 3) Dice array}`` over the cases of ``data_dir``."""
    out = {n: [] for n in cands}
    for case_id, ref_path in metrics.check_folders(pred_dir, data_dir):
        pred_path = metrics.find_prediction(pred_dir, case_id)
        if pred_path is None:
            raise FileNotFoundError(f"{pred_dir} holds no prediction for {case_id}")
        ref, pred = io.load_nifti(ref_path, label=True), io.load_nifti(pred_path, label=True)
        if pred.shape != ref.shape:
            raise ValueError(f"{pred_path}: shape {pred.shape} does not match {ref_path} {ref.shape}")
        for n in cands:
            out[n].append(metrics.hec_dice(keep_largest_components(pred.array, n), ref.array))
    return {n: np.array(rows) for n, rows in out.items()}


def write_choice(path: Path, n) -> None:
    """Store ``keep_components = n`` (a count or ``"stage1"``) in the metadata of the stage-2 weights
    file ``path``."""
    write_metadata(path, {META_KEY: n}, stage=2)
    print(f"wrote {META_KEY} = {n} into {path} (arrays unchanged)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=pair, metavar="PRED:DATA")
    ap.add_argument("--candidates", type=candidates, default=candidates("0,2"),
                    help="components to keep, comma-separated (0: all; default 0,2)")
    ap.add_argument("--write", type=Path, default=None, metavar="STAGE2.npz",
                    help="store the chosen setting in this stage-2 weights file")
    ap.add_argument("--set", default=None, metavar="SETTING",
                    help="with --write and no folders: store this setting (a count, or stage1) as it is")
    args = ap.parse_args(argv)
    if args.set is not None:
        if args.folders or args.write is None:
            ap.error("--set stores a setting chosen elsewhere: give --write STAGE2.npz and no PRED:DATA folders")
        setting = check_keep_components(int(args.set) if args.set.isdigit() else args.set, "--set")
        write_choice(args.write, setting or 0)  # None (keep all) is stored as 0
        return 0
    if not args.folders:
        ap.error("give PRED:DATA folders to choose on (or --set SETTING --write STAGE2.npz)")
    pooled = {n: [] for n in args.candidates}
    print("folder                          keep  cases  kidney  masses  tumour    mean")
    for pred_dir, data_dir in args.folders:
        scores = score_folder(pred_dir, data_dir, args.candidates)
        for n, d in scores.items():
            pooled[n].append(d)
            m = d.mean(axis=0)
            print(f"{str(pred_dir)[-30:]:30s} {n or 'all':>5}  {len(d):5d}  " + "  ".join(f"{v:.4f}" for v in m)
                  + f"  {m.mean():.4f}")
    best, best_mean = None, -1.0
    for n in args.candidates:  # removes-less first: a later candidate must be strictly better
        d = np.concatenate(pooled[n])
        m = d.mean(axis=0)
        print(f"{'pooled':30s} {n or 'all':>5}  {len(d):5d}  " + "  ".join(f"{v:.4f}" for v in m) + f"  {m.mean():.4f}")
        if m.mean() > best_mean:
            best, best_mean = n, m.mean()
    if 0 in pooled:  # the mean can hide a case that loses a whole kidney: show the worst one
        every = np.concatenate(pooled[0])[:, 0]
        for n in (c for c in args.candidates if c):
            loss = every - np.concatenate(pooled[n])[:, 0]
            print(f"keep {n}: largest loss of kidney+masses Dice on one case against keeping all "
                  f"{loss.max():.4f}; cases losing more than 0.05: {int(np.count_nonzero(loss > 0.05))}")
    print(f"chosen: keep {best or 'every'} component{'s' if best != 1 else ''} (pooled mean Dice {best_mean:.4f})")
    if args.write is not None:
        write_choice(args.write, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
