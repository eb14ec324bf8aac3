"""The rules that choose the `varied` weights on validation, printed from the files a scoring run wrote.

    python scripts/rule_score.py CAND [CAND ...] [--base CAND]

Each CAND is the prefix a scoring run (``scripts/train_weights.sh``, ``stage1_scores``) wrote its
results under, each set segmented with the candidate's weights and scored by ``kidney evaluate``:

- ``CAND.val/evaluation.csv``: the 32 validation CT of the generator's own draw (20 around the
  validation label maps, 12 classic phantoms);
- ``CAND.valn/evaluation.csv``: the 20 textured CT around the validation maps on their own grids;
- ``CAND.valt/evaluation.csv``: the same maps' textured CT on 3 mm voxels;
- ``CAND.fov.json``: ``scripts/fov_check.py --json`` on the 3 mm maps (the half and kidney-free slabs);
- ``CAND.stray.json`` (optional): ``scripts/stage1_stray.py --json`` on the four validation folders.

Printed per candidate, all in [0, 1] and higher better: (1)-(3) the mean of the three HECs' mean
Dice (kidney+masses, masses, tumour) on each set, (4) the half slabs' kidney+masses Dice, (5) the
share of kidney-free slabs given no ROI, (6) the share of stage 1's kidney call lying near the
labels (``near_share``, pooled over the folders). ``rule`` is the mean of (1)-(4), the rule for
stage 2 (round 20 of the weights README); ``stage-1 rule`` the mean of all six, the rule for
stage 1 (round 32). With ``--base``, each candidate's lead over that one.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

SETS = ("val", "valn", "valt")
HECS = ("Dice_kidney", "Dice_masses", "Dice_tumor")


def mean_dice(csv_path: Path) -> float:
    """The mean over the three HECs of the ``average`` row of a ``kidney evaluate`` table."""
    with open(csv_path, newline="") as f:
        rows = {r["caseID"]: r for r in csv.DictReader(f)}
    if "average" not in rows:
        raise SystemExit(f"{csv_path}: no 'average' row (not a kidney evaluate table?)")
    return float(np.mean([float(rows["average"][h]) for h in HECS]))


def figures(cand: str) -> dict:
    """The six figures of one candidate (``near`` is None without ``CAND.stray.json``)."""
    paths = {s: Path(f"{cand}.{s}") / "evaluation.csv" for s in SETS}
    paths["fov"], stray = Path(f"{cand}.fov.json"), Path(f"{cand}.stray.json")
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"{cand}: missing {', '.join(missing)}")
    out = {s: mean_dice(paths[s]) for s in SETS}
    fov = json.loads(paths["fov"].read_text())
    free = fov.get("no-kidney")
    if "half" not in fov or free is None or not free["slabs"]:
        raise SystemExit(f"{paths['fov']}: needs the half and no-kidney slabs")
    out["half"] = float(fov["half"]["dice"])
    out["free"] = 1.0 - free["with_roi"] / free["slabs"]
    sums = json.loads(stray.read_text()) if stray.is_file() else None
    out["near"] = None if sums is None else float(sums.get("all", next(iter(sums.values())))["near_share"])
    out["rule"] = float(np.mean([out[k] for k in ("val", "valn", "valt", "half")]))
    six = [out[k] for k in ("val", "valn", "valt", "half", "free", "near")]
    out["stage1_rule"] = None if out["near"] is None else float(np.mean(six))
    return out


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cands", nargs="+", help="result prefixes (CAND.val/, CAND.fov.json, ...)")
    ap.add_argument("--base", default=None, help="also print each candidate's lead over this one")
    args = ap.parse_args(argv)
    rows = {c: figures(c) for c in args.cands + ([args.base] if args.base and args.base not in args.cands else [])}
    keys = ("val", "valn", "valt", "half", "free", "near", "rule", "stage1_rule")
    lead_head = "  lead (rule / stage-1 rule)" if args.base else ""
    print("candidate".ljust(28) + "".join(f"{k:>12s}" for k in keys) + lead_head)
    for c in args.cands:
        r = rows[c]
        line = Path(c).name.ljust(28)[:28] + "".join(f"{_fmt(r[k]):>12s}" for k in keys)
        if args.base:
            b = rows[args.base]
            lead = [None if r[k] is None or b[k] is None else r[k] - b[k] for k in ("rule", "stage1_rule")]
            line += "  " + " / ".join("—" if v is None else f"{v:+.4f}" for v in lead)
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
