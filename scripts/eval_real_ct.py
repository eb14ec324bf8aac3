"""The segmenter on the one real CT in the repository: kidney+masses Dice, both kidneys, no stray ROI.

The example (data/totalseg_example) is a 3 mm non-contrast abdominal CT with TotalSegmentator kidney
labels (2 right, 3 left); it has no tumour labels, so only the kidney+masses HEC is scored. It is a
test case only: nothing was trained on it or chosen with it.

    python scripts/eval_real_ct.py [--weights DIR] [--out PRED.nii.gz] [--png OVERLAY.png]
                                   [--min-dice 0.85]

Prints the ROIs stage 1 proposes (how much of each kidney their boxes hold, how many hold no
kidney), the Dice and Surface Dice of kidney+masses, each kidney's share found (and the share found
in the slices at the scan's two ends, where a kidney cut by the field of view ends), and where the
false positives lie by the reference's other organ labels (liver, spleen, ...; names from the label
table in the file's header) with the class they were given and their median HU; the prediction's
connected parts by the organs they lie on; and what stage 1 takes for kidney, organ by organ. With ``--min-dice`` the exit status is 1 unless the Dice
reaches it, both kidneys are found (half or more of each) and no ROI lies away from the kidneys.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kidney import io, metrics
from kidney.components import label_parts
from kidney.overlay import render_overlay, write_png
from kidney.phantom import real_ct_masks
from kidney.pipeline import Segmenter, default_weights
from kidney.roi import scan_box

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "totalseg_example"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the prediction here")
    ap.add_argument("--png", type=Path, default=None, help="write an overlay PNG (truth | prediction)")
    ap.add_argument("--probe", action="store_true",
                    help="also segment the CT changed one way at a time (organ HU shifted, noise added, "
                         "blurred) and print how the answer moves")
    ap.add_argument("--min-dice", type=float, default=None,
                    help="exit 1 unless Dice >= this, both kidneys are found and no ROI is elsewhere")
    args = ap.parse_args(argv)
    for name in ("example_ct_sm.nii.gz", "example_seg.nii.gz"):
        if not (args.data / name).is_file():
            ap.error(f"{args.data / name} is missing")
    ct = io.load_nifti(args.data / "example_ct_sm.nii.gz")
    ref = io.load_nifti(args.data / "example_seg.nii.gz", label=True)
    io.check_same_grid(ct, ref)
    seg = Segmenter(*default_weights(args.weights))
    t0 = time.perf_counter()
    res = seg.segment(ct, details=True)
    secs = time.perf_counter() - t0
    pred = res.labels > 0
    truth = np.isin(ref.array, (2, 3))
    d = metrics.dice(pred, truth)
    sd = metrics.surface_dice(ct.to_file(truth), ct.to_file(pred), io.spacing_of(ct.affine),
                              metrics.HEC_TOLERANCE_MM["kidney"])
    print(f"real CT {ct.shape} at {tuple(round(s, 2) for s in ct.spacing)} mm: {len(res.rois)} ROI(s), "
          f"{secs:.1f} s")
    print(f"kidney+masses Dice {d:.4f}  Surface Dice {sd:.4f}  (predicted {int(pred.sum())} voxels, "
          f"truth {int(truth.sum())})")
    found = kidney_shares(pred, ref.array)
    stray = [i for i, r in enumerate(res.rois) if not _holds_kidney(r, truth, ct.spacing)]
    inside = _in_rois(res.rois, ct.spacing, truth.shape)
    covered = kidney_shares(inside, ref.array)
    print("stage 1: ROI boxes hold " + ", ".join(f"{k} {v:.2f}" for k, v in covered.items())
          + f" of each kidney; ROIs away from the kidneys: {len(stray)}")
    print("kidneys found (share of each labelled): " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    print(edge_line(pred, truth))
    names = label_names(args.data / "example_seg.nii.gz")
    print(false_positive_table(pred & ~truth, res.labels, ref.array, ct.array, names))
    print(parts_table(res.labels, ref.array, names))
    print(stage1_table(seg, ct, res.rois, ref.array, names))
    if args.out:
        io.save_nifti(res.labels, ct, args.out, overwrite=True)
    if args.png:
        rgb = render_overlay(ct.array, np.where(truth, 1, 0).astype(np.uint8), res.labels, ct.spacing)
        write_png(args.png, rgb.repeat(3, axis=0).repeat(3, axis=1))  # 3 mm voxels: 3 pixels each
        print(f"wrote {args.png}")
    if args.probe:
        print(probe_table(seg, ct, ref.array, truth))
    if args.min_dice is not None:
        ok = d >= args.min_dice and min(found.values()) >= 0.5 and not stray
        print(f"{'PASS' if ok else 'FAIL'}: Dice {d:.4f} (needs >= {args.min_dice}); kidneys found "
              f"right {found['right']:.2f}, left {found['left']:.2f} (need >= 0.5 each); ROIs away from "
              f"the kidneys {len(stray)} (need 0)")
        return 0 if ok else 1
    return 0


def kidney_shares(mask, ref) -> dict:
    """``{"right": share, "left": share}``: the part of each labelled kidney (TotalSegmentator labels 2
    and 3) that ``mask`` covers."""
    return {side: float(np.count_nonzero(mask & (ref == v))) / max(1, np.count_nonzero(ref == v))
            for side, v in (("right", 2), ("left", 3))}


def edge_line(pred, truth, n_edge: int = 4) -> str:
    """The share of the labelled kidney voxels found in the ``n_edge`` slices at either end of the
    scan (axis 0), where a kidney cut by the field of view meets the volume's edge, and elsewhere."""
    edge = np.zeros(truth.shape[0], bool)
    edge[:n_edge] = edge[-n_edge:] = True
    parts = []
    for name, rows in ((f"in the {n_edge} slices at either end of the scan", edge), ("elsewhere", ~edge)):
        t = truth[rows]
        share = f"{np.count_nonzero(t & pred[rows]) / np.count_nonzero(t):.2f}" if t.any() else "n/a"
        parts.append(f"{name} {share} (of {int(np.count_nonzero(t))} voxels)")
    return "kidney voxels found " + "; ".join(parts)


