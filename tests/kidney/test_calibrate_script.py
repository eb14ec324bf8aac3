"""scripts/calibrate_phantom_hu.py --fat-texture: what the fat's autocorrelation says of a CT's kernel."""
from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

from kidney import phantom


def _fat_slab(noise: np.ndarray) -> np.ndarray:
    return (-100.0 + 10.0 * noise).astype(np.float32)


def test_the_measure_tells_a_sharp_kernel_from_a_smooth_one():
    # the same white noise reconstructed two ways: smoothed (a soft kernel) and edge-enhanced
    # (a sharp kernel: the image minus part of its local mean, so neighbours anticorrelate)
    white = np.random.default_rng(0).standard_normal((8, 64, 64))
    smooth = ndimage.gaussian_filter(white, (0, 1, 1))
    sharp = white - 0.9 * ndimage.uniform_filter(white, (1, 3, 3))
    mask = np.ones(white.shape, bool)
    r_white = phantom.texture_correlation(_fat_slab(white), mask, lags=(1, 2), erode=0)
    r_smooth = phantom.texture_correlation(_fat_slab(smooth), mask, lags=(1, 2), erode=0)
    r_sharp = phantom.texture_correlation(_fat_slab(sharp), mask, lags=(1, 2), erode=0)
    assert abs(r_white[1]) < 0.05 and abs(r_white[2]) < 0.05
    assert r_smooth[1] > 0.5
    assert r_sharp[1] < -0.1


def test_fat_texture_table_reads_the_real_ct_and_phantoms(load_script):
    cal = load_script("calibrate_phantom_hu")
    table = cal.fat_texture_table(cal.DEFAULT, seeds=range(2))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| source")]
    assert [r.split(" | ")[0] for r in rows] == ["| real CT", "| varied-texture (mean of 2)",
                                                 "| varied-fascia (mean of 2)", "| varied-fat (mean of 2)"]
    r = {}
    for row in rows:
        values = [float(v) for v in re.findall(r"-?\d+\.\d+", row.split(" | ", 1)[1])]
        assert len(values) == len(cal.FAT_LAGS) and all(-1.0 <= v <= 1.0 for v in values)
        r[row.split(" | ")[0][2:]] = values
    # what varied-fat is drawn for: its fat stays correlated at 12 mm, the fascia twin's does not
    assert r["varied-fat (mean of 2)"][-1] > r["varied-fascia (mean of 2)"][-1] + 0.05
