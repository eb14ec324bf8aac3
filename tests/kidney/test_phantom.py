"""kidney.phantom: determinism, labels, calibrated HU, KiTS-sized kidneys, CT around real labels."""
from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from kidney import io, phantom
from kidney.phantom import TISSUE_ID as T


def test_deterministic_per_seed():
    a = phantom.make_phantom(11, preset="tiny")
    b = phantom.make_phantom(11, preset="tiny")
    c = phantom.make_phantom(12, preset="tiny")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.spacing == b.spacing and a.phase == b.phase
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(4))
def test_every_label_present_and_consistent(seed):
    ph = phantom.make_phantom(seed, preset="tiny")
    assert ph.image.dtype == np.int16 and ph.labels.dtype == np.uint8
    assert ph.image.shape == ph.labels.shape == ph.tissue.shape == (40, 96, 96)
    assert set(np.unique(ph.labels)) == {0, 1, 2, 3}
    lab_of = np.array([t.label for t in phantom.TISSUES])
    assert np.array_equal(lab_of[ph.tissue], ph.labels)
    assert ph.phase in phantom.PHASES
    assert nib.aff2axcodes(ph.affine) == ("I", "P", "L")


def test_grid_presets_and_overrides():
    ph = phantom.make_phantom(0, preset="tiny", shape=(20, 48, 40))
    assert ph.shape == (20, 48, 40)
    extent = np.multiply(ph.shape, ph.spacing)
    assert 300 < extent[1] < 450 and 150 < extent[0] < 280  # the preset's field of view
    ph = phantom.make_phantom(0, preset="tiny", spacing=(6.0, 5.0, 5.0))
    assert ph.spacing == (6.0, 5.0, 5.0)
    demo = phantom.GRID_PRESETS["demo"]
    assert demo.inplane == 256 and phantom.GRID_PRESETS["full"].inplane == 512
    with pytest.raises(ValueError, match="huge"):
        phantom.make_phantom(0, preset="huge")
    with pytest.raises(ValueError, match="arterial"):
        phantom.make_phantom(0, preset="tiny", phase="arterial")


def test_anatomy_is_on_the_right_sides(tiny_phantom):
    t = tiny_phantom.tissue
    x_of = {name: np.argwhere(t == T[name])[:, 2].mean() for name in ("liver", "spleen",
                                                                      "artery", "vein")}
    assert x_of["liver"] < x_of["spleen"]  # x grows toward the patient's left (I, P, L)
    assert x_of["vein"] < x_of["artery"]  # IVC right of the aorta
    spine_y = np.argwhere(t == T["cancellous_bone"])[:, 1].mean()
    liver_y = np.argwhere(t == T["liver"])[:, 1].mean()
    assert liver_y < spine_y  # y grows toward the back
    kid = np.argwhere(tiny_phantom.labels == 1)
    liver_z = np.argwhere(t == T["liver"])[:, 0].mean()
    assert liver_z < kid[:, 0].mean()  # z grows toward the feet


def _real_and_phantom_stats(totalseg, phase):
    ct = io.load_nifti(totalseg / "example_ct_sm.nii.gz")
    seg = io.load_nifti(totalseg / "example_seg.nii.gz", label=True)
    real = phantom.tissue_statistics(ct.array, phantom.real_ct_masks(ct.array, seg.array))
    ph = phantom.make_phantom(0, shape=(60, 128, 128), spacing=ct.spacing, phase=phase)
    return real, phantom.tissue_statistics(ph.image, phantom.phantom_masks(ph))


def test_noncontrast_hu_within_real_ct_ranges(totalseg):
    real, synth = _real_and_phantom_stats(totalseg, "noncontrast")
    assert set(real) == set(phantom.CALIBRATION_MAP)
    for name, r in real.items():
        s = synth[name]
        assert r["p5"] <= s["mean"] <= r["p95"], (name, r, s)
        assert s["sd"] <= 2.5 * r["sd"] + 5, (name, r, s)