def label_names(path) -> dict:
    """``{label value: name}`` from the label table TotalSegmentator writes into the NIfTI header
    (a CIFTI/Caret XML extension); empty when the file has none."""
    import xml.etree.ElementTree as ET

    import nibabel as nib
    names = {}
    for ext in nib.load(str(path)).header.extensions:
        content = ext.get_content()
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        if "<LabelTable>" not in text:
            continue
        for label in ET.fromstring(text[text.index("<"):]).iter("Label"):
            names[int(label.get("Key"))] = (label.text or "").strip()
    return names


def false_positive_table(false_pos, pred_labels, ref, hu, names, top=6) -> str:
    """Where the predicted kidney+masses voxels outside the labelled kidneys lie, by the reference's
    organ labels: voxels per organ, how many of them were called kidney / tumour / cyst, median HU.

    false_pos: ``(Z, Y, X) bool``; pred_labels: the prediction (0 background, 1 kidney, 2 tumour,
    3 cyst); ref: the reference's labels; hu: the CT.
    """
    values, counts = np.unique(ref[false_pos], return_counts=True)
    lines = [f"false positives: {int(false_pos.sum())} voxels; where they lie (reference labels):",
             "  organ                 voxels  kidney  tumour    cyst  median HU"]
    for v, n in sorted(zip(values, counts), key=lambda t: -t[1])[:top]:
        at = false_pos & (ref == v)
        calls = [int(np.count_nonzero(at & (pred_labels == k))) for k in (1, 2, 3)]
        name = names.get(int(v), "background" if v == 0 else f"label {int(v)}")
        lines.append(f"  {name:<20} {int(n):>7} {calls[0]:>7} {calls[1]:>7} {calls[2]:>7} "
                     f"{float(np.median(hu[at])):>10.0f}")
    if len(values) > top:
        lines.append(f"  ({len(values) - top} more labels, {int(np.sort(counts)[:-top].sum())} voxels)")
    return "\n".join(lines)


def _organ(v, names) -> str:
    return names.get(int(v), "background" if v == 0 else f"label {int(v)}")


def _by_organ(mask, ref, names, top) -> str:
    values, counts = np.unique(ref[mask], return_counts=True)
    order = sorted(zip(values, counts), key=lambda t: -t[1])
    text = ", ".join(f"{_organ(v, names)} {int(n)}" for v, n in order[:top])
    return text + (f", {len(order) - top} more labels {int(sum(n for _, n in order[top:]))}" if len(order) > top else "")


