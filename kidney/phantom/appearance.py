"""How a scan looks: the HU table of its contrast phase, per-lesion HU, scanner noise and blur.

Six appearances:

``classic``
    The fixed :data:`~kidney.phantom.tissues.TISSUES` table of one phase (enhanced phases only when
    the phase is ``random``), a tumour subtype per lesion, one noise level per voxel size and one
    point spread. Phantoms made before the ``varied`` appearance existed are ``classic`` and are
    reproduced bit for bit.
``varied``
    Drawn per scan, from a random stream of its own (so a seed's anatomy is the same in both
    appearances), to cover what real KiTS23 scans show:

    - phase: non-contrast, corticomedullary or nephrographic (``random``: each 1/3); an enhanced
      scan mixes in up to 35 % of the other enhanced phase (timing) and scales every tissue's
      enhancement by a contrast dose in [0.6, 1.3];
    - kidney: non-contrast parenchyma 8–38 HU (the real non-contrast CT of ``data/totalseg_example``
      reads a median 14 and 20 HU inside its eroded kidney masks), enhancing on top of that by the
      table's uptake;
    - each tumour its own tissue: non-contrast 20–45 HU; enhanced, relative to the cortex's uptake:
      hypo- (50 %, 0.2–0.7 ×), iso- (25 %, 0.7–1.0 ×) or hyper-enhancing (25 %, 1.0–1.3 ×);
      texture sd 8–30 HU; necrosis (where the geometry asks for it) 5–30 HU, barely enhancing;
    - each cyst its own tissue: simple (75 %, −5–18 HU) or hyperdense / proteinaceous (25 %,
      25–65 HU), no enhancement beyond 0–8 HU of pseudo-enhancement;
    - perirenal fat around CT made from label maps: a rim of 0–12 mm (0: the kidney may touch the
      liver, spleen or bowel, as it often does);
    - scanner: tissue texture × 0.8–1.3, quantum noise × 0.6–1.8 of :func:`default_noise_hu`,
      point spread σ 0.3–1.0 voxel in-plane and 0.2–0.6 voxel in z (sharp to smooth kernels).
``varied-organs``
    ``varied``, and the organs around the kidneys drawn per scan as well (:class:`Organs`, from a
    stream of their own, so a seed's scan differs from its ``varied`` one only there), where
    ``varied`` keeps the liver and the spleen the same in every scan:

    - the liver's inferior right lobe reaching down beside the right kidney (70 %): an ellipsoid
      25–45 mm lateral to the kidney's centre, from 35 mm above it to 15 mm below, joined to the
      liver above, so that near the kidney a slice shows a round lobe separated from it only by
      fat, as in many real scans;
    - the spleen's lower pole beside the left kidney (60 %), the same way;
    - the liver's non-contrast HU 20–65 (fatty to dense liver) and the spleen's 30–50; enhanced
      phases add the table's uptake on top.
``varied-texture``
    ``varied-organs``, and the soft organs uneven at a coarse scale, as real parenchyma is (from a
    stream of its own again): one smooth unit field per scan, correlation length 12–40 mm, added to
    the liver (2–9 HU), the spleen (1–6 HU), muscle (1–6 HU), pancreas and bowel wall (1–5 HU) and
    the kidney's cortex and medulla (0–4 HU), each amplitude drawn per scan. The real non-contrast CT
    in ``data/totalseg_example`` shows why (``python scripts/calibrate_phantom_hu.py --texture``): its liver's
    HU stay correlated 0.2 at every lag from 3 to 24 mm (a coarse component of about 6 HU), the
    spleen's and the muscle's at about 0.05–0.1, where the other appearances' organs are correlated
    over one 3 mm voxel at most; only their lesions vary at a coarse scale.
``varied-fascia``
    ``varied-texture``, and the thin tissue a real scan shows in the fat between its organs
    (:class:`Fascia`, from a stream of its own; painted by :mod:`kidney.phantom.fascia`): septa,
    the renal (Gerota's) fascia around each kidney, and small vessels. In the real non-contrast CT,
    6.5 % of the fat within 40 mm of the kidneys (voxels whose in-plane 5 × 5 median lies in
    [−200, −60) HU) reads −30 HU or more; in ``varied-texture`` phantoms 2.8 %, in ``varied-fascia``
    ones 5.8 % (``python scripts/calibrate_phantom_hu.py --fat``, phantoms drawn at 1 mm in plane
    and averaged to the real CT's 3 mm). Without it the phantoms' fat is an even background where
    the real one holds structure stage 2 has never seen. Per scan:

    - septa: the band ``|f| < w`` of a smooth unit field ``f`` (correlation length 8–25 mm), a
      share of 4–16 % of the visceral and subcutaneous fat, one soft tissue per scan (non-contrast
      −10–40 HU, up to 30 HU more in an enhanced phase, sd 5–12 HU);
    - the renal fascia (80 % of scans): a shell 0.8–2 mm thick, 3–15 mm outside the labelled
      kidney, in the fat only, broken into patches (50–100 % of it kept);
    - 20–60 small vessels (radius 1–3 mm, the vein's HU) winding through the visceral fat within
      about 60 mm of a kidney.

    Everything stays label 0: fat is never kidney, mass or cyst.
``varied-fat``
    ``varied-fascia``, and the subcutaneous and visceral fat uneven at a coarse scale too: the
    ``varied-texture`` field (the same one, so a seed's other tissues keep their HU) added to the
    fat at an amplitude of 2–10 HU per scan (from a stream of its own). The real non-contrast CT's
    fat stays correlated 0.15–0.17 from 6 to 12 mm, every other appearance's 0.03–0.07; ``varied-fat``
    phantoms 0.14–0.20 on average over seeds 0–4 (``python scripts/calibrate_phantom_hu.py
    --fat-texture``).

Per-lesion tissues get ids from :data:`LESION_ID0` up; :class:`Look` holds the 256-entry mean, sd
and label tables the renderer reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .tissues import PHASES, TISSUES, T

APPEARANCES = ("classic", "varied", "varied-organs", "varied-texture", "varied-fascia", "varied-fat")
LESION_ID0 = 64  # TISSUES has fewer entries; ids from here on are per-lesion tissues
_KIDNEY = ("renal_cortex", "renal_medulla")


@dataclass
class Look:
    """The tables a scan is rendered from.

    Attributes:
        phase: contrast phase name.
        mean, sd: ``(256,) float32`` HU mean and texture sd per tissue id.
        label: ``(256,) uint8`` KiTS23 label per tissue id.
        noise_factor: quantum noise relative to :func:`default_noise_hu`.
        blur: point-spread σ in voxels ``(z, y, x)``.
        rng: the appearance's own random stream (``varied``), None for ``classic``.
        kidney_nc: non-contrast HU of the renal cortex (``varied``).
        fat_rim_mm: perirenal fat rim :func:`~kidney.phantom.from_labels` paints around the labels.
        organs: the drawn liver lobe and spleen pole (``varied-organs``), None otherwise.
        coarse_sd: ``(256,) float32`` HU amplitude per tissue of the coarse field
            (``varied-texture``), None otherwise.
        coarse_mm: the coarse field's correlation length (mm).
        coarse_seed: the seed of the coarse field's own stream.
        fascia: the thin tissue in the fat (``varied-fascia``), None otherwise.
    """

    phase: str
    mean: np.ndarray
    sd: np.ndarray
    label: np.ndarray
    noise_factor: float = 1.0
    blur: Tuple[float, float, float] = (0.3, 0.45, 0.45)
    rng: Optional[np.random.Generator] = field(default=None, repr=False)
    kidney_nc: float = 0.0
    fat_rim_mm: float = 12.0
    organs: Optional["Organs"] = None
    coarse_sd: Optional[np.ndarray] = None
    coarse_mm: float = 0.0
    coarse_seed: int = 0
    fascia: Optional["Fascia"] = None
    _next: int = LESION_ID0

    @property
    def varied(self) -> bool:
        return self.rng is not None

    @property
    def name(self) -> str:
        """The appearance's name (:data:`APPEARANCES`)."""
        if not self.varied:
            return "classic"
        if self.fascia is not None:
            return "varied-fat" if self.coarse_sd[T["visceral_fat"]] > 0 else "varied-fascia"
        if self.coarse_sd is not None:
            return "varied-texture"
        return "varied" if self.organs is None else "varied-organs"

    def _new(self, mean: float, sd: float, label: int) -> int:
        if self._next > 255:
            raise ValueError("more than 192 lesion tissues in one phantom")
        i = self._next
        self.mean[i], self.sd[i], self.label[i] = mean, sd, label
        self._next += 1
        return i

    def uptake(self) -> float:
        """Cortex enhancement above its non-contrast HU in this scan (0 for non-contrast)."""
        return float(self.mean[T["renal_cortex"]]) - self.kidney_nc

    def tumour(self, necrotic: bool) -> Tuple[int, Optional[int]]:
        """A new tumour tissue (and its necrosis tissue when ``necrotic``): ``(id, necrosis_id)``."""
        r = self.rng
        ratio = float(r.choice([r.uniform(0.2, 0.7), r.uniform(0.7, 1.0), r.uniform(1.0, 1.3)],
                               p=[0.5, 0.25, 0.25]))
        t = self._new(r.uniform(20, 45) + ratio * self.uptake(), r.uniform(8, 30), 2)
        nec = None
        if necrotic:
            nec = self._new(r.uniform(5, 30) + r.uniform(0, 0.1) * self.uptake(), r.uniform(5, 12), 2)
        return t, nec

    def cyst(self) -> int:
        """A new cyst tissue id."""
        r = self.rng
        hu = r.uniform(-5, 18) if r.random() < 0.75 else r.uniform(25, 65)
        pseudo = r.uniform(0, 8) if self.phase != "noncontrast" else 0.0
        return self._new(hu + pseudo, r.uniform(3, 12), 3)