def test_enhanced_phases_keep_unenhanced_tissues_on_the_real_ct(totalseg):
    real, synth = _real_and_phantom_stats(totalseg, "nephrographic")
    for name in ("fat", "lung", "air", "gallbladder", "vertebrae", "spinal_canal"):
        assert real[name]["p5"] <= synth[name]["mean"] <= real[name]["p95"], name
    assert synth["kidney"]["mean"] > 120 and synth["aorta"]["mean"] > 120


def test_contrast_phases_enhance_kidney_and_tumour():
    cm = phantom.make_phantom(2, preset="tiny", phase="corticomedullary")
    nc = phantom.make_phantom(2, preset="tiny", phase="noncontrast")
    assert np.array_equal(cm.labels, nc.labels)
    cortex = cm.tissue == T["renal_cortex"]
    assert cm.image[cortex].mean() > nc.image[cortex].mean() + 100
    cyst = ndimage.binary_erosion(cm.labels == 3) if (cm.labels == 3).sum() > 30 else cm.labels == 3
    assert abs(np.median(cm.image[cyst])) < 60  # water density, no enhancement


def _kits_component_ranges(kits_sample):
    rows = list(csv.DictReader((kits_sample / "kits23_segmentation_stats.csv").open()))
    vols, exts = [], []
    for r in rows:
        sp = [float(r[f"sp{a}_mm"]) for a in range(3)]
        for c in ("comp1", "comp2"):
            if int(r[f"{c}_vox"]) > 0 and int(r[f"{c}_ext0"]) > 1:
                vols.append(int(r[f"{c}_vox"]) * np.prod(sp) / 1000)
                exts.append([int(r[f"{c}_ext{a}"]) * sp[a] for a in range(3)])
    vols, exts = np.array(vols), np.array(exts)
    return np.percentile(vols, [1, 99]), np.percentile(exts, [1, 99], axis=0)


