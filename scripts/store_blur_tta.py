"""Store a test-time blur chosen for a stage-2 network with its weights.

    python scripts/store_blur_tta.py STAGE2.npz SIGMAS

``SIGMAS`` is a comma-separated list of σ in voxels of the stage-2 grid, e.g. ``0,1``: stage 2 then
reads each crop as it is (0) and blurred by an isotropic Gaussian of each other σ, and its sigmoids
are averaged over the passes (:mod:`kidney.pipeline`, test-time blur). The setting is chosen on
validation data (``scripts/train_weights.sh`` says how) and stored in the file's metadata
(``blur_tta``), where :class:`kidney.pipeline.Segmenter` reads it; ``kidney segment --blur-tta``
overrides it. The arrays are not touched (checked). ``0`` stores the network read as it is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from kidney.model import WeightsError, write_metadata
from kidney.pipeline import BLUR_KEY, check_blur_tta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path, metavar="STAGE2.npz")
    ap.add_argument("sigmas", metavar="SIGMAS", help="comma-separated σ, voxels of the stage-2 grid (0: as is)")
    args = ap.parse_args(argv)
    try:
        sigmas = check_blur_tta(args.sigmas.split(","), "SIGMAS")  # the same checks the segmenter makes
        write_metadata(args.weights, {BLUR_KEY: list(sigmas)}, stage=2)
    except (ValueError, WeightsError) as exc:
        ap.error(str(exc))
    print(f"wrote {BLUR_KEY} = {list(sigmas)} into {args.weights} (arrays unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
