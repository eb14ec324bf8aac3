"""kidney.sparsify: the window rule, standardisation, masks and the empty outcome."""
from __future__ import annotations

import numpy as np
import pytest

from kidney import io, sparsify
from kidney.sparsify import STAGE1, STAGE2


def test_presets_hold_the_paper_constants():
    assert (STAGE1.spacing_mm, STAGE1.window, STAGE1.mean, STAGE1.std) == (
        1.99, (-53.4, 283.2), 48.10, 62.65)
    assert (STAGE2.spacing_mm, STAGE2.window, STAGE2.mean, STAGE2.std) == (
        0.78, (-300.0, 500.0), 57.80, 81.26)
    assert sparsify.get_preset("stage2") is STAGE2
    with pytest.raises(ValueError, match="stage3"):
        sparsify.get_preset("stage3")


@pytest.mark.parametrize("preset", [STAGE1, STAGE2])
def test_window_rule_is_inclusive_and_features_standardised(preset):
    lo, hi = preset.window
    values = np.array([lo - 0.01, lo, 0.5 * (lo + hi), hi, hi + 0.01, -1000, 1500], np.float32)
    hu = np.zeros((2, 3, 7), np.float32) - 1000
    hu[1, 2] = values
    res = sparsify.sparsify(hu, preset)
    kept = [1, 2, 3]
    assert res.n_active == 3 and not res.empty
    assert res.tensor.coords.dtype == np.int32 and res.tensor.feats.dtype == np.float32
    assert res.tensor.coords.tolist() == [[0, 1, 2, k] for k in kept]
    expected = (values[kept].astype(np.float64) - preset.mean) / preset.std
    assert np.allclose(res.tensor.feats[:, 0], expected, atol=1e-6)
    assert res.active_fraction == pytest.approx(3 / hu.size)
    assert res.tensor.spatial_shape == hu.shape


def test_dense_view_equals_standardised_hu_inside_window():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-400, 600, size=(6, 7, 8)).astype(np.float32)
    res = sparsify.sparsify(hu, "stage1", batch_index=2)
    dense = res.tensor.dense()
    assert dense.shape == (3, 1, 6, 7, 8)
    keep = sparsify.in_window(hu, STAGE1)
    assert np.allclose(dense[2, 0][keep], sparsify.standardise(hu, STAGE1)[keep])
    assert np.all(dense[2, 0][~keep] == 0) and np.all(dense[:2] == 0)
    assert np.all(res.tensor.coords[:, 0] == 2)


def test_mask_restricts_and_is_checked():
    hu = np.full((4, 4, 4), 40.0, np.float32)
    mask = np.zeros(hu.shape, bool)
    mask[1:3, 1:3, 1:3] = True
    res = sparsify.sparsify(hu, STAGE2, mask=mask)
    assert res.n_active == 8 and res.masked
    assert np.all(res.tensor.coords[:, 1:] >= 1) and np.all(res.tensor.coords[:, 1:] <= 2)
    with pytest.raises(ValueError, match=r"mask shape \(4, 4\)"):
        sparsify.sparsify(hu, STAGE2, mask=np.ones((4, 4), bool))


def test_empty_result_is_a_typed_outcome():
    air = np.full((3, 4, 5), -1000.0, np.float32)
    res = sparsify.sparsify(air, STAGE1)
    assert res.empty and res.n_active == 0 and res.active_fraction == 0.0
    assert len(res.tensor) == 0 and res.tensor.spatial_shape == (3, 4, 5)
    with pytest.raises(sparsify.EmptyVolumeError, match=r"\(3, 4, 5\).*stage1.*-53.4"):
        res.require()
    inside = np.full((3, 4, 5), 40.0, np.float32)
    masked = sparsify.sparsify(inside, STAGE1, mask=np.zeros(inside.shape, bool))
    assert masked.empty
    with pytest.raises(ValueError, match="inside the mask"):
        masked.require()
    assert isinstance(sparsify.EmptyVolumeError("x"), ValueError)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        sparsify.sparsify(np.zeros((4, 4)), STAGE1)
    hu = np.zeros((2, 2, 2), np.float32)
    hu[1, 0, 1] = np.inf
    with pytest.raises(ValueError, match=r"non-finite HU inf at index \(1, 0, 1\)"):
        sparsify.sparsify(hu, STAGE1)


def test_real_ct_active_fractions(totalseg):
    """The fractions listed in data/totalseg_example/README.md (native 3 mm grid)."""
    ct = io.load_nifti(totalseg / "example_ct_sm.nii.gz")
    assert sparsify.sparsify(ct.array, STAGE1).active_fraction == pytest.approx(0.418, abs=1e-3)
    assert sparsify.sparsify(ct.array, STAGE2).active_fraction == pytest.approx(0.623, abs=1e-3)
    iso = io.resample(ct.array, ct.spacing, STAGE1.spacing_mm, order=1)
    res = sparsify.sparsify(iso, STAGE1)
    assert 0.35 < res.active_fraction < 0.5 and res.tensor.spatial_shape == iso.shape