@pytest.mark.parametrize("seed", [0, 5])
def test_kidney_sizes_within_kits23_range(kits_sample, seed):
    (v_lo, v_hi), (e_lo, e_hi) = _kits_component_ranges(kits_sample)
    ph = phantom.make_phantom(seed, shape=(100, 160, 160), spacing=(2.5, 2.5, 2.5))
    comp, n = ndimage.label(ph.labels > 0, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(comp.ravel())[1:]
    assert n >= 2
    for i in np.argsort(sizes)[::-1][:2]:
        vol = sizes[i] * np.prod(ph.spacing) / 1000
        assert v_lo <= vol <= v_hi, (vol, v_lo, v_hi)
        idx = np.argwhere(comp == i + 1)
        ext = (idx.max(axis=0) - idx.min(axis=0) + 1) * np.array(ph.spacing)
        assert np.all(ext >= e_lo) and np.all(ext <= e_hi), (ext, e_lo, e_hi)


def test_from_labels_keeps_labels_exactly(cropped_kits_labels):
    labels, spacing = cropped_kits_labels
    ph = phantom.from_labels(labels, spacing, seed=1, phase="corticomedullary")
    assert np.array_equal(ph.labels, labels) and ph.labels is not labels
    assert ph.image.shape == labels.shape and ph.image.dtype == np.int16
    kidney = ndimage.binary_erosion(labels == 1)
    assert ph.image[kidney].mean() > 100  # enhancing parenchyma
    assert np.all(np.isin(ph.tissue[labels == 1], [T["renal_cortex"], T["renal_medulla"]]))
    assert np.all(ph.tissue[labels == 3] == T["cyst"])
    assert not np.isin(ph.tissue[labels == 0], [T["renal_cortex"], T["renal_medulla"],
                                                  T["cyst"]]).any()
    body = ph.image > -500
    assert body.mean() > 0.5  # a body surrounds the kidneys
    with pytest.raises(ValueError, match="0..3"):
        phantom.from_labels(np.full((4, 4, 4), 5), (1, 1, 1))


def test_write_case_kits_layout(tiny_phantom, tmp_path):
    case_dir = phantom.write_case(tiny_phantom, tmp_path / "case_00007")
    case = io.load_case(case_dir)
    assert case.image.file_axcodes == ("I", "P", "L")
    assert np.array_equal(case.image.array, tiny_phantom.image)
    assert np.array_equal(case.label.array, tiny_phantom.labels)
    assert case.image.spacing == pytest.approx(tiny_phantom.spacing, abs=1e-5)
    assert nib.load(str(case_dir / "imaging.nii.gz")).get_data_dtype() == np.int16
    with pytest.raises(FileExistsError, match="imaging.nii.gz"):
        phantom.write_case(tiny_phantom, case_dir)
    phantom.write_case(tiny_phantom, case_dir, overwrite=True)


def test_default_noise_grows_as_voxels_shrink():
    assert phantom.default_noise_hu((3, 3, 3)) == pytest.approx(11.0)
    assert phantom.default_noise_hu((0.5, 0.7, 0.7)) > phantom.default_noise_hu((5, 0.7, 0.7))


# --- the varied appearance ----------------------------------------------------------------------

_ORGANS = [T["liver"], T["spleen"]]

def test_varied_keeps_the_anatomy_and_is_seeded():
    classic = phantom.make_phantom(5, preset="tiny")
    a = phantom.make_phantom(5, preset="tiny", appearance="varied")
    b = phantom.make_phantom(5, preset="tiny", appearance="varied")
    assert a.appearance == "varied" and classic.appearance == "classic"
    assert np.array_equal(a.labels, classic.labels)       # same seed, same anatomy
    assert not np.array_equal(a.image, classic.image)     # another look
    assert np.array_equal(a.image, b.image) and a.phase == b.phase and a.noise_hu == b.noise_hu


def test_varied_draws_every_phase_and_noncontrast_kidney_like_the_real_ct():
    phases, kidney_nc = set(), []
    for seed in range(12):
        ph = phantom.make_phantom(seed, preset="tiny", appearance="varied")
        phases.add(ph.phase)
        if ph.phase == "noncontrast":
            inner = ndimage.binary_erosion(np.isin(ph.tissue, [T["renal_cortex"], T["renal_medulla"]]))
            kidney_nc.append(float(ph.image[inner].mean()))
    assert phases == set(phantom.PHASES)
    # the real non-contrast CT (data/totalseg_example) reads 12-30 HU over its kidneys
    assert kidney_nc and all(5 <= v <= 45 for v in kidney_nc), kidney_nc


def test_varied_lesions_get_tissues_of_their_own():
    """Each tumour and cyst gets its own tissue id (>= LESION_ID0) whose label is its class; the
    phantom's labels still follow the tissues."""
    from kidney.phantom.appearance import LESION_ID0

    ph = phantom.make_phantom(2, preset="tiny", appearance="varied", n_tumours=2, n_cysts=2)
    own = np.unique(ph.tissue[ph.tissue >= LESION_ID0])
    assert len(own) >= 3
    for t in own:
        assert set(np.unique(ph.labels[ph.tissue == t])) <= {2, 3}
    assert set(np.unique(ph.labels)) == {0, 1, 2, 3}


def test_varied_from_labels_keeps_labels_and_differs_by_phase(cropped_kits_labels):
    lab, sp = cropped_kits_labels
    lab, sp = lab[:, ::2, ::2], (sp[0], 2 * sp[1], 2 * sp[2])
    nc = phantom.from_labels(lab, sp, 3, phase="noncontrast", appearance="varied")
    ne = phantom.from_labels(lab, sp, 3, phase="nephrographic", appearance="varied")
    organs = phantom.from_labels(lab, sp, 3, phase="noncontrast", appearance="varied-organs")
    assert np.array_equal(nc.labels, lab) and np.array_equal(ne.labels, lab) and np.array_equal(organs.labels, lab)
    assert np.isin(organs.tissue[organs.tissue != nc.tissue], _ORGANS).all()
    kid = ndimage.binary_erosion(lab == 1)
    assert ne.image[kid].mean() > nc.image[kid].mean() + 60   # the kidney enhances


# --- varied-organs: the liver and the spleen beside the kidneys drawn per scan --------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_varied_organs_changes_only_the_liver_and_the_spleen(seed):
    varied = phantom.make_phantom(seed, preset="tiny", appearance="varied")
    a = phantom.make_phantom(seed, preset="tiny", appearance="varied-organs")
    b = phantom.make_phantom(seed, preset="tiny", appearance="varied-organs")
    assert a.appearance == "varied-organs" and varied.appearance == "varied"
    assert np.array_equal(a.image, b.image) and np.array_equal(a.tissue, b.tissue)   # seeded
    assert np.array_equal(a.labels, varied.labels) and a.phase == varied.phase       # same scan otherwise
    changed = a.tissue != varied.tissue
    assert np.isin(a.tissue[changed], _ORGANS).all()     # the lobes are painted over fat only
    organ = np.isin(a.tissue, _ORGANS) | np.isin(varied.tissue, _ORGANS)
    near = ndimage.binary_dilation(organ, iterations=5)   # the point spread reaches 4 sigma (<= 4 voxels)
    assert not (a.image != varied.image)[~near].any()


def test_varied_organs_puts_lobes_beside_the_kidneys_and_varies_the_liver():
    from kidney.phantom.body import _kidney_centre

    beside, liver_hu = [], []
    for seed in range(8):
        ph = phantom.make_phantom(seed, preset="tiny", appearance="varied-organs", phase="noncontrast")
        ref = phantom.make_phantom(seed, preset="tiny", appearance="varied", phase="noncontrast")
        zc, yc, xc = (_kidney_centre(ph.anatomy, "right") / ph.spacing).astype(int)
        box = (slice(zc - 3, zc + 4), slice(yc - 15, yc + 16), slice(max(0, xc - 20), xc))
        beside.append(int((ph.tissue[box] == T["liver"]).sum() - (ref.tissue[box] == T["liver"]).sum()))
        inner = ndimage.binary_erosion(ph.tissue == T["liver"], iterations=2)
        liver_hu.append(float(ph.image[inner].mean()))
    assert sum(b > 0 for b in beside) >= 3, beside        # drawn in 70 % of scans
    assert min(beside) >= 0
    assert max(liver_hu) - min(liver_hu) > 15 and 10 < min(liver_hu) and max(liver_hu) < 75, liver_hu


# --- varied-texture: the soft organs uneven at a coarse scale ------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_varied_texture_changes_only_the_hu_of_soft_organs(seed):
    organs = phantom.make_phantom(seed, preset="tiny", appearance="varied-organs")
    a = phantom.make_phantom(seed, preset="tiny", appearance="varied-texture")
    b = phantom.make_phantom(seed, preset="tiny", appearance="varied-texture")
    assert a.appearance == "varied-texture"
    assert np.array_equal(a.image, b.image)                                   # seeded
    assert np.array_equal(a.tissue, organs.tissue) and np.array_equal(a.labels, organs.labels)
    assert a.phase == organs.phase
    soft = np.isin(a.tissue, [T[n] for n in ("liver", "spleen", "muscle", "pancreas", "bowel_wall",
                                              "renal_cortex", "renal_medulla")])
    near = ndimage.binary_dilation(soft, iterations=5)    # the point spread reaches 4 sigma (<= 4 voxels)
    diff = a.image != organs.image
    assert diff[soft].mean() > 0.3 and not diff[~near].any()


def test_varied_texture_keeps_the_liver_alike_over_centimetres():
    """The coarse field's point: liver HU correlated at 12 mm (about 0 without it; the real CT: 0.20)."""
    r = {a: [phantom.texture_correlation(ph.image, ph.tissue == T["liver"])[4]
             for ph in (phantom.make_phantom(s, shape=(70, 128, 128), spacing=(3.0, 3.0, 3.0),
                                             phase="noncontrast", appearance=a) for s in range(5))]
         for a in ("varied-organs", "varied-texture")}
    assert max(abs(v) for v in r["varied-organs"]) < 0.05, r
    assert np.mean(r["varied-texture"]) > 0.08, r


# --- varied-fascia: septa, renal fascia and small vessels in the fat -------------------------------

_FATS = (T["visceral_fat"], T["subcutaneous_fat"])


def _fascia_twin_check(texture, fascia):
    """``fascia`` (varied-fascia) differs from its ``varied-texture`` twin only in the fat: same
    labels and phase, and every changed tissue voxel was fat and is now septa or a vessel."""
    assert fascia.appearance == "varied-fascia" and fascia.phase == texture.phase
    assert np.array_equal(fascia.labels, texture.labels)
    septa = phantom.appearance.varied_look(fascia.seed, fascia.phase, fascia=True).fascia.tissue
    lesion = texture.tissue >= phantom.appearance.LESION_ID0  # ids shift by one: septa take the first
    changed = (fascia.tissue != texture.tissue) & ~lesion
    assert changed.any()
    assert np.isin(texture.tissue[changed], _FATS).all()
    assert np.isin(fascia.tissue[changed], [septa, T["vein"]]).all()
    return changed


@pytest.mark.parametrize("seed", [0, 3])
def test_varied_fascia_paints_only_the_fat_and_is_seeded(seed):
    texture = phantom.make_phantom(seed, preset="tiny", appearance="varied-texture", phase="noncontrast")
    a = phantom.make_phantom(seed, preset="tiny", appearance="varied-fascia", phase="noncontrast")
    b = phantom.make_phantom(seed, preset="tiny", appearance="varied-fascia", phase="noncontrast")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.tissue, b.tissue)
    _fascia_twin_check(texture, a)


