"""Synthetic phantoms: the :class:`Phantom` record and :func:`make_phantom`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .. import io
from .anatomy import LESION_DEPTHS, Anatomy, _draw_anatomy
from .body import _paint_back_muscles, _paint_body, _paint_bowel, _paint_organs, _paint_ribs, _paint_spine
from .canvas import _Canvas
from .fascia import paint_fascia
from .grid import GRID_PRESETS, _draw_grid
from .kidneys import _paint_kidney, _paint_lesion
from .render import _render_hu, default_noise_hu
from .appearance import Look, make_look


@dataclass
class Phantom:
    """A synthetic CT and its labels in the internal orientation.

    Attributes:
        image: ``(Z, Y, X) int16`` HU.
        labels: ``(Z, Y, X) uint8`` KiTS23 labels (0 bg, 1 kidney, 2 tumour, 3 cyst).
        tissue: ``(Z, Y, X) uint8`` tissue ids (index into :data:`TISSUES`), centre sub-slice.
        spacing: ``(sz, sy, sx)`` mm.
        phase: contrast phase name.
        seed: the seed it was made from.
        anatomy: the drawn geometry (kidney and lesion positions in mm).
        noise_hu: quantum-noise sd used.
        appearance: one of :data:`~kidney.phantom.appearance.APPEARANCES` (``'classic'``, ``'varied'``,
            ``'varied-organs'``, ``'varied-texture'``, ``'varied-fascia'``, ``'varied-fat'``;
            :mod:`kidney.phantom.appearance`).
        lesion_depth: a key of :data:`~kidney.phantom.anatomy.LESION_DEPTHS` (how deep in the
            kidney the drawn lesions lie).
    """

    image: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    spacing: Tuple[float, float, float]
    phase: str
    seed: int
    anatomy: Anatomy = field(repr=False)
    noise_hu: float = 0.0
    appearance: str = "classic"
    lesion_depth: str = "classic"

    @property
    def affine(self) -> np.ndarray:
        """KiTS23-style ``I, P, L`` affine for :attr:`image` (see :func:`kidney.io.kits_affine`)."""
        return io.kits_affine(self.spacing)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.image.shape)


def _sub_slices(spacing) -> int:
    return 3 if spacing[0] > 1.6 else 1


def _finish(cv: _Canvas, an: Anatomy, spacing, look: Look, seed: int, noise_hu, rng,
            labels: Optional[np.ndarray] = None) -> Phantom:
    if noise_hu is None:
        noise_hu = default_noise_hu(spacing) * look.noise_factor
    noise_hu = float(noise_hu)
    paint_fascia(cv, an, look)
    image = _render_hu(cv.tissue, cv.n_sub, spacing, look, noise_hu, rng)
    tissue = cv.tissue[cv.n_sub // 2::cv.n_sub]
    if labels is None:
        labels = look.label[tissue]
    return Phantom(image, labels, np.ascontiguousarray(tissue), tuple(spacing), look.phase, seed, an,
                   noise_hu, look.name)


def _paint_background(cv: _Canvas, an: Anatomy, rng, look: Look) -> None:
    _paint_body(cv, an)
    _paint_spine(cv, an)
    _paint_back_muscles(cv, an)
    _paint_ribs(cv, an, rng)
    _paint_organs(cv, an, rng, look.organs)
    _paint_bowel(cv, an, rng)


def make_phantom(seed: int = 0, *, preset: str = "demo", shape=None, spacing=None,
                 phase: str = "random", n_tumours: Optional[int] = None,
                 n_cysts: Optional[int] = None, noise_hu: Optional[float] = None,
                 appearance: str = "classic", lesion_depth: str = "classic") -> Phantom:
    """A seeded synthetic abdominal CT with two kidneys, tumours and cysts.

    Args:
        seed: RNG seed; the same arguments give a bit-identical phantom.
        preset: grid preset (:data:`GRID_PRESETS`): ``'demo'`` (256², 1.45–1.75 mm, 2–3 mm
            slices), ``'full'`` (512², 0.70–0.95 mm, KiTS23 slice mix) or ``'tiny'`` (96², 4 mm).
        shape: ``(Z, Y, X)`` override (the preset's field of view is kept unless ``spacing`` given).
        spacing: ``(sz, sy, sx)`` mm override.
        phase: ``'random'`` or one of :data:`PHASES` (``random``: corticomedullary or nephrographic
            for the classic appearance, any of the three for ``varied``).
        n_tumours: default 1–2; n_cysts: default 1–3 (so every label is present by default).
        noise_hu: quantum-noise sd; default :func:`default_noise_hu` (× a drawn factor when varied).
        appearance: ``'classic'`` (fixed HU table; the default, reproducing earlier phantoms) or
            ``'varied'`` (drawn phase, contrast dose, kidney HU, per-lesion HU, noise and blur; see
            :mod:`kidney.phantom.appearance`) or ``'varied-organs'`` (``varied`` with the liver and
            the spleen beside the kidneys drawn too). The anatomy of a seed is the same in all.
        lesion_depth: ``'classic'`` (the default, reproducing earlier phantoms: cysts mostly
            bulging out of the kidney, none inside it) or ``'real'`` (lesions as deep in the kidney
            as those of the real training label maps); see
            :data:`~kidney.phantom.anatomy.LESION_DEPTHS`. Only the lesions' positions differ.

    Returns:
        :class:`Phantom` (image int16 HU, labels uint8, internal ``I, P, L`` orientation).
    """
    if preset not in GRID_PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r}; use one of {sorted(GRID_PRESETS)}")
    if lesion_depth not in LESION_DEPTHS:
        raise ValueError(f"unknown lesion depth {lesion_depth!r}; use one of {sorted(LESION_DEPTHS)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20251104]))
    shape, spacing = _draw_grid(rng, GRID_PRESETS[preset], shape, spacing)
    look = make_look(seed, rng, phase, appearance)
    extent = tuple(n * s for n, s in zip(shape, spacing))
    an = _draw_anatomy(rng, extent, n_tumours=n_tumours, n_cysts=n_cysts, lesion_depth=lesion_depth)
    cv = _Canvas(shape, spacing, _sub_slices(spacing))
    _paint_background(cv, an, rng, look)
    for k in an.kidneys:
        _paint_kidney(cv, an, k, rng)
    for les in sorted(an.lesions, key=lambda l: l.kind != "cyst"):  # cysts first, tumours win
        _paint_lesion(cv, les, rng, look)
    ph = _finish(cv, an, spacing, look, int(seed), noise_hu, rng)
    ph.lesion_depth = lesion_depth
    return ph
