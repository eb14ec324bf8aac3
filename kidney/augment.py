"""Training augmentation on the dense HU volume, before sparsification (docs/design.md, Augmentation).

In order, each drawn from one seeded ``numpy.random.Generator`` (same generator state, same result):

1. affine (probability ``p_affine``): rotation ±22.5° in the axial plane (about the cranio-caudal
   axis 0) and ±5° about each of the other two axes, isotropic scale ×(1 ± 0.15), about the volume
   centre; HU linear (outside → −1000 HU air), labels and ROI mask nearest;
2. flips: each axis with probability 0.3;
3. intensity: HU ×(1 ± 0.1) and ± 5 HU;
4. Gaussian noise σ = 1 HU;
5. Gaussian blur σ ∈ [0.25, 1.5] voxels (probability ``p_blur``).

The paper gives the ranges; the probabilities of the affine and the blur are not stated there and
are this module's choice (:class:`AugmentConfig`). Intensity changes happen before the HU window is
applied, so they also move voxels across the window, as they would on a real scanner.

:data:`NNUNET_AUGMENT` (``kidney train --augment nnunet``) adds what nnU-Net's default pipeline does
on top, each off in the paper's set (probability 0), applied in this order around the steps above:

0. field-of-view crop (stage 1): keep a random 35–100 % of the slices (kidneys cut by the volume
   edge, or absent) and 70–100 % of each in-plane axis; a share ``p_fov_kidney_free`` of these
   crops (0 in the named sets; ``kidney train --kidney-free-crops``) is instead a slab of the slices
   above or below every kidney voxel (8 slices or more), so stage 1 sees fields of view that hold
   no kidney at all and learns to propose nothing there;
1. (affine, flips) as above, with nnU-Net's ranges: rotation ±30° in-plane, ±15° out of plane,
   scale 0.7–1.4, flips p 0.5;
3b. contrast: HU about 40 HU × U(0.75, 1.25) (p 0.15);
3c. gamma on the [−160, 300] HU range, γ ∈ U(0.7, 1.5), half the time inverted (p 0.3);
4b. extra Gaussian noise σ ∈ U(0, 20) HU (p 0.15; white — the ``scanner`` set below also draws its
    in-plane point spread, ``extra_noise_corr``);
5b. low-resolution simulation: nearest-neighbour downsampling by U(0.5, 1) per axis and linear
    upsampling back (p 0.25).

:data:`SCANNER_AUGMENT` (``kidney train --augment scanner``) keeps only what a scanner changes:
blur σ ∈ [0.25, 1] voxel (p 0.25), extra noise of sd U(0, 15) HU whose in-plane point spread is
drawn from σ ∈ [0, 1] voxel (white to smooth, as reconstruction kernels make it; p 0.35), and the
low-resolution simulation (p 0.25) — no affine, flips or HU changes, so it varies a scan's fine
texture and nothing else.

Stage 2 may also get, before everything else and even when the rest is switched off
(``p_edge_cut``, 0 in the named sets; ``kidney train --edge-cuts``):

E. edge cut: the crop cut through its kidney along the cranio-caudal axis (axis 0), at a plane
   drawn uniformly between the kidney's first and last slice, one side (drawn) dropped — as if
   the scan ended there. A field of view that ends inside a kidney is common (a real scan may stop
   at a kidney's lower pole); stage 2 otherwise only ever sees whole kidneys.

and, after it, also when the rest is off (``p_fat_strands``, 0 in the named sets; ``kidney train
--fat-strands``):

F. fat strands: thin soft-tissue sheets and strands painted into the crop's fat (HU −200 to −30)
   — the fascia, vessels and fibrous septa a real scan shows between its organs and the generator
   does not draw: the band ``|f| < w`` of a smooth unit random field ``f`` (correlation length
   3–8 voxels, ``w`` 0.05–0.2), blended in by ``1 − |f| / w`` (a partial-volume rim) towards one
   HU per crop in [−30, 40]. The labels are left alone (fat is never kidney, mass or cyst).

Every draw comes from the one generator passed in: same generator state, same bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

__all__ = ["AugmentConfig", "augment", "augmentation", "NO_AUGMENT", "PAPER_AUGMENT", "NNUNET_AUGMENT",
           "AUGMENTATIONS"]


@dataclass(frozen=True)
class AugmentConfig:
    p_affine: float = 0.5
    rotate_deg: Tuple[float, float, float] = (22.5, 5.0, 5.0)  # about axis 0 (axial plane), 1, 2
    scale: float = 0.15
    p_flip: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift_hu: float = 5.0
    noise_hu: float = 1.0
    p_blur: float = 0.2
    blur_sigma: Tuple[float, float] = (0.25, 1.5)
    enabled: bool = True
    p_fov_crop: float = 0.0
    fov_keep_z: Tuple[float, float] = (0.35, 1.0)
    fov_keep_xy: Tuple[float, float] = (0.7, 1.0)
    p_fov_kidney_free: float = 0.0
    kidney_free_min_slices: int = 8
    p_contrast: float = 0.0
    contrast: Tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.0
    gamma: Tuple[float, float] = (0.7, 1.5)
    gamma_window_hu: Tuple[float, float] = (-160.0, 300.0)
    p_extra_noise: float = 0.0
    extra_noise_hu: float = 20.0
    extra_noise_corr: Tuple[float, float] = (0.0, 0.0)  # σ (voxels) of the noise's point spread; 0: white
    p_lowres: float = 0.0
    lowres_zoom: Tuple[float, float] = (0.5, 1.0)
    p_edge_cut: float = 0.0
    p_fat_strands: float = 0.0
    fat_strand_hu: Tuple[float, float] = (-30.0, 40.0)
    fat_strand_voxels: Tuple[float, float] = (3.0, 8.0)  # correlation length of the field
    fat_strand_width: Tuple[float, float] = (0.05, 0.2)  # the band |f| < w of the unit field


NO_AUGMENT = AugmentConfig(enabled=False)
PAPER_AUGMENT = AugmentConfig()
# nnU-Net's default 3D pipeline on top of the paper's (module docstring); FOV crops are for stage 1
NNUNET_AUGMENT = AugmentConfig(p_affine=0.3, rotate_deg=(30.0, 15.0, 15.0), scale=0.3, p_flip=0.5,
                               p_blur=0.2, p_fov_crop=0.5, p_contrast=0.15, p_gamma=0.3,
                               p_extra_noise=0.15, p_lowres=0.25)
# The scanner only: how the scan was reconstructed and how noisy it is, nothing of the anatomy's
# geometry or of its HU (module docstring, steps 4b, 5, 5b; every other step off).
SCANNER_AUGMENT = AugmentConfig(p_affine=0.0, p_flip=0.0, intensity_scale=0.0, intensity_shift_hu=0.0,
                                noise_hu=0.0, p_blur=0.25, blur_sigma=(0.25, 1.0), p_extra_noise=0.35,
                                extra_noise_hu=15.0, extra_noise_corr=(0.0, 1.0), p_lowres=0.25)
AUGMENTATIONS = {"paper": PAPER_AUGMENT, "nnunet": NNUNET_AUGMENT, "scanner": SCANNER_AUGMENT,
                 "none": NO_AUGMENT}


def augmentation(name: str, stage: int) -> AugmentConfig:
    """The named set (``paper``, ``nnunet``, ``none``) for a stage: stage-2 crops are already
    cut around a kidney, so they get no field-of-view crop."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; use one of {sorted(AUGMENTATIONS)}")
    cfg = AUGMENTATIONS[name]
    return replace(cfg, p_fov_crop=0.0) if stage == 2 else cfg


