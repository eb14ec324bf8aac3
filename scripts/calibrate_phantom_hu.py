"""Measure tissue HU on the real CT and on a non-contrast phantom at the same 3 mm spacing.

    python scripts/calibrate_phantom_hu.py [--data data/totalseg_example] [--seed 0] [--texture] [--fat]
                                           [--fat-texture]

Prints, per structure, n / mean / sd / p5 / p95 of the real CT (TotalSegmentator labels, each mask
eroded once) next to the same numbers for the phantom. This is how the non-contrast column of
``kidney.phantom.TISSUES`` was chosen; docs/phantom.md holds the output.

``--texture`` also prints how far each soft organ's texture stays alike: the in-plane
autocorrelation of its HU at 3, 6, 12 and 24 mm (``kidney.phantom.texture_correlation``, masks
eroded twice) on the real CT and, averaged over seeds 0–4, on non-contrast phantoms of each
appearance at the same 3 mm spacing. This is what the ``varied-texture`` appearance's coarse
field was sized on.

``--fat`` also prints how much of the fat near the kidneys is not plain fat
(``kidney.phantom.fat_detail``: the share of voxels from −30 HU up among those whose 5 × 5
surroundings are fat, within 40 mm of a kidney) on the real CT and, averaged over seeds 0–4, on
non-contrast phantoms of the ``varied-texture`` and ``varied-fascia`` appearances drawn at 1 mm in
plane and 3 mm slices and averaged to the real CT's 3 mm in plane (thin structures then fill part
of a voxel, as they do in a 3 mm scan). This is what the ``varied-fascia`` appearance was drawn for.

``--fat-texture`` also prints the in-plane autocorrelation of the fat's HU (the unlabelled body
voxels in [−200, −30] HU on the real CT, the fat tissues on phantoms; eroded twice) at 1–4 voxels
of the 3 mm grid, on the real CT and, averaged over seeds 0–4, on non-contrast phantoms of the
``varied-texture``, ``varied-fascia`` and ``varied-fat`` appearances at the same spacing (the last
was drawn to match the real fat at 6–12 mm). It asks what kind of
reconstruction kernel the real CT was made with: an edge-enhancing (sharp) kernel leaves the noise
anticorrelated one or two voxels apart (its noise power peaks at high frequencies), a smooth one
correlated.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kidney import io, phantom

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "totalseg_example"


def _real_ct(data: Path):
    """The real CT and its TotalSegmentator labels (:class:`kidney.io.Volume` each)."""
    return io.load_nifti(data / "example_ct_sm.nii.gz"), io.load_nifti(data / "example_seg.nii.gz", label=True)


def _phantoms_like(ct, appearance: str, seeds):
    """Non-contrast phantoms of ``appearance``, one per seed, 70 × 128 × 128 on the real CT's grid."""
    for seed in seeds:
        yield phantom.make_phantom(seed, shape=(70, 128, 128), spacing=ct.spacing, phase="noncontrast",
                                   appearance=appearance)


def measure(data: Path, seed: int):
    ct, seg = _real_ct(data)
    real = phantom.tissue_statistics(ct.array, phantom.real_ct_masks(ct.array, seg.array))
    ph, = _phantoms_like(ct, "classic", [seed])
    synth = phantom.tissue_statistics(ph.image, phantom.phantom_masks(ph))
    return real, synth


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texture", action="store_true", help="also print the texture-correlation table")
    ap.add_argument("--fat", action="store_true", help="also print the table of soft tissue in the fat")
    ap.add_argument("--fat-texture", action="store_true",
                    help="also print the fat's in-plane autocorrelation (the reconstruction kernel)")
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
    if args.fat:
        print()
        print(fat_table(args.data))
    if args.fat_texture:
        print()
        print(fat_texture_table(args.data))


TEXTURE_ORGANS = ("liver", "spleen", "kidney", "muscle")
LAGS = (1, 2, 4, 8)  # voxels of the 3 mm grid: 3, 6, 12, 24 mm


def texture_table(data: Path, seeds=range(5)) -> str:
    """Markdown table: in-plane HU autocorrelation at :data:`LAGS` per organ, real CT vs phantoms."""
    ct, seg = _real_ct(data)
    rows = {"real CT": [phantom.texture_correlation(ct.array, m)
                        for m in _pick(phantom.real_ct_masks(ct.array, seg.array))]}
    for appearance in phantom.APPEARANCES:
        per_seed = [[phantom.texture_correlation(ph.image, m) for m in _pick(phantom.phantom_masks(ph))]
                    for ph in _phantoms_like(ct, appearance, seeds)]
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


def fat_table(data: Path, seeds=range(5)) -> str:
    """Markdown table: :func:`kidney.phantom.fat_detail` on the real CT and on phantoms (module
    docstring), mean over ``seeds``."""
    ct, seg = _real_ct(data)
    rows = {"real CT": phantom.fat_detail(ct.array, np.isin(seg.array, (2, 3)), ct.spacing)}
    for appearance in ("varied-texture", "varied-fascia"):
        per_seed = []
        for seed in seeds:
            ph = phantom.make_phantom(seed, shape=(70, 384, 384), spacing=(ct.spacing[0], 1.0, 1.0),
                                      phase="noncontrast", appearance=appearance)
            hu, kidney = _in_plane_mean(ph.image, 3), _in_plane_mean(ph.labels > 0, 3) >= 0.5
            per_seed.append(phantom.fat_detail(hu, kidney, (ct.spacing[0], 3.0, 3.0)))
        rows[f"{appearance} (mean of {len(per_seed)})"] = {k: float(np.mean([s[k] for s in per_seed]))
                                                           for k in per_seed[0]}
    keys = [k for k in rows["real CT"] if k != "n"]
    lines = ["| source | fat voxels | " + " | ".join(f"HU in {k}" for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']:.0f} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


FAT_LAGS = (1, 2, 3, 4)  # voxels of the 3 mm grid


def fat_texture_table(data: Path, seeds=range(5)) -> str:
    """Markdown table: the fat's in-plane HU autocorrelation at :data:`FAT_LAGS`, real CT vs
    phantoms (module docstring), mean over ``seeds``."""
    ct, seg = _real_ct(data)
    rows = {"real CT": phantom.texture_correlation(ct.array, phantom.real_ct_masks(ct.array, seg.array)["fat"],
                                                   lags=FAT_LAGS)}
    for appearance in ("varied-texture", "varied-fascia", "varied-fat"):
        per_seed = [phantom.texture_correlation(ph.image, phantom.phantom_masks(ph)["fat"], lags=FAT_LAGS)
                    for ph in _phantoms_like(ct, appearance, seeds)]
        rows[f"{appearance} (mean of {len(per_seed)})"] = {lag: float(np.mean([s[lag] for s in per_seed]))
                                                           for lag in FAT_LAGS}
    lines = ["| source | " + " | ".join(f"fat, r at {lag * ct.spacing[1]:g} mm" for lag in FAT_LAGS) + " |",
             "|---|" + "---|" * len(FAT_LAGS)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[lag]:.2f}" for lag in FAT_LAGS) + " |")
    return "\n".join(lines)


def _in_plane_mean(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` averaged over ``k`` × ``k`` in-plane blocks (float32; the edge remainder dropped)."""
    z, y, x = a.shape
    a = np.asarray(a, np.float32)[:, :y // k * k, :x // k * k]
    return a.reshape(z, y // k, k, x // k, k).mean(axis=(2, 4))


def _pick(masks):
    return [masks[name] for name in TEXTURE_ORGANS]


if __name__ == "__main__":
    main()
