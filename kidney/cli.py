"""The ``kidney`` command.

    kidney phantom --out DIR [-n N] [--seed S] [--preset demo|full|tiny] [--phase P]
                   [--from-labels DATA_DIR] [--overwrite]
    kidney evaluate PRED_DIR DATA_DIR [--out CSV] [--workers N] [--overwrite]

Each subcommand is a pair of functions, ``add_<name>(subparsers)`` (declares its arguments and sets
``func``) and ``run_<name>(args) -> int`` (exit status); :data:`SUBCOMMANDS` lists the ``add_``
functions. Exit status: 0 success, 1 finished but some case failed (evaluate), 2 usage or input
error (the message names the file or value).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


# --- phantom ------------------------------------------------------------------------------------

def add_phantom(sub) -> None:
    p = sub.add_parser("phantom", help="write synthetic CT phantoms in the KiTS23 folder layout",
                       description="Write OUT/case_XXXXX/{imaging,segmentation}.nii.gz: seeded "
                                   "synthetic abdominal CTs (HU, int16) with kidney, tumour and "
                                   "cyst labels, or CTs synthesised around real label maps.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("-n", type=int, default=None,
                   help="number of cases (default 1; with --from-labels: all cases)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--preset", default="demo", choices=("demo", "full", "tiny"),
                   help="grid: demo 256x256 ~1.6 mm (default), full 512x512 KiTS-like, tiny 96x96")
    p.add_argument("--phase", default="random",
                   choices=("random", "noncontrast", "corticomedullary", "nephrographic"))
    p.add_argument("--from-labels", type=Path, default=None, metavar="DATA_DIR",
                   help="synthesise CT around DATA_DIR/case_*/segmentation.nii.gz instead")
    p.add_argument("--start", type=int, default=0, help="first case number (synthetic only)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=run_phantom)


def run_phantom(args) -> int:
    from . import phantom

    if args.from_labels is not None:
        return _phantom_from_labels(args)
    n = 1 if args.n is None else args.n
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    t0 = time.perf_counter()

    def report(i, path):
        print(f"wrote {path}", flush=True)

    phantom.write_dataset(args.out, n, args.seed, overwrite=args.overwrite, start=args.start,
                          progress=report, preset=args.preset, phase=args.phase)
    print(f"{n} phantom case(s) in {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _phantom_from_labels(args) -> int:
    from . import io, phantom

    src = Path(args.from_labels)
    if not src.is_dir():
        raise FileNotFoundError(f"no such data folder: {src}")
    cases = sorted(d for d in src.iterdir() if (d / io.LABEL_NAME).is_file())
    if not cases:
        raise FileNotFoundError(f"{src} holds no case_*/segmentation.nii.gz")
    for i, case in enumerate(cases[:args.n]):
        seg = io.load_case(case, image=False, label=True).label
        ph = phantom.from_labels(seg.array, seg.spacing, args.seed + i, phase=args.phase)
        out = Path(args.out) / case.name
        for name in (io.IMAGE_NAME, io.LABEL_NAME):
            if (out / name).exists() and not args.overwrite:
                raise FileExistsError(f"{out / name} exists; pass --overwrite to replace it")
        io.save_nifti(ph.image, seg, out / io.IMAGE_NAME, overwrite=args.overwrite,
                      dtype="int16")
        io.save_nifti(ph.labels, seg, out / io.LABEL_NAME, overwrite=args.overwrite)
        print(f"wrote {out} ({ph.phase}, on the grid of {case / io.LABEL_NAME})", flush=True)
    return 0


# --- evaluate -----------------------------------------------------------------------------------

def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="KiTS23 Dice and Surface Dice of a prediction folder",
                       description="Score PRED_DIR/case_XXXXX.nii.gz (or PRED_DIR/case_XXXXX/"
                                   "segmentation.nii.gz) against DATA_DIR/case_XXXXX/"
                                   "segmentation.nii.gz and write evaluation.csv (official "
                                   "columns, one row per reference case, then 'average'). A "
                                   "missing or mis-shaped prediction scores 0 and is reported.")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV path (default PRED_DIR/evaluation.csv)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from . import metrics

    out = args.out or Path(args.pred_dir) / "evaluation.csv"
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    evaluation = metrics.evaluate_folder(args.pred_dir, args.data_dir, workers=args.workers)
    metrics.write_csv(evaluation, out, overwrite=True)
    for case in evaluation.cases:
        if case.problem:
            print(f"PROBLEM {case.case_id}: {case.problem} (scored 0)", file=sys.stderr)
        elif case.warning:
            print(f"warning {case.case_id}: {case.warning}", file=sys.stderr)
    for name in evaluation.extra_predictions:
        print(f"warning: prediction {name} has no reference case in {args.data_dir}",
              file=sys.stderr)
    metrics.print_summary(evaluation)
    print(f"wrote {out}")
    return 1 if evaluation.problems else 0


# --- entry point --------------------------------------------------------------------------------

SUBCOMMANDS = [add_phantom, add_evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kidney", description="Two-stage sparse KiTS23 "
                                     "kidney/tumour segmentation: data, phantoms and scoring.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``kidney`` command; returns the exit status (also used by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"kidney {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