def test_varied_fascia_from_labels_draws_the_renal_fascia_outside_the_kidney(cropped_kits_labels):
    lab, sp = cropped_kits_labels
    lab, sp = lab[:, ::2, ::2], (sp[0], 2 * sp[1], 2 * sp[2])
    seed = next(s for s in range(20)       # a scan that draws the renal fascia (80 % do)
                if phantom.appearance.varied_look(s, "noncontrast", fascia=True).fascia.gerota_mm)
    fascia = phantom.appearance.varied_look(seed, "noncontrast", fascia=True).fascia
    texture = phantom.from_labels(lab, sp, seed, phase="noncontrast", appearance="varied-texture")
    ph = phantom.from_labels(lab, sp, seed, phase="noncontrast", appearance="varied-fascia")
    assert np.array_equal(ph.labels, lab)
    _fascia_twin_check(texture, ph)
    dist = ndimage.distance_transform_edt(lab == 0, sampling=sp)
    septa = ph.tissue == fascia.tissue
    shell = (dist > fascia.gerota_mm) & (dist <= fascia.gerota_mm + fascia.gerota_thick_mm)
    away = (dist > fascia.gerota_mm + fascia.gerota_thick_mm + 3) & (dist < 40)
    fat_or_septa = np.isin(texture.tissue, _FATS)
    # the shell is mostly drawn (50-100 % kept), the fat away from it only holds the septa (4-16 %)
    assert septa[shell & fat_or_septa].mean() > septa[away & fat_or_septa].mean() + 0.2


