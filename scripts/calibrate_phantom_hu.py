"""Measure tissue HU on the real CT and on a non-contrast phantom at the same 3 mm spacing.

    python scripts/calibrate_phantom_hu.py [--data data/totalseg_example] [--seed 0] [--texture]

Prints, per structure, n / mean / sd / p5 / p95 of the real CT (TotalSegmentator labels, each mask
eroded once) next to the same numbers for the phantom. This is how the non-contrast column of
``kidney.phantom.TISSUES`` was chosen; docs/phantom.md holds the output.

``--texture`` also prints how far each soft organ's texture stays alike: the in-plane
autocorrelation of its HU at 3, 6, 12 and 24 mm (``kidney.phantom.texture_correlation``, masks
eroded twice) on the real CT and, averaged over seeds 0–4, on non-contrast phantoms of each
appearance at the same 3 mm spacing. This is what the ``varied-texture`` appearance's coarse
field was sized on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kidney import io, phantom

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "totalseg_example"


def measure(data: Path, seed: int):
    ct = io.load_nifti(data / "example_ct_sm.nii.gz")
    seg = io.load_nifti(data / "example_seg.nii.gz", label=True)
    real = phantom.tissue_statistics(ct.array, phantom.real_ct_masks(ct.array, seg.array))
    ph = phantom.make_phantom(seed, shape=(70, 128, 128), spacing=ct.spacing, phase="noncontrast")
    synth = phantom.tissue_statistics(ph.image, phantom.phantom_masks(ph))
    return real, synth


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texture", action="store_true", help="also print the texture-correlation table")
    args = ap.parse_args(argv)
    real, synth = measure(args.data, args.seed)
    print("| structure | real n | real mean ± sd | real p5 – p95 | phantom mean ± sd | in range |")
    print("|---|---|---|---|---|---|")
    for name, r in real.items():
        s = synth.get(name)
        ok = s is not None and r["p5"] <= s["mean"] <= r["p95"]
        sm = f"{s['mean']:.0f} ± {s['sd']:.0f}" if s else "—"
        print(f"| {name} | {r['n']} | {r['mean']:.0f} ± {r['sd']:.0f} | {r['p5']:.0f} – "
              f"{r['p95']:.0f} | {sm} | {'yes' if ok else 'NO'} |")
    if args.texture:
        print()
        print(texture_table(args.data))


TEXTURE_ORGANS = ("liver", "spleen", "kidney", "muscle")
LAGS = (1, 2, 4, 8)  # voxels of the 3 mm grid: 3, 6, 12, 24 mm


def texture_table(data: Path, seeds=range(5)) -> str:
    """Markdown table: in-plane HU autocorrelation at :data:`LAGS` per organ, real CT vs phantoms."""
    ct = io.load_nifti(data / "example_ct_sm.nii.gz")
    seg = io.load_nifti(data / "example_seg.nii.gz", label=True)
    rows = {"real CT": [phantom.texture_correlation(ct.array, m)
                        for m in _pick(phantom.real_ct_masks(ct.array, seg.array))]}
    for appearance in phantom.APPEARANCES:
        per_seed = []
        for seed in seeds:
            ph = phantom.make_phantom(seed, shape=(70, 128, 128), spacing=ct.spacing, phase="noncontrast",
                                      appearance=appearance)
            per_seed.append([phantom.texture_correlation(ph.image, m) for m in _pick(phantom.phantom_masks(ph))])
        rows[f"{appearance} (mean of {len(per_seed)})"] = [
            {lag: float(np.nanmean([s[i][lag] for s in per_seed])) for lag in LAGS}
            for i in range(len(TEXTURE_ORGANS))]
    mm = [f"{lag * ct.spacing[1]:g} mm" for lag in LAGS]
    lines = ["| source | " + " | ".join(TEXTURE_ORGANS) + " |", "|---|" + "---|" * len(TEXTURE_ORGANS),
             f"| (correlation at {' / '.join(mm)}) |" + " |" * len(TEXTURE_ORGANS)]
    for name, organs in rows.items():
        cells = [" / ".join(f"{o[lag]:.2f}" for lag in LAGS) for o in organs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pick(masks):
    return [masks[name] for name in TEXTURE_ORGANS]


if __name__ == "__main__":
    main()
