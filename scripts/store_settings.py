"""Store settings chosen for a network with its weights: stage 2's test-time blur, stage 1's
anti-aliasing and how a stage-1 ensemble combines its readings.

    python scripts/store_settings.py WEIGHTS.npz [--blur-tta S,S,...] [--antialias true|false]
        [--combine-readings mean|min]

- ``--blur-tta`` (stage 2): σ in voxels of the stage-2 grid, e.g. ``0,1``: stage 2 then reads each
  crop as it is (0) and blurred by an isotropic Gaussian of each other σ, and its sigmoids are
  averaged over the passes (:mod:`kidney.pipeline`, test-time blur); ``kidney segment --blur-tta``
  overrides it. ``0`` stores the network read as it is.
- ``--antialias`` (stage 1): the scan is smoothed before it is shrunk to the stage-1 grid
  (:func:`kidney.io.resample`); ``kidney train --antialias`` stores it with the weights it trains.
- ``--combine-readings`` (stage 1): a stage-1 ensemble may hold members that read the scan as it is
  and members that read it anti-aliased (the same networks, say, stored once each way); each reading
  is averaged over its members, and the two readings are then averaged (``mean``) or their minimum
  taken (``min``: a voxel called only as far as both readings call it). Every member stores it.

Settings are chosen on validation data (``scripts/train_weights.sh`` says how) and stored in the
file's metadata (``blur_tta``, ``antialias``, ``combine_readings``), where
:class:`kidney.pipeline.Segmenter` reads them. The arrays are not touched (checked). The ROI rule
has its own script, ``store_roi_rule.py``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from kidney.model import WeightsError, read_weights, write_metadata
from kidney.pipeline import ANTIALIAS_KEY, BLUR_KEY, COMBINE_KEY, COMBINE_READINGS, check_antialias, \
    check_blur_tta, check_combine_readings

_BOOL = {"true": True, "false": False}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path, metavar="WEIGHTS.npz")
    ap.add_argument("--blur-tta", metavar="S,S,...", help="stage 2: comma-separated σ, stage-2 voxels (0: as is)")
    ap.add_argument("--antialias", choices=sorted(_BOOL), help="stage 1: smooth the scan before shrinking it")
    ap.add_argument("--combine-readings", choices=COMBINE_READINGS,
                    help="stage 1: how an ensemble that reads the scan as it is and anti-aliased combines the two")
    args = ap.parse_args(argv)
    entries, stage = {}, None
    try:
        if args.blur_tta is not None:  # the same checks the segmenter makes
            entries[BLUR_KEY], stage = list(check_blur_tta(args.blur_tta.split(","), "--blur-tta")), 2
        if args.antialias is not None:
            if stage == 2:
                ap.error("--blur-tta goes with stage-2 weights, --antialias with stage-1 weights: one at a time")
            entries[ANTIALIAS_KEY], stage = _BOOL[args.antialias], 1
            check_antialias(entries, stage)
        if args.combine_readings is not None:
            if stage == 2:
                ap.error("--blur-tta goes with stage-2 weights, --combine-readings with stage-1 weights: one at a time")
            entries[COMBINE_KEY], stage = args.combine_readings, 1
            check_combine_readings(entries, stage)
        if not entries:
            ap.error("give --blur-tta, --antialias or --combine-readings")
        read_weights(args.weights)  # a missing or unreadable file is named before anything else
        write_metadata(args.weights, entries, stage=stage)
    except (ValueError, WeightsError) as exc:
        ap.error(str(exc))
    print(f"wrote {', '.join(f'{k} = {v}' for k, v in entries.items())} into {args.weights} (arrays unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