# --- varied-fat: the fat uneven at a coarse scale ---------------------------------------------------

@pytest.mark.parametrize("seed", [0, 3])
def test_varied_fat_changes_only_the_fat_s_hu_and_is_seeded(seed):
    """``varied-fat`` is its ``varied-fascia`` twin with the coarse field added to the fat: the same
    labels and tissue map, the same HU wherever no fat lies within reach of the point spread, and
    the fat's HU shifted by a smooth field (neighbouring fat voxels shifted alike)."""
    fascia = phantom.make_phantom(seed, preset="tiny", appearance="varied-fascia", phase="noncontrast")
    a = phantom.make_phantom(seed, preset="tiny", appearance="varied-fat", phase="noncontrast")
    b = phantom.make_phantom(seed, preset="tiny", appearance="varied-fat", phase="noncontrast")
    assert a.appearance == "varied-fat" and np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, fascia.labels) and np.array_equal(a.tissue, fascia.tissue)
    fat = np.isin(a.tissue, _FATS)
    diff = a.image.astype(np.float64) - fascia.image
    far = ndimage.distance_transform_edt(~fat) > 5     # beyond the point spread's reach (4 sigma)
    assert np.all(diff[far] == 0)
    inner = ndimage.binary_erosion(fat, iterations=2)
    assert np.abs(diff[inner]).mean() > 1.0
    # smooth: the shift at a fat voxel and at its in-plane neighbour agree far better than noise would
    pair = inner[:, :, :-1] & inner[:, :, 1:]
    assert np.corrcoef(diff[:, :, :-1][pair], diff[:, :, 1:][pair])[0, 1] > 0.8


