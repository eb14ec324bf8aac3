"""Write kidney/weights/weights.json: how the shipped weights were made and what they scored.

    python scripts/write_weights_json.py WORK_DIR [--real-ct-log FILE] [--validation NAME=CSV ...]
           [--real-test PRED_DIR DATA_DIR]

Reads each shipped file's __meta__ (training config, steps, time), WORK_DIR/pred/evaluation.csv
(``kidney evaluate`` on the unseen test phantoms), if given, the output of
``scripts/eval_real_ct.py``, and the validation scores of the candidate weight pairs the shipped
pair was chosen from (``--validation NAME=evaluation.csv``, ``--chosen NAME``), and with
``--real-test`` the scores on CT around the held-out KiTS23 test label maps (``PRED_DIR/evaluation.csv``,
per contrast phase from ``DATA_DIR/phantoms.csv``).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

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
    ap.add_argument("--real-test", nargs=2, type=Path, default=None, metavar=("PRED_DIR", "DATA_DIR"),
                    help="kidney evaluate output on CT around the KiTS23 test label maps, and its data")
    ap.add_argument("--training-data", default=None, help="what the weights were trained on (one line)")
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
        "targets_dice": {"kidney": 0.93, "masses": 0.85, "tumor": 0.80},
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
    if args.real_test:
        out["real_geometry_test"] = _real_test(*args.real_test)
    if args.training_data:
        out["training_data"] = args.training_data
        out["licence"] = ("Trained on CT synthesised around KiTS23 label maps (CC BY-NC-SA 4.0, Heller et al.); "
                          "these weights carry the same terms: attribution, non-commercial, share-alike.")
    if args.real_ct_log and args.real_ct_log.is_file():
        out["real_ct_totalseg_example"] = args.real_ct_log.read_text().strip().splitlines()
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")
    return 0


def _real_test(pred_dir: Path, data_dir: Path) -> dict:
    from kidney.phantom.dataset import read_manifest

    rows = [r for r in _rows(pred_dir / "evaluation.csv")]
    made = read_manifest(data_dir)
    cases = {r["caseID"]: {k: float(v) for k, v in r.items() if k != "caseID"} for r in rows
             if r["caseID"] != "average"}
    by_phase = {}
    for case, scores in cases.items():
        by_phase.setdefault(made.get(case, {}).get("phase", "unknown"), []).append(scores)
    avg = [r for r in rows if r["caseID"] == "average"]
    return {
        "data": "CT around the 30 KiTS23 test label maps of kidney/data/kits23_split.json: kidney phantom "
                "--from-labels KITS_LABELS --split test --appearance varied --phase cycle --seed 9000",
        "mean": {k: float(v) for k, v in (avg[0] if avg else {}).items() if k != "caseID"},
        "by_phase": {ph: {k: sum(c[k] for c in cs) / len(cs) for k in cs[0]} | {"n": len(cs)}
                     for ph, cs in by_phase.items()},
        "cases": {c: dict(s, phase=made.get(c, {}).get("phase")) for c, s in cases.items()},
        "targets_dice": {"kidney": 0.93, "masses": 0.80, "tumor": 0.75},
    }


def _rows(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    raise SystemExit(main())