def _rotation(angles_rad) -> np.ndarray:
    a0, a1, a2 = angles_rad
    c, s = math.cos(a0), math.sin(a0)
    r0 = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # about axis 0: mixes y and x (in-plane)
    c, s = math.cos(a1), math.sin(a1)
    r1 = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # about axis 1: mixes z and x
    c, s = math.cos(a2), math.sin(a2)
    r2 = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # about axis 2: mixes z and y
    return r0 @ r1 @ r2


def augment(hu: np.ndarray, labels: Optional[np.ndarray], rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig(), mask: Optional[np.ndarray] = None):
    """``(hu, labels, mask)`` augmented; inputs are not modified. ``labels``/``mask`` may be None."""
    hu = np.asarray(hu, np.float32)
    if config.p_edge_cut > 0 and labels is not None and rng.random() < config.p_edge_cut:
        hu, labels, mask = _edge_cut(hu, labels, mask, rng)
    if config.p_fat_strands > 0 and rng.random() < config.p_fat_strands:
        hu = _fat_strands(hu, rng, config)
    if not config.enabled:
        return hu, labels, mask
    if config.p_fov_crop > 0 and rng.random() < config.p_fov_crop:
        box = None
        if config.p_fov_kidney_free > 0 and labels is not None and rng.random() < config.p_fov_kidney_free:
            box = _kidney_free_box(labels, rng, config)
        if box is None:
            box = _fov_box(hu.shape, rng, config)
        hu = hu[box]
        labels = None if labels is None else labels[box]
        mask = None if mask is None else mask[box]
    if rng.random() < config.p_affine:
        angles = [math.radians(rng.uniform(-a, a)) for a in config.rotate_deg]
        zoom = rng.uniform(1 - config.scale, 1 + config.scale)
        matrix = _rotation(angles) / zoom  # output -> input coordinates
        centre = (np.array(hu.shape) - 1) / 2.0
        offset = centre - matrix @ centre
        hu = ndimage.affine_transform(hu, matrix, offset=offset, order=1, mode="constant", cval=-1000.0,
                                      prefilter=False)
        if labels is not None:
            labels = ndimage.affine_transform(labels, matrix, offset=offset, order=0, mode="constant", cval=0)
        if mask is not None:
            mask = ndimage.affine_transform(mask.astype(np.uint8), matrix, offset=offset, order=0,
                                            mode="constant", cval=0).astype(bool)
    for axis in range(3):
        if rng.random() < config.p_flip:
            hu = np.flip(hu, axis)
            labels = None if labels is None else np.flip(labels, axis)
            mask = None if mask is None else np.flip(mask, axis)
    hu = hu * np.float32(rng.uniform(1 - config.intensity_scale, 1 + config.intensity_scale))
    hu = hu + np.float32(rng.uniform(-config.intensity_shift_hu, config.intensity_shift_hu))
    if config.p_contrast > 0 and rng.random() < config.p_contrast:
        hu = (hu - np.float32(40.0)) * np.float32(rng.uniform(*config.contrast)) + np.float32(40.0)
    if config.p_gamma > 0 and rng.random() < config.p_gamma:
        hu = _gamma(hu, rng.uniform(*config.gamma), rng.random() < 0.5, config.gamma_window_hu)
    if config.noise_hu > 0:
        hu = hu + rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(config.noise_hu)
    if config.p_extra_noise > 0 and rng.random() < config.p_extra_noise:
        sd = np.float32(rng.uniform(0.0, config.extra_noise_hu))
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        if config.extra_noise_corr[1] > 0:  # drawn only when asked: the other sets keep their draws
            noise = _correlated(noise, rng.uniform(*config.extra_noise_corr))
        hu = hu + noise * sd
    if rng.random() < config.p_blur:
        hu = ndimage.gaussian_filter(hu, sigma=rng.uniform(*config.blur_sigma), mode="nearest")
    if config.p_lowres > 0 and rng.random() < config.p_lowres:
        hu = _low_resolution(hu, rng.uniform(*config.lowres_zoom, size=3))
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    labels = None if labels is None else np.ascontiguousarray(labels)
    mask = None if mask is None else np.ascontiguousarray(mask)
    return hu, labels, mask