def test_fat_detail_counts_soft_tissue_in_the_fat():
    hu = np.full((6, 40, 40), -100.0, np.float32)
    kidney = np.zeros(hu.shape, bool)
    kidney[:, 18:22, 18:22] = True
    hu[kidney] = 30
    hu[:, 5, :] = 10            # a septum, one voxel thick, in [-30, 20)
    hu[:, 30, 3:10] = 50        # a short vessel, in [20, 100)
    r = phantom.fat_detail(hu, kidney, (3.0, 1.0, 1.0), reach_mm=100)
    n = r["n"]
    assert n == (~kidney).sum()       # every voxel around the 4 x 4 kidney has a fat 5 x 5 median
    assert r["[-30, 20)"] == pytest.approx(6 * 40 / n)
    assert r["[20, 100)"] == pytest.approx(6 * 7 / n)
    assert r["[-30, inf)"] == pytest.approx(6 * 47 / n)
    assert r["[-60, -30)"] == 0


def test_unknown_appearance_is_refused():
    with pytest.raises(ValueError, match="appearance"):
        phantom.make_phantom(0, preset="tiny", appearance="glossy")


def _outside_shares(ph):
    """The share of each lesion's 6-connected rim that is background — computed here on its own, as
    an oracle independent of scripts/lesion_contrast.py's ``outside_share``."""
    comps, n = ndimage.label(ph.labels >= 2, structure=np.ones((3, 3, 3)))
    rims = [ndimage.binary_dilation(comps == i) & (comps != i) for i in range(1, n + 1)]
    return [float(np.mean(ph.labels[rim] == 0)) for rim in rims]


def test_lesion_depth_real_draws_lesions_deeper_and_nothing_else():
    """lesion_depth='real' moves the drawn lesions into the kidney (less of their rim on background)
    and leaves the rest of the phantom, and the default, as they were; the manifest says so."""
    classic, real = [], []
    for seed in range(8):
        a = phantom.make_phantom(seed, preset="tiny")
        assert np.array_equal(a.image, phantom.make_phantom(seed, preset="tiny", lesion_depth="classic").image)
        b = phantom.make_phantom(seed, preset="tiny", lesion_depth="real")
        assert a.phase == b.phase and a.spacing == b.spacing and b.lesion_depth == "real"
        assert a.anatomy.kidneys[0].centre == b.anatomy.kidneys[0].centre
        assert [l.kind for l in a.anatomy.lesions] == [l.kind for l in b.anatomy.lesions]
        classic += _outside_shares(a)
        real += _outside_shares(b)
    assert np.mean(real) < np.mean(classic) - 0.1
    assert np.mean(np.array(real) < 1 / 3) > np.mean(np.array(classic) < 1 / 3)
    from kidney.phantom.dataset import manifest_row
    assert manifest_row("case_00000", b, "make_phantom")["source"] == "make_phantom lesion_depth=real"
    assert manifest_row("case_00000", a, "make_phantom")["source"] == "make_phantom"
    with pytest.raises(ValueError, match="lesion depth 'shallow'"):
        phantom.make_phantom(0, preset="tiny", lesion_depth="shallow")


def test_training_grid_is_coarse_and_never_finer_than_the_source():
    coarse = 0
    for seed in range(40):
        g = phantom.training_grid(seed, (0.5, 0.7, 0.7))
        assert g[0] in (2.0, 2.5, 3.0, 5.0) and g[1] == g[2]
        assert 1.1 <= g[1] <= 1.6 or 2.0 <= g[1] <= 3.2
        coarse += g[1] >= 2.0
        g = phantom.training_grid(seed, (5.0, 3.5, 3.5))
        assert g == (5.0, 3.5, 3.5)
    assert 4 <= coarse <= 24   # about 30 % of the grids are the coarse in-plane kind
    assert phantom.training_grid(4, (1, 1, 1)) == phantom.training_grid(4, (1, 1, 1))
