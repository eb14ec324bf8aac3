"""kidney.metrics: official test vectors, empty-mask rules, brute-force Surface Dice, evaluation."""
from __future__ import annotations

import csv
import itertools
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from kidney import io, metrics

PERTURBATIONS = {
    "identity": lambda s: s.copy(),
    "shift_axis0_by_1": lambda s: np.roll(s, 1, axis=0),
    "shift_axis2_by_2": lambda s: np.roll(s, 2, axis=2),
    "tumour_to_cyst": lambda s: np.where(s == 2, 3, s).astype(s.dtype),
    "masses_to_kidney": lambda s: np.where(s > 1, 1, s).astype(s.dtype),
    "all_background": lambda s: np.zeros_like(s),
}


# --- official values ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def testvectors(kits_sample):
    return json.loads((kits_sample / "metric_testvectors.json").read_text())


@pytest.mark.parametrize("case", ["case_00061", "case_00110"])
def test_reproduces_official_testvectors(kits_sample, testvectors, case):
    vol = io.load_nifti(kits_sample / case / "segmentation.nii.gz", label=True)
    ref, spacing = vol.to_file(vol.array), io.spacing_of(vol.affine)
    expected = testvectors[case]
    assert set(expected) == set(PERTURBATIONS)
    for name, perturb in PERTURBATIONS.items():
        got = metrics.score_case(perturb(ref), ref, spacing)
        for hec, official in metrics.OFFICIAL_HEC_NAMES.items():
            assert got[hec] == pytest.approx(tuple(expected[name][official]), abs=1e-5), (name, hec)


def test_internal_orientation_gives_same_scores(kits_sample):
    vol = io.load_nifti(kits_sample / "case_00110" / "segmentation.nii.gz", label=True)
    pred = np.roll(vol.array, 2, axis=2)
    a = metrics.score_case(pred, vol.array, vol.spacing)
    b = metrics.score_case(vol.to_file(pred), vol.to_file(vol.array), io.spacing_of(vol.affine))
    for hec in a:
        assert a[hec] == pytest.approx(b[hec], abs=1e-12)


# --- rules --------------------------------------------------------------------------------------

def test_empty_mask_rules():
    z = np.zeros((5, 5, 5), np.uint8)
    kidney_only = z.copy()
    kidney_only[1:4, 1:4, 1:4] = 1
    assert metrics.score_case(z, z, (1, 1, 1)) == {h: (1.0, 1.0) for h in metrics.HEC_LABELS}
    s = metrics.score_case(z, kidney_only, (1, 1, 1))
    assert s["kidney"] == (0.0, 0.0)  # reference present, prediction empty
    assert s["masses"] == (1.0, 1.0) and s["tumor"] == (1.0, 1.0)  # both empty
    assert metrics.score_case(kidney_only, z, (1, 1, 1))["kidney"] == (0.0, 0.0)
    assert metrics.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert metrics.surface_dice(z > 0, kidney_only > 0, (1, 1, 1), 1.0) == 0.0


def test_hec_masks_and_tolerances():
    lab = np.array([0, 1, 2, 3])
    assert metrics.hec_mask(lab, "kidney").tolist() == [False, True, True, True]
    assert metrics.hec_mask(lab, "masses").tolist() == [False, False, True, True]
    assert metrics.hec_mask(lab, "tumor").tolist() == [False, False, True, False]
    assert metrics.HEC_TOLERANCE_MM == pytest.approx(
        {"kidney": 1.0331, "masses": 1.1329, "tumor": 1.1498}, abs=1e-4)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(2, 2, 2\).*\(2, 2, 3\)"):
        metrics.score_case(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), (1, 1, 1))


def test_lesion_recall_counts_each_component_and_any_mass_label():
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[1:3, 1:3, 1:3] = 2          # tumour A, 8 voxels
    ref[4, 4, 4] = 2                # tumour B, one voxel apart from A: its own lesion
    ref[7:10, 7:10, 7:10] = 3       # cyst, 27 voxels
    ref[0, 11, 11] = 1              # kidney: not a lesion
    pred = np.zeros_like(ref)
    pred[1:3, 1:3, 1] = 3           # half of A, called a cyst: still found as a mass
    pred[7:10, 7:10, 7:10] = 1      # the cyst called kidney: not found
    got = metrics.lesion_recall(pred, ref, (1.0, 2.0, 0.5))
    assert [(l.label, round(l.volume_ml, 6), l.recall) for l in got] == [
        (2, 0.008, 0.5), (2, 0.001, 0.0), (3, 0.027, 0.0)]
    assert metrics.lesion_recall(ref, ref, (1, 1, 1))[0].recall == 1.0
    with pytest.raises(ValueError, match="shape"):
        metrics.lesion_recall(pred[:-1], ref, (1, 1, 1))


# --- brute force --------------------------------------------------------------------------------

KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])


def _brute_surface(mask, spacing):
    """Surface points (corner indices) and areas by explicit loops over 2x2x2 neighbourhoods."""
    table = metrics.surfel_area_table(spacing)
    n0, n1, n2 = mask.shape
    pts, areas = [], []
    for i, j, k in itertools.product(range(n0 + 1), range(n1 + 1), range(n2 + 1)):
        code = 0
        for a, b, c in itertools.product((0, 1), repeat=3):
            p = (i - 1 + a, j - 1 + b, k - 1 + c)
            if all(0 <= p[d] < mask.shape[d] for d in range(3)) and mask[p]:
                code += int(KERNEL[a, b, c])
        if code not in (0, 255):
            pts.append((i, j, k))
            areas.append(table[code])
    return np.array(pts, float) * np.array(spacing), np.array(areas)


