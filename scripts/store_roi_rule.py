"""Store a ROI rule chosen for a stage-1 network with its weights.

    python scripts/store_roi_rule.py STAGE1.npz [--threshold T] [--dilation D]

The ROI rule (:mod:`kidney.roi`) turns stage 1's probabilities into the crops stage 2 sees: the
voxels at ``threshold`` (0.1) or more, in components of enough voxels, each dilated by a ball of
``dilation`` voxels across at the paper's 1.99 mm grid (11; scaled to the stage-1 grid, a ball about
2 cm across at any spacing). A stage 1 that calls less kidney beside the kidneys also calls less of
the lesions' rims, so the threshold and the dilation that suit it are chosen with it, on validation
data (``scripts/train_weights.sh`` says how), and stored here in the file's metadata
(``roi_threshold``, ``roi_dilation``), where :class:`kidney.pipeline.Segmenter` reads them. The
arrays are not touched (checked). ``--threshold 0.1 --dilation 11`` stores the paper's rule as it is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from kidney.model import WeightsError, write_metadata
from kidney.roi import RoiConfig, roi_overrides


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path, metavar="STAGE1.npz")
    ap.add_argument("--threshold", type=float, default=None, help="stage-1 probability a ROI grows from (paper 0.1)")
    ap.add_argument("--dilation", type=int, default=None,
                    help="ball diameter in voxels at 1.99 mm each component is dilated by (paper 11)")
    args = ap.parse_args(argv)
    entries = roi_overrides(args.threshold, args.dilation)
    if not entries:
        ap.error("give --threshold and/or --dilation")
    try:
        RoiConfig().stored_with(entries, "on the command line")  # the same checks the segmenter makes
        write_metadata(args.weights, entries, stage=1)
    except (ValueError, WeightsError) as exc:
        ap.error(str(exc))
    print(f"wrote {', '.join(f'{k} = {v}' for k, v in entries.items())} into {args.weights} (arrays unchanged); "
          f"the rule now: {RoiConfig().stored_with(entries)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