Ellipsoid = Tuple[Tuple[float, float, float], Tuple[float, float, float]]


@dataclass(frozen=True)
class Organs:
    """The organs beside the kidneys, drawn per scan (``varied-organs``).

    ``liver_lobe`` and ``spleen_pole`` are ``(offset, radii)`` in mm, ``(z, y, x)``, from the
    centre of the right and the left kidney; the offset's ``x`` is lateral (away from the
    midline). None: no such lobe in this scan.
    """

    liver_lobe: Optional[Ellipsoid]
    spleen_pole: Optional[Ellipsoid]
    lump_seed: int = 0  # the seed of their surface's lumps


def _draw_organs(rng) -> Organs:
    def beside(p, dz, dy, dx, rz, ry, rx):
        if rng.random() >= p:
            return None
        off = tuple(float(rng.uniform(*r)) for r in (dz, dy, dx))
        return off, tuple(float(rng.uniform(*r)) for r in (rz, ry, rx))
    return Organs(liver_lobe=beside(0.7, (-35, 15), (-20, 5), (25, 45), (40, 70), (25, 45), (20, 35)),
                  spleen_pole=beside(0.6, (-40, 0), (-5, 20), (25, 45), (30, 50), (18, 28), (18, 30)),
                  lump_seed=int(rng.integers(2**62)))


