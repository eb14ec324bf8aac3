"""Measure tissue HU on the real CT and on a non-contrast phantom at the same 3 mm spacing.

    python scripts/calibrate_phantom_hu.py [--data data/totalseg_example] [--seed 0]

Prints, per structure, n / mean / sd / p5 / p95 of the real CT (TotalSegmentator labels, each mask
eroded once) next to the same numbers for the phantom. This is how the non-contrast column of
``kidney.phantom.TISSUES`` was chosen; docs/phantom.md holds the output.
"""
from __future__ import annotations

import argparse
from pathlib import Path

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


if __name__ == "__main__":
    main()
