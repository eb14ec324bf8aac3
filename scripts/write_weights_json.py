"""Write kidney/weights/weights.json: how the shipped weights were made and what they scored.

    python scripts/write_weights_json.py WORK_DIR [--real-ct-log FILE] [--validation NAME=CSV ...]

Reads each shipped file's __meta__ (training config, steps, time), WORK_DIR/pred/evaluation.csv
(``kidney evaluate`` on the unseen test phantoms), if given, the output of
``scripts/eval_real_ct.py``, and the validation scores of the candidate weight pairs the shipped
pair was chosen from (``--validation NAME=evaluation.csv``, ``--chosen NAME``).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from kidney.metrics import PHANTOM_DICE_TARGETS
from kidney.model import read_weights
from kidney.pipeline import DEFAULT_STAGE1, DEFAULT_STAGE2, WEIGHTS_DIR


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--real-ct-log", type=Path, default=None)
    ap.add_argument("--validation", action="append", default=[], metavar="NAME=CSV",
                    help="kidney evaluate output of a candidate weight pair on the validation phantoms")
    ap.add_argument("--chosen", default=None, help="the candidate that was shipped")
    ap.add_argument("--keep-candidates", action="store_true",
                    help="keep the candidates already recorded in weights.json (earlier training rounds)")
    ap.add_argument("--validation-data", default="6 validation phantoms: kidney phantom --out val -n 6 "
                    "--seed 3000 --preset demo", help="how the validation phantoms were made")
    args = ap.parse_args(argv)
    out = {"made_by": "scripts/train_weights.sh", "files": {}}
    for path in (DEFAULT_STAGE1, DEFAULT_STAGE2):
        state, meta = read_weights(path)
        meta.pop("path", None)
        meta["parameters"] = int(sum(v.size for v in state.values()))
        meta["bytes"] = path.stat().st_size
        out["files"][path.name] = meta
    rows = _rows(args.work / "pred" / "evaluation.csv")
    avg = [r for r in rows if r["caseID"] == "average"]
    out["test_phantoms"] = {
        "data": "10 unseen phantoms: kidney phantom --out test -n 10 --seed 2000 --preset demo",
        "command": "kidney segment -i test -o pred; kidney evaluate pred test",
        "mean": {k: float(v) for k, v in (avg[0] if avg else {}).items() if k != "caseID"},
        "cases": {r["caseID"]: {k: float(v) for k, v in r.items() if k != "caseID"}
                  for r in rows if r["caseID"] != "average"},
        "targets_dice": dict(PHANTOM_DICE_TARGETS),
    }
    dest = WEIGHTS_DIR / "weights.json"
    if args.validation:
        cands = {}
        if args.keep_candidates and dest.is_file():
            cands.update(json.loads(dest.read_text()).get("validation_phantoms", {}).get("candidates_mean", {}))
        for item in args.validation:
            name, _, path = item.partition("=")
            mean = [r for r in _rows(Path(path)) if r["caseID"] == "average"]
            cands[name] = {k: float(v) for k, v in (mean[0] if mean else {}).items() if k != "caseID"}
        out["validation_phantoms"] = {
            "data": args.validation_data,
            "candidates_mean": cands, "chosen": args.chosen}
    if args.real_ct_log and args.real_ct_log.is_file():
        out["real_ct_totalseg_example"] = args.real_ct_log.read_text().strip().splitlines()
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")
    return 0


def _rows(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    raise SystemExit(main())