def parts_table(pred_labels, ref, names, top=4) -> str:
    """The prediction's 26-connected parts, largest first: voxels, and where they lie by the
    reference's labels (the kidneys' own and the organs beside them). Whether a false positive is
    an island apart from the kidneys or grows out of a kidney's part decides whether a post-processing
    by connectivity (:mod:`kidney.postprocess`) can remove it."""
    comp, n = label_parts(pred_labels > 0)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
    lines = [f"predicted parts (26-connected): {n}; largest first, voxels and where they lie:"]
    for k in np.argsort(-sizes, kind="stable")[:top] + 1:
        lines.append(f"  {int(sizes[k - 1]):>7}: " + _by_organ(comp == k, ref, names, top))
    if n > top:
        lines.append(f"  ({n - top} more parts, {int(np.sort(sizes)[:-top].sum())} voxels)")
    return "\n".join(lines)


def stage1_table(seg, ct, rois, ref, names) -> str:
    """What stage 1 takes for kidney, organ by organ: its probability (max over the three HECs) on
    its own grid, each stage-1 voxel given the reference label at its centre — voxels, how many reach
    the ROI threshold and 0.5, the median; then the scan voxels its ROI components (before their
    dilation, :func:`kidney.roi.cores_on_scan`) cover, by label."""
    from kidney.roi import at_stage1_centres, cores_on_scan
    prob, _ = seg.stage1_probabilities(ct.array, ct.spacing)
    t1 = seg.stage1.spacing
    at = at_stage1_centres(ref, ct.spacing, prob.shape, t1)
    th = seg.roi_config.threshold
    lines = [f"stage 1 ({t1:g} mm voxels) by the label at each voxel's centre:",
             f"  organ                 voxels  >= {th:g}  >= 0.5  median probability"]
    groups = [("kidneys", np.isin(at, (2, 3)))] + [(_organ(v, names), at == v) for v in (5, 1)]
    for name, m in groups:
        v = prob[m]
        if v.size:
            lines.append(f"  {name:<20} {v.size:>7} {int((v >= th).sum()):>6} {int((v >= 0.5).sum()):>6} "
                         f"{float(np.median(v)):>10.3f}")
    if rois:
        cores = cores_on_scan(rois, ct.spacing, (0, 0, 0), ref.shape)
        lines.append(f"its ROI components (before dilation) cover {int(cores.sum())} scan voxels: "
                     + _by_organ(cores, ref, names, 5))
    return "\n".join(lines)


def probes(hu, ref, truth):
    """``(name, HU volume)``: the CT changed one way at a time — the HU of liver and spleen (labels
    5 and 1) or of the kidneys shifted, seeded Gaussian noise added, a Gaussian blur (σ in voxels;
    σ 0.7 also on the liver and spleen only, on the kidneys only, on all but those three, on the
    body's voxels with no reference label, on those of them that are not fat, and with what it took away put back as
    seeded white noise of the same sd over the body), and each organ's coarse component
    (:func:`coarse_component`) removed or kept alone."""
    from scipy import ndimage
    organs = np.isin(ref, (1, 5))
    yield "as is", hu
    for d in (-10, 10, 20):
        yield f"liver+spleen {d:+d} HU", np.where(organs, hu + d, hu)
    for d in (10, 20):
        yield f"kidneys {d:+d} HU", np.where(truth, hu + d, hu)
    for sd in (10, 20):
        yield f"noise sd {sd} HU", hu + np.random.default_rng(sd).normal(0, sd, hu.shape).astype(np.float32)
    for sigma in (0.5, 0.7, 1.0):
        yield f"blur sigma {sigma} voxel", ndimage.gaussian_filter(hu, sigma)
    # whose fine detail the blur's gain comes from: the organs', the kidneys', or any of that size
    smooth = ndimage.gaussian_filter(hu, 0.7)
    yield "blur 0.7: liver+spleen only", np.where(organs, smooth, hu)
    yield "blur 0.7: kidneys only", np.where(truth, smooth, hu)
    yield "blur 0.7: all but those", np.where(organs | truth, hu, smooth)
    # the body's voxels no reference label claims (not the air around it; real_ct_masks' own air and
    # fat): the tissue between the organs — fat, and the rims, fascia and vessels in it
    masks = real_ct_masks(hu, ref)
    unlabelled = (ref == 0) & ~masks["air"]
    yield "blur 0.7: unlabelled", np.where(unlabelled, smooth, hu)
    yield "blur 0.7: unlabelled non-fat", np.where(unlabelled & ~masks["fat"], smooth, hu)
    body = ndimage.binary_erosion(hu > -500, iterations=2)
    fine_sd = float((hu - smooth)[body].std())  # what the blur takes away, as white noise of its sd
    yield "blur 0.7 + white noise", smooth + np.random.default_rng(7).normal(0, fine_sd, hu.shape).astype(np.float32)
    for name, value in (("liver", 5), ("spleen", 1)):
        organ = ref == value
        coarse = coarse_component(hu, organ)
        mean = float(hu[ndimage.binary_erosion(organ)].mean())
        yield f"{name}: coarse removed", np.where(organ, hu - coarse + mean, hu)
        yield f"{name}: coarse only", np.where(organ, coarse, hu)