@dataclass(frozen=True)
class Fascia:
    """The thin tissue in the fat between the organs, drawn per scan (``varied-fascia``).

    Attributes:
        tissue: the septa's tissue id (a per-scan tissue of label 0).
        septa_mm: correlation length of the septa's field (mm).
        septa_share: share of the visceral fat the septa take.
        gerota_mm: distance of the renal fascia from the kidney (mm); None: no fascia drawn.
        gerota_thick_mm: its thickness (mm).
        gerota_keep: share of the fascia's shell kept (the rest broken away in patches).
        n_vessels: small vessels in the fat near the kidneys.
        seed: the seed of the painting's own stream (where the septa, patches and vessels lie).
    """

    tissue: int
    septa_mm: float
    septa_share: float
    gerota_mm: Optional[float]
    gerota_thick_mm: float
    gerota_keep: float
    n_vessels: int
    seed: int


def _draw_fascia(look: Look, rng) -> Fascia:
    """The :class:`Fascia` of ``look`` from ``rng`` (module docstring); adds the septa's tissue."""
    enhance = rng.uniform(0, 30) if look.phase != "noncontrast" else 0.0
    tissue = look._new(rng.uniform(-10, 40) + enhance, rng.uniform(5, 12), 0)
    gerota = float(rng.uniform(3, 15)) if rng.random() < 0.8 else None
    return Fascia(tissue=tissue, septa_mm=float(rng.uniform(8, 25)),
                  septa_share=float(rng.uniform(0.04, 0.16)), gerota_mm=gerota,
                  gerota_thick_mm=float(rng.uniform(0.8, 2.0)), gerota_keep=float(rng.uniform(0.5, 1.0)),
                  n_vessels=int(rng.integers(20, 61)), seed=int(rng.integers(2**62)))


def _tables(phase_index: int):
    mean = np.zeros(256, np.float32)
    sd = np.zeros(256, np.float32)
    label = np.zeros(256, np.uint8)
    for i, t in enumerate(TISSUES):
        mean[i], sd[i], label[i] = t.hu[phase_index], t.sd, t.label
    return mean, sd, label


def draw_phase(rng, phase: str, appearance: str = "classic") -> str:
    """The scan's phase: ``phase`` itself, or for ``random`` one drawn from ``rng`` (``classic``:
    the two enhanced phases; ``varied``: all three)."""
    if phase == "random":
        return str(rng.choice(PHASES[1:] if appearance == "classic" else PHASES))
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; use 'random' or one of {PHASES}")
    return phase


def case_phase(phase: str, i: int) -> str:
    """The phase asked for case ``i`` of a set: ``'cycle'`` gives ``PHASES[i % 3]`` (non-contrast,
    corticomedullary, nephrographic, ...); anything else is passed on as it is."""
    return PHASES[i % len(PHASES)] if phase == "cycle" else phase


