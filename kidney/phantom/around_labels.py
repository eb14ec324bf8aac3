"""CT synthesised around a real KiTS23 label map (:func:`from_labels`): the labels are kept exactly."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .. import io
from ..components import label_parts
from .anatomy import Anatomy, _draw_anatomy
from .canvas import _Canvas, _paint_tube, grown_box
from .render import smooth_noise
from .appearance import Look, make_look
from .synthetic import Phantom, _finish, _paint_background, _sub_slices
from .tissues import T, TUMOUR_TYPES, _CAVITY


def _label_components(labels: np.ndarray, spacing) -> List[Tuple[np.ndarray, int]]:
    """Centres (mm) and sizes of the two largest 26-connected foreground components."""
    fg = labels > 0
    if not fg.any():
        return []
    box = ndimage.find_objects(fg.astype(np.uint8))[0]
    comp, n = label_parts(fg[box])
    sizes = np.bincount(comp.ravel())[1:]
    out = []
    for i in np.argsort(sizes)[::-1][:2]:
        idx = np.argwhere(comp == i + 1).mean(axis=0) + [b.start for b in box]
        out.append(((idx + 0.5) * np.array(spacing), int(sizes[i])))
    return out


def _anatomy_from_labels(rng, labels: np.ndarray, spacing) -> Anatomy:
    extent = tuple(n * s for n, s in zip(labels.shape, spacing))
    an = _draw_anatomy(rng, extent, synthetic_kidneys=False)
    comps = _label_components(labels, spacing)
    if len(comps) == 2 and abs(comps[0][0][2] - comps[1][0][2]) > 60:
        an.cx = float(0.5 * (comps[0][0][2] + comps[1][0][2]))
    for c, _ in comps:
        side = "right" if c[2] < an.cx else "left"
        an.z_kidney[side] = float(c[0])
    if comps:
        y_k = float(np.mean([c[1] for c, _ in comps]))
        an.y_spine = y_k - 12.0
        an.cy = an.y_spine + an.fat_mm + 62.0 - an.half_depth
        reach = max(abs(c[2] - an.cx) for c, _ in comps) + 60 + an.fat_mm
        an.half_width = max(an.half_width, reach)
    if len(comps) == 1:
        side = "right" if comps[0][0][2] < an.cx else "left"
        other = "left" if side == "right" else "right"
        an.z_kidney[other] = an.z_kidney[side]
    an.label_centres = [c for c, _ in comps]
    return an


def _label_tissues(cv: _Canvas, labels: np.ndarray, spacing, rng, look: Look) -> None:
    """Paint kidney/tumour/cyst tissue exactly on the labelled voxels (all sub-slices)."""
    box = grown_box(labels > 0, 15.0, spacing)
    if box is None:
        return
    lab = labels[box]
    outside = ndimage.distance_transform_edt(lab == 0, sampling=spacing)
    depth_k = ndimage.distance_transform_edt(lab > 0, sampling=spacing)
    tissue = np.full(lab.shape, 255, np.uint8)
    tissue[(outside > 0) & (outside <= look.fat_rim_mm)] = T["visceral_fat"]  # perirenal fat
    mottled = smooth_noise(rng, lab.shape, spacing, 8.0) > 0.2
    tissue[lab == 1] = np.where((depth_k[lab == 1] > 6.0) & mottled[lab == 1],
                                T["renal_medulla"], T["renal_cortex"])
    _cyst_tissue(tissue, lab, look)
    _tumour_tissue(tissue, lab, spacing, rng, look)
    fine = cv.tissue.reshape(labels.shape[0], cv.n_sub, *labels.shape[1:])
    sub = fine[box[0], :, box[1], box[2]]
    fat_ok = np.isin(sub, _CAVITY) & (tissue == T["visceral_fat"])[:, None]
    sub[fat_ok] = T["visceral_fat"]
    exact = np.broadcast_to((lab > 0)[:, None], sub.shape)
    sub[exact] = np.broadcast_to(tissue[:, None], sub.shape)[exact]
    fine[box[0], :, box[1], box[2]] = sub


def _cyst_tissue(tissue: np.ndarray, lab: np.ndarray, look: Look) -> None:
    """Cyst tissue on label 3: one simple cyst tissue (classic), or one drawn per 26-connected
    cyst (varied)."""
    cyst = lab == 3
    if not look.varied:
        tissue[cyst] = T["cyst"]
        return
    comp, n = label_parts(cyst)
    ids = np.array([0] + [look.cyst() for _ in range(n)], np.uint8)
    tissue[cyst] = ids[comp[cyst]]


def _tumour_tissue(tissue: np.ndarray, lab: np.ndarray, spacing, rng, look: Look) -> None:
    """Tumour tissue on label 2, one per 26-connected tumour: a subtype (classic) or a drawn
    tissue (varied); large ones get a necrotic core (deeper than 0.55 of their largest depth)."""
    tum = lab == 2
    if not tum.any():
        return
    comp, n = label_parts(tum)
    depth = ndimage.distance_transform_edt(tum, sampling=spacing)
    for i in range(1, n + 1):
        m = comp == i
        d_max = float(depth[m].max())
        if look.varied:
            t, nec = look.tumour(d_max > 12 and look.rng.random() < 0.45)
        else:
            kind = str(rng.choice(TUMOUR_TYPES, p=[0.7, 0.2, 0.1]))
            t = T[kind]
            nec = T["tumour_necrosis"] if kind == "tumour_clear_cell" and d_max > 12 \
                and rng.random() < 0.6 else None
        tissue[m] = t
        if nec is not None:
            tissue[m & (depth > 0.55 * d_max)] = nec


def from_labels(segmentation: np.ndarray, spacing: Sequence[float], seed: int = 0, *,
                phase: str = "random", noise_hu: Optional[float] = None,
                appearance: str = "classic") -> Phantom:
    """Synthesise a CT around a real KiTS23 label map; the labels are kept exactly.

    Args:
        segmentation: ``(Z, Y, X)`` internal-orientation label map (0..3), e.g.
            ``io.load_nifti(path, label=True).array``.
        spacing: ``(sz, sy, sx)`` mm.
        seed, phase, noise_hu, appearance: as in :func:`make_phantom`.

    The body, spine, organs and bowel are drawn around the labelled kidneys (midline between the
    two largest components, spine just medial and anterior-posterior level with them); labelled
    voxels get kidney (cortex/medulla by depth), tumour (subtype, necrotic core) or cyst tissue,
    with a rim of perirenal fat (12 mm; ``varied``: 0–12 mm, drawn per scan). ``Phantom.labels`` is a copy of ``segmentation``.
    """
    labels = np.asarray(segmentation)
    if labels.ndim != 3:
        raise ValueError(f"from_labels needs a 3D label map, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 3):
        raise ValueError(f"from_labels: labels must lie in 0..3, got range "
                         f"[{labels.min()}, {labels.max()}] in a {labels.shape} map")
    labels = labels.astype(np.uint8)
    spacing = io.check_spacing(spacing, "from_labels")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20251105]))
    look = make_look(seed, rng, phase, appearance)
    an = _anatomy_from_labels(rng, labels, spacing)
    cv = _Canvas(labels.shape, spacing, _sub_slices(spacing))
    _paint_background(cv, an, rng, look)
    _paint_renal_vessels(cv, an)
    _label_tissues(cv, labels, spacing, rng, look)
    return _finish(cv, an, spacing, look, int(seed), noise_hu, rng, labels=labels.copy())


def _paint_renal_vessels(cv: _Canvas, an: Anatomy) -> None:
    for c in an.label_centres:
        aorta = (c[0], an.y_spine - 30, an.cx + 12)
        ivc = (c[0] + 5, an.y_spine - 28, an.cx - 22)
        _paint_tube(cv, T["artery"], [aorta, tuple(c)], 3.5, over=(T["visceral_fat"],))
        _paint_tube(cv, T["vein"], [ivc, tuple(c)], 5.0, over=(T["visceral_fat"],))