def stage_probes(hu):
    """``(name, stage-1 HU, stage-2 HU)``: the blur of σ 0.7 voxel on what one stage reads only —
    which stage the whole-CT blur's gain comes through."""
    from scipy import ndimage
    smooth = ndimage.gaussian_filter(hu, 0.7)
    yield "blur 0.7: stage 1 only", smooth, hu
    yield "blur 0.7: stage 2 only", hu, smooth


def segment_per_stage(seg, ct, hu1, hu2) -> np.ndarray:
    """The pipeline with stage 1 reading ``hu1`` and stage 2 reading ``hu2`` (both on the CT's
    grid): the label map, as :meth:`Segmenter.segment` gives it for ``hu1 is hu2``."""
    prob1, _ = seg.stage1_probabilities(hu1, ct.spacing)
    rois = seg.find_rois(prob1, hu1.shape, ct.spacing)
    labels = np.zeros(hu1.shape, np.uint8)
    seg.labels_on_rois(hu2, ct.spacing, rois, labels)
    return labels


def coarse_component(hu, mask, sigma: float = 2.0):
    """The smooth part of the HU inside ``mask``: a Gaussian blur (σ in voxels, 6 mm on this CT)
    normalised by the blurred mask, so the organ's surroundings do not leak in."""
    from scipy import ndimage
    num = ndimage.gaussian_filter(np.where(mask, hu, 0).astype(np.float32), sigma)
    den = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    return np.where(mask, num / np.maximum(den, 1e-3), hu).astype(np.float32)


def probe_table(seg, ct, ref, truth) -> str:
    """Kidney+masses Dice, each kidney's share found, and the voxels called kidney / tumour on the
    liver and the spleen, for each of :func:`probes` and then of :func:`stage_probes`."""
    lines = ["how the answer moves with the CT (k/t: voxels called kidney / tumour on that organ)",
             "probe                       Dice   right  left  liver k/t    spleen k/t"]
    hu = ct.array.astype(np.float32)
    runs = [(name, lambda h=h: seg.segment(ct.like(h))) for name, h in probes(hu, ref, truth)]
    runs += [(name, lambda a=a, b=b: segment_per_stage(seg, ct, a, b)) for name, a, b in stage_probes(hu)]
    for name, run in runs:
        labels = run()  # (Z, Y, X) uint8 on the CT's grid
        shares = list(kidney_shares(labels > 0, ref).values())
        calls = [f"{np.count_nonzero((ref == v) & (labels == 1))}/{np.count_nonzero((ref == v) & (labels == 2))}"
                 for v in (5, 1)]
        lines.append(f"{name:<26}  {metrics.dice(labels > 0, truth):.3f}  {shares[0]:.2f}   {shares[1]:.2f}  "
                     f"{calls[0]:<11}  {calls[1]:<11}")
    return "\n".join(lines)


def _in_rois(rois, spacing, shape) -> np.ndarray:
    """Scan-grid mask of the union of the ROIs' crop boxes."""
    inside = np.zeros(shape, bool)
    for r in rois:
        lo, hi = scan_box([r], spacing, shape)
        inside[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return inside


def _holds_kidney(roi, truth, spacing) -> bool:
    """Whether the ROI's crop box, on the scan grid, holds a labelled kidney voxel."""
    lo, hi = scan_box([roi], spacing, truth.shape)
    return bool(truth[tuple(slice(a, b) for a, b in zip(lo, hi))].any())


if __name__ == "__main__":
    raise SystemExit(main())
