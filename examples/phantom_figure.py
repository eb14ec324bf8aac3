"""Figure of CT phantoms: axial, coronal and sagittal slices with the KiTS23 labels overlaid.

    python examples/phantom_figure.py --out docs/phantom.png [--seed 0] [--preset demo]
        [--labels data/kits23_sample/case_00479/segmentation.nii.gz]

Row 1: a synthetic phantom (:func:`kidney.phantom.make_phantom`); row 2 (when ``--labels`` points
to a real KiTS23 label map, default: the repository's ``data/kits23_sample/case_00479``; ``''`` skips
it): a CT synthesised around it
(:func:`kidney.phantom.from_labels`). Slices pass through the centre of the largest tumour.
Display: window [-160, 240] HU, radiological convention (patient's right on the image left).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from scipy import ndimage  # noqa: E402

from kidney import io, phantom  # noqa: E402

DEFAULT_LABELS = (Path(__file__).resolve().parents[1] / "data" / "kits23_sample" / "case_00479"
                  / "segmentation.nii.gz")
COLOURS = ListedColormap([(0, 0, 0, 0), (0.1, 0.85, 0.35, 0.45), (1.0, 0.2, 0.25, 0.6),
                          (0.25, 0.55, 1.0, 0.6)])


def _centre(labels: np.ndarray) -> tuple:
    """Voxel index of the largest tumour's centre (else the foreground's, else the middle)."""
    for mask in (labels == 2, labels > 0):
        comp, n = ndimage.label(mask)
        if n:
            largest = 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
            return tuple(int(round(c)) for c in np.argwhere(comp == largest).mean(axis=0))
    return tuple(n // 2 for n in labels.shape)


def _views(ph):
    """(title, image, labels, aspect) of axial, coronal and sagittal slices, cropped to the body."""
    body = np.argwhere(ph.image > -500)
    lo, hi = body.min(axis=0), body.max(axis=0) + 1
    img = ph.image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    lab = ph.labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    z, y, x = (int(c - l) for c, l in zip(_centre(ph.labels), lo))
    sz, sy, sx = ph.spacing
    return [("axial", img[z], lab[z], sy / sx),
            ("coronal", img[:, y], lab[:, y], sz / sx),
            ("sagittal", img[:, :, x], lab[:, :, x], sz / sy)]


def _row(axes, ph, name: str) -> None:
    for ax, (view, img, lab, aspect) in zip(axes, _views(ph)):
        ax.imshow(img, cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="nearest")
        ax.imshow(lab, cmap=COLOURS, vmin=0, vmax=3, aspect=aspect, interpolation="nearest")
        ax.set_title(f"{name}: {view}", fontsize=9)
        ax.axis("off")


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/phantom.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="demo", choices=sorted(phantom.GRID_PRESETS))
    ap.add_argument("--phase", default="corticomedullary")
    ap.add_argument("--labels", default=str(DEFAULT_LABELS),
                    help="real KiTS23 segmentation.nii.gz for the second row ('' to skip)")
    args = ap.parse_args(argv)
    if args.labels and not Path(args.labels).is_file():
        ap.error(f"--labels {args.labels}: no such file (pass '' to draw the synthetic phantom only)")
    rows = [(phantom.make_phantom(args.seed, preset=args.preset, phase=args.phase),
             f"synthetic (seed {args.seed})")]
    if args.labels:
        seg = io.load_nifti(args.labels, label=True)
        rows.append((phantom.from_labels(seg.array, seg.spacing, args.seed, phase=args.phase),
                     f"around {Path(args.labels).parent.name}"))
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.4 * len(rows)), squeeze=False)
    for ax_row, (ph, name) in zip(axes, rows):
        _row(ax_row, ph, f"{name}, {ph.phase}")
    fig.suptitle("kidney phantoms — green kidney, red tumour, blue cyst; window [-160, 240] HU",
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
