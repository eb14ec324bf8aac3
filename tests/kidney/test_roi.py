"""kidney.roi: the ROI rule (docs/design.md, ROI rule) on constructed stage-1 outputs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kidney import io
from kidney.roi import RoiConfig, ball, component_masks, crop_box, find_rois, paste_probabilities, resample_box


def _blob(shape, lo, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
    return m


def test_ball_has_diameter_11():
    b = ball(11)
    assert b.shape == (11, 11, 11)
    c = 5
    assert b[c, c, 0] and b[c, c, 10] and b[c + 3, c + 3, c + 2] and not b[c + 3, c + 3, c + 3]


def test_threshold_and_small_component_removal():
    shape = (40, 40, 40)
    prob = np.zeros(shape, np.float32)
    prob[_blob(shape, (2, 2, 2), (5, 5, 2))] = 0.1      # 50 voxels at exactly the threshold: kept
    prob[_blob(shape, (2, 20, 2), (7, 7, 1))] = 0.5     # 49 voxels: dropped (< 50)
    prob[_blob(shape, (25, 25, 25), (6, 6, 6))] = 0.099  # below threshold: dropped
    comps = component_masks(prob, 1.99)
    assert len(comps) == 1
    expected = ndimage.binary_dilation(_blob(shape, (2, 2, 2), (5, 5, 2)), structure=ball(11))
    assert np.array_equal(comps[0], expected)


def test_26_connectivity_and_each_component_dilated_alone():
    shape = (60, 30, 30)
    a = _blob(shape, (5, 5, 5), (4, 4, 4))
    diag = _blob(shape, (9, 9, 9), (4, 4, 4))  # touches a only at a corner: 26-connected
    far = _blob(shape, (40, 5, 5), (4, 4, 4))
    comps = component_masks((a | diag | far).astype(np.float32), 1.99)
    assert len(comps) == 2  # a+diag (128 voxels) first, then far (64)
    assert comps[0][10, 10, 10] and not comps[0][45, 7, 7]
    assert comps[1][45, 7, 7] and not comps[1][10, 10, 10]


def test_crop_box_margins_and_clipping():
    shape1 = (50, 100, 100)
    extent = [n * 1.99 for n in shape1]
    comp = _blob(shape1, (20, 40, 30), (10, 20, 15))
    lo, hi, grid2 = crop_box(comp, 1.99, extent, 0.78)
    assert grid2 == tuple(int(round(e / 0.78)) for e in extent)
    a, b = np.array([20, 40, 30]), np.array([30, 60, 45])
    assert lo == tuple(np.floor(a * 1.99 / 0.78).astype(int) - [10, 35, 35])
    assert hi == tuple(np.ceil(b * 1.99 / 0.78).astype(int) + [10, 35, 35])
    edge = _blob(shape1, (0, 90, 0), (5, 10, 5))  # at the scan border: clipped
    lo, hi, grid2 = crop_box(edge, 1.99, extent, 0.78)
    assert lo[0] == 0 and lo[2] == 0 and hi[1] == grid2[1]


def test_find_rois_at_paper_spacing_and_scaled_config():
    shape1 = (30, 40, 40)
    prob = np.zeros(shape1, np.float32)
    prob[_blob(shape1, (10, 10, 10), (5, 5, 5))] = 0.9
    rois = find_rois(prob, 1.99, [n * 1.99 for n in shape1], 0.78)
    assert len(rois) == 1 and rois[0].voxels1 == 125
    cfg = RoiConfig()
    assert cfg.min_voxels_at(1.99) == 50 and cfg.dilation_diameter_at(1.99) == pytest.approx(11)
    assert cfg.margin_at(0.78) == (10, 35, 35) and cfg.margin_at(1.56) == (5, 18, 18)
    assert cfg.min_voxels_at(3.98) == 6
    assert rois[0].mask2().shape == rois[0].shape


def test_resample_box_equals_resampling_then_slicing():
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((20, 24, 22)).astype(np.float32)
    full = io.resample(arr, (2.0, 1.5, 1.5), 1.0)
    lo, shape = (5, 7, 3), (10, 12, 9)
    box = resample_box(arr, (2.0, 1.5, 1.5), 1.0, lo, shape)
    assert np.allclose(box, full[5:15, 7:19, 3:12], atol=1e-5)


def test_paste_probabilities_max_merges_on_the_scan_grid():
    from kidney.roi import Roi
    out = np.zeros((10, 10, 10, 1), np.float32)
    crop = np.full((4, 4, 4, 1), 0.7, np.float32)
    roi = Roi((2, 2, 2), (6, 6, 6), (10, 10, 10), 1.0, np.zeros((1, 1, 1), bool), 1.0)
    paste_probabilities(out, crop, roi, (1.0, 1.0, 1.0))
    assert out[2:6, 2:6, 2:6].min() == pytest.approx(0.7) and out.sum() == pytest.approx(0.7 * 64)
    paste_probabilities(out, crop * 0.5, roi, (1.0, 1.0, 1.0))  # smaller: max keeps 0.7
    assert out[3, 3, 3, 0] == pytest.approx(0.7)


def test_paste_skip_below_keeps_which_voxels_reach_the_threshold():
    from kidney.roi import Roi
    rng = np.random.default_rng(1)
    spacing, th = (1.3, 0.9, 0.9), 0.5
    rois = [Roi((2, 3, 1), (12, 15, 14), (20, 24, 24), 1.0, np.zeros((1, 1, 1), bool), 1.0),
            Roi((6, 8, 5), (16, 20, 20), (20, 24, 24), 1.0, np.zeros((1, 1, 1), bool), 1.0)]
    full, skipped = (np.zeros((16, 27, 27, 3), np.float32) for _ in range(2))
    for r in rois:
        crop = rng.random(r.shape + (3,)).astype(np.float32)
        crop[..., 1] *= 0.49  # a channel that never reaches the threshold: skipped
        paste_probabilities(full, crop, r, spacing)
        paste_probabilities(skipped, crop, r, spacing, skip_below=th)
    assert (full[..., 1] > 0).any() and not skipped[..., 1].any()
    assert np.array_equal(full >= th, skipped >= th)
    assert np.array_equal(full[..., 0], skipped[..., 0])


def test_scan_box_covers_every_crop_with_a_margin_and_clips():
    from kidney.roi import Roi, scan_box
    mask = np.zeros((1, 1, 1), bool)
    a = Roi((2, 4, 4), (6, 8, 8), (20, 20, 20), 1.0, mask, 1.0)     # crop box in 1 mm stage-2 voxels
    b = Roi((10, 0, 12), (20, 6, 20), (20, 20, 20), 1.0, mask, 1.0)
    lo, hi = scan_box([a, b], (2.0, 1.0, 1.0), (9, 18, 18))         # scan: 2 mm slices, 1 mm in-plane
    assert lo.tolist() == [0, 0, 3] and hi.tolist() == [9, 9, 18]   # z: 1 - 1 = 0 .. 10 + 1 -> 9 clipped
    lo, hi = scan_box([a], (2.0, 1.0, 1.0), (9, 18, 18))
    assert lo.tolist() == [0, 3, 3] and hi.tolist() == [4, 9, 9]
    assert [v.tolist() for v in scan_box([], (1.0, 1.0, 1.0), (5, 5, 5))] == [[0, 0, 0], [0, 0, 0]]
