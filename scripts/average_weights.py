"""Average the weights of several snapshots of one training run (stochastic weight averaging), or
of several runs continued from one start (a weight soup).

    python scripts/average_weights.py RUN/snapshots/w*.npz --out averaged.npz

With one crop per step the weights of a run wander around the minimum it has found; the mean of
snapshots taken along the end of the run lies nearer its centre (Izmailov et al. 2018, "Averaging
Weights Leads to Wider Optima and Better Generalization"). Runs fine-tuned from the same weights at
a low rate tend to stay in one basin, and their mean can score above each of them (Wortsman et al.
2022, "Model soups"); runs from different random starts do not share a basin, and the mean of their
weights is not expected to work. The network has no batch statistics (LayerNorm, GRN), so the mean
needs no recalibration pass. Every file must hold the same model config and the same arrays; the
mean is taken in float64 in the order the files are given and stored in the arrays' own dtype, so
the same files in the same order give the same bits. The output keeps the first file's metadata and
records which files were averaged (name and sha256).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kidney.model import WeightsError, load_weights, read_weights, save_weights, weights_record


def average(paths):
    """``(model, meta)``: a model holding the mean of the weight files ``paths`` (same config and
    arrays in each, else :class:`WeightsError` naming the file), meta from the first file."""
    if not paths:
        raise WeightsError("no weight files to average")
    model, meta = load_weights(paths[0])  # the first file's config builds the model
    first_state = model.state_dict()
    total = {k: v.astype(np.float64) for k, v in first_state.items()}
    for p in paths[1:]:
        state, m = read_weights(p)
        if m.get("config") != meta.get("config"):
            raise WeightsError(f"{p}: model config {m.get('config')} differs from {paths[0]}'s {meta.get('config')}")
        if state.keys() != total.keys():
            raise WeightsError(f"{p}: arrays {sorted(state.keys() ^ total.keys())} are not in both {p} and {paths[0]}")
        for k, v in state.items():
            if v.shape != total[k].shape:
                raise WeightsError(f"{p}: {k} has shape {v.shape}, {paths[0]} {total[k].shape}")
            total[k] += v
    mean = {k: (v / len(paths)).astype(first_state[k].dtype) for k, v in total.items()}
    model.load_state_dict(mean)
    return model, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+", type=Path, help="weight files (.npz) of one model config")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        ap.error(f"{args.out} exists; pass --overwrite to replace it")
    if args.out.resolve() in {p.resolve() for p in args.weights}:
        ap.error(f"{args.out} is one of the inputs")
    try:
        model, meta = average(args.weights)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {**meta, "averaged_from": [weights_record(p) for p in args.weights]}
    save_weights(model, args.out, {k: v for k, v in meta.items() if k != "config"})
    print(f"averaged {len(args.weights)} weight files -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