def _correlated(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Unit-sd noise with a Gaussian point spread of ``sigma`` voxels in plane (axes 1, 2), as a
    reconstruction kernel shapes a scan's noise: 0 keeps it white, 1 makes neighbours alike."""
    if sigma <= 0:
        return noise
    noise = ndimage.gaussian_filter(noise, sigma=(0.0, sigma, sigma), mode="wrap")
    return noise / np.float32(max(float(noise.std()), 1e-6))


def _fov_box(shape, rng, config: AugmentConfig):
    """A random sub-box: ``fov_keep_z`` of the slices, ``fov_keep_xy`` of each in-plane axis."""
    box = []
    for axis, n in enumerate(shape):
        keep = rng.uniform(*(config.fov_keep_z if axis == 0 else config.fov_keep_xy))
        m = max(1, min(n, int(round(keep * n))))
        start = int(rng.integers(0, n - m + 1))
        box.append(slice(start, start + m))
    return tuple(box)


def _kidney_free_box(labels: np.ndarray, rng, config: AugmentConfig):
    """A sub-box of the slices above or below every labelled voxel (the longer run; 50–100 % of it,
    at least ``kidney_free_min_slices``) and ``fov_keep_xy`` of each in-plane axis; None when
    neither run is that long or nothing is labelled."""
    z = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    if z.size == 0:
        return None
    n = labels.shape[0]
    above, below = int(z[0]), n - int(z[-1]) - 1
    run, first = (above, 0) if above >= below else (below, int(z[-1]) + 1)
    if run < config.kidney_free_min_slices:
        return None
    m = max(config.kidney_free_min_slices, int(round(rng.uniform(0.5, 1.0) * run)))
    start = first + int(rng.integers(0, run - m + 1))
    return (slice(start, start + m),) + _fov_box(labels.shape, rng, config)[1:]


def _edge_cut(hu: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray], rng):
    """Step E: keep the slices on one side of a plane through the labelled voxels' slices (each
    side keeps at least one labelled slice); unchanged when fewer than 2 slices are labelled."""
    z = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    if z.size < 2:
        return hu, labels, mask
    cut = int(rng.integers(int(z[0]) + 1, int(z[-1]) + 1))  # slices [0, cut) and [cut, n) both hold kidney
    keep = slice(cut, None) if rng.random() < 0.5 else slice(0, cut)
    return hu[keep], labels[keep], None if mask is None else mask[keep]