def classic_look(phase: str) -> Look:
    """The fixed table of ``phase``."""
    return Look(phase, *_tables(PHASES.index(phase)))


# varied-texture: HU amplitude ranges of the coarse field per tissue (module docstring)
_COARSE_SD = ((("liver",), 2.0, 9.0), (("spleen",), 1.0, 6.0), (("muscle",), 1.0, 6.0),
              (("pancreas",), 1.0, 5.0), (("bowel_wall",), 1.0, 5.0), (_KIDNEY, 0.0, 4.0))


# varied-fat: HU amplitude range of the coarse field in the subcutaneous and visceral fat (module docstring)
_FAT_COARSE_SD = (2.0, 10.0)


def _draw_coarse(look: Look, rng) -> None:
    """Set ``look``'s coarse field (``varied-texture``) from ``rng``."""
    look.coarse_sd = np.zeros(256, np.float32)
    for names, lo, hi in _COARSE_SD:
        look.coarse_sd[[T[n] for n in names]] = rng.uniform(lo, hi)  # one amplitude per group
    look.coarse_mm = float(rng.uniform(12.0, 40.0))
    look.coarse_seed = int(rng.integers(2**62))


def varied_look(seed: int, phase: str, organs: bool = False, texture: bool = False,
                fascia: bool = False, fat: bool = False) -> Look:
    """A drawn appearance (module docstring) from its own stream of ``seed``; ``organs``: the
    ``varied-organs`` one; ``texture``: the ``varied-texture`` one (organs included); ``fascia``:
    the ``varied-fascia`` one (texture included); ``fat``: the ``varied-fat`` one (fascia included)."""
    fascia = fascia or fat
    texture = texture or fascia
    organs = organs or texture
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20261202]))
    phase = draw_phase(rng, phase, "varied")
    table_nc, sd, label = _tables(0)
    nc_mean = table_nc.copy()
    kidney_nc = rng.uniform(8, 38)
    nc_mean[T["renal_cortex"]] = kidney_nc
    nc_mean[T["renal_medulla"]] = kidney_nc - rng.uniform(0, 6)
    mean = nc_mean.copy()
    if phase != "noncontrast":
        k = PHASES.index(phase)
        other = 3 - k  # the other enhanced phase (1 <-> 2)
        w = rng.uniform(0, 0.35)
        table = (1 - w) * _tables(k)[0] + w * _tables(other)[0]
        mean = nc_mean + rng.uniform(0.6, 1.3) * (table - table_nc)
    sd = sd * np.float32(rng.uniform(0.8, 1.3))
    b = rng.uniform(0.3, 1.0)
    look = Look(phase, mean.astype(np.float32), sd.astype(np.float32), label,
                noise_factor=float(rng.uniform(0.6, 1.8)), blur=(float(rng.uniform(0.2, 0.6)), b, b),
                rng=rng, kidney_nc=float(kidney_nc), fat_rim_mm=float(rng.uniform(0, 12)))
    if organs:  # a stream of their own: everything 'varied' draws stays the same
        org = np.random.default_rng(np.random.SeedSequence([int(seed), 20261203]))
        look.organs = _draw_organs(org)
        for name, lo, hi in (("liver", 20.0, 65.0), ("spleen", 30.0, 50.0)):
            look.mean[T[name]] += np.float32(org.uniform(lo, hi) - table_nc[T[name]])
    if texture:
        _draw_coarse(look, np.random.default_rng(np.random.SeedSequence([int(seed), 20261204])))
    if fascia:
        look.fascia = _draw_fascia(look, np.random.default_rng(np.random.SeedSequence([int(seed), 20261205])))
    if fat:  # a stream of its own again: every other tissue keeps its HU
        fat_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20261206]))
        look.coarse_sd[[T["subcutaneous_fat"], T["visceral_fat"]]] = fat_rng.uniform(*_FAT_COARSE_SD)
    return look


def make_look(seed: int, rng, phase: str, appearance: str) -> Look:
    """The :class:`Look` of a scan; ``rng`` (the geometry stream) draws the classic phase."""
    if appearance not in APPEARANCES:
        raise ValueError(f"unknown appearance {appearance!r}; use one of {APPEARANCES}")
    classic_phase = draw_phase(rng, phase, "classic")  # drawn in both, so the anatomy is the same
    if appearance == "classic":
        return classic_look(classic_phase)
    return varied_look(seed, phase, organs=appearance == "varied-organs",
                       texture=appearance == "varied-texture", fascia=appearance == "varied-fascia",
                       fat=appearance == "varied-fat")