def _brute_surface_dice(ref, pred, spacing, tol):
    p_ref, a_ref = _brute_surface(ref, spacing)
    p_pred, a_pred = _brute_surface(pred, spacing)
    d = np.sqrt(((p_ref[:, None, :] - p_pred[None, :, :]) ** 2).sum(-1))
    ok_ref, ok_pred = d.min(axis=1) <= tol, d.min(axis=0) <= tol
    return (a_ref[ok_ref].sum() + a_pred[ok_pred].sum()) / (a_ref.sum() + a_pred.sum())


@pytest.mark.parametrize("seed", range(6))
def test_surface_dice_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (5, 6, 7)
    spacing = tuple(rng.uniform(0.5, 3.0, size=3))
    ref = ndimage.binary_dilation(rng.random(shape) > 0.85)
    pred = ref ^ (rng.random(shape) > 0.85)
    if not pred.any():
        pred[2, 3, 3] = True
    tol = float(rng.uniform(0.5, 3.0))
    fast = metrics.surface_dice(ref, pred, spacing, tol)
    assert fast == pytest.approx(_brute_surface_dice(ref, pred, spacing, tol), rel=1e-12)


def test_neighbour_codes_equal_correlation_of_cropped_mask():
    rng = np.random.default_rng(1)
    mask = rng.random((6, 5, 7)) > 0.5
    padded = np.zeros((7, 6, 8), np.uint8)  # DeepMind: one zero voxel on the high side
    padded[:-1, :-1, :-1] = mask
    expected = ndimage.correlate(padded, KERNEL, mode="constant", cval=0)
    assert np.array_equal(metrics.neighbour_codes(mask), expected)


def test_surfel_areas_measure_a_sphere():
    r = 20.0
    z, y, x = np.ogrid[-25:26, -25:26, -25:26]
    spacing = (1.0, 1.0, 1.0)
    sphere = z ** 2 + y ** 2 + x ** 2 <= r ** 2
    d = metrics.surface_distances(sphere, sphere, spacing)
    # marching-cubes areas of a binary sphere overestimate the true area by ~8 % (known bias)
    assert 1.0 < d.ref_areas.sum() / (4 * np.pi * r ** 2) < 1.12
    assert np.all(d.ref_to_pred == 0)
    table = metrics.surfel_area_table((2.0, 1.0, 0.5))
    assert table[0] == 0 and table[255] == 0 and np.all(table >= 0)


def test_shift_lowers_surface_dice_only_beyond_tolerance():
    ref = np.zeros((20, 20, 20), bool)
    ref[5:15, 5:15, 5:15] = True
    one = np.roll(ref, 1, axis=0)
    assert metrics.surface_dice(ref, one, (1.0, 1.0, 1.0), 1.0) == pytest.approx(1.0)
    assert metrics.surface_dice(ref, one, (2.0, 1.0, 1.0), 1.0) < 0.9


# --- folder evaluation --------------------------------------------------------------------------

def _case(root, cid, labels, affine=np.eye(4)):
    d = root / cid
    d.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(d / "segmentation.nii.gz"))


def test_evaluate_folder_reports_missing_and_misshaped(tmp_path):
    data, pred = tmp_path / "data", tmp_path / "pred"
    lab = np.zeros((6, 7, 8), np.uint8)
    lab[1:5, 2:6, 2:7] = 1
    lab[2:4, 3:5, 3:5] = 2
    for cid in ("case_00000", "case_00001", "case_00002"):
        _case(data, cid, lab)
    pred.mkdir()
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(pred / "case_00000.nii.gz"))
    nib.save(nib.Nifti1Image(lab[:5], np.eye(4)), str(pred / "case_00002.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(pred / "case_00099.nii.gz"))
    ev = metrics.evaluate_folder(pred, data)
    assert [c.case_id for c in ev.cases] == ["case_00000", "case_00001", "case_00002"]
    assert ev.cases[0].row() == [1.0] * 6 and ev.cases[0].problem is None
    assert "missing prediction" in ev.cases[1].problem
    assert "(5, 7, 8)" in ev.cases[2].problem and "(6, 7, 8)" in ev.cases[2].problem
    assert ev.cases[2].row() == [0.0] * 6
    assert ev.extra_predictions == ["case_00099.nii.gz"]
    out = metrics.write_csv(ev, tmp_path / "evaluation.csv")
    rows = list(csv.reader(out.open()))
    assert tuple(rows[0]) == metrics.CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == ["case_00000", "case_00001", "case_00002", "average"]
    assert float(rows[-1][1]) == pytest.approx(1 / 3, abs=1e-8)


def test_hec_dice_and_lesion_table():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[0, :2, :2] = 1
    ref[1, :2, :2] = 2
    pred = ref.copy()
    pred[1, :2, :2] = 3                                  # the tumour called a cyst: still a mass
    assert metrics.hec_dice(pred, ref) == [1.0, 1.0, 0.0]
    rows = metrics.lesion_table([metrics.Lesion(2, 1.0, 0.4), metrics.Lesion(3, 60.0, 0.5)])
    assert [(name, n, found) for name, n, found, _ in rows] == [
        ("0-2 ml", 1, 0), ("2-10 ml", 0, 0), ("10-50 ml", 0, 0), (">= 50 ml", 1, 1)]