def _fat_strands(hu: np.ndarray, rng, config: AugmentConfig) -> np.ndarray:
    """Step F (module docstring): thin soft tissue in the fat, from a smooth field's zero set."""
    # Imported here, not at the top: kidney.phantom loads the whole generator, which training
    # without this step never needs.
    from .phantom.render import smooth_noise  # white noise on a coarse grid, linearly upsampled
    fat = (hu > -200) & (hu < -30)
    if not fat.any():
        return hu
    field = smooth_noise(rng, hu.shape, (1.0, 1.0, 1.0), rng.uniform(*config.fat_strand_voxels))
    width = np.float32(rng.uniform(*config.fat_strand_width))
    target = np.float32(rng.uniform(*config.fat_strand_hu))
    alpha = np.clip(1 - np.abs(field) / width, 0, 1) * fat
    return (hu + alpha * (target - hu)).astype(np.float32)


def _gamma(hu: np.ndarray, gamma: float, invert: bool, window) -> np.ndarray:
    """Gamma on the voxels inside ``window`` (HU), mapped to [0, 1] and back; ``invert`` applies it
    to ``1 - v`` (nnU-Net's inverted gamma). Voxels outside the window are left as they are."""
    lo, hi = (np.float32(w) for w in window)
    inside = (hu >= lo) & (hu <= hi)
    v = (hu[inside] - lo) / (hi - lo)
    v = 1 - (1 - v) ** np.float32(gamma) if invert else v ** np.float32(gamma)
    out = hu.copy()
    out[inside] = lo + v * (hi - lo)
    return out


def _low_resolution(hu: np.ndarray, zoom) -> np.ndarray:
    """Nearest-neighbour downsampling by ``zoom`` per axis, then linear upsampling to the shape."""
    small = ndimage.zoom(hu, zoom, order=0, mode="nearest", grid_mode=True)
    back = ndimage.zoom(small, np.divide(hu.shape, small.shape), order=1, mode="nearest", grid_mode=True)
    out = np.empty_like(hu)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(hu.shape, back.shape))
    out[...] = np.pad(back[sl], [(0, n - (s.stop - s.start)) for n, s in zip(hu.shape, sl)], mode="edge")
    return out
