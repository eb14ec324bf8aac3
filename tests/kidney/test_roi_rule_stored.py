"""A ROI rule stored with the stage-1 weights: kidney.roi.RoiConfig.stored_with, the segmenter's
default, ensembles, and scripts/store_roi_rule.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kidney import phantom
from kidney.model import KidneyNet, WeightsError, read_weights, save_weights
from kidney.pipeline import Segmenter
from kidney.roi import RoiConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def weights(tmp_path):
    save_weights(KidneyNet("tiny", seed=1), tmp_path / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), tmp_path / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    return tmp_path


def test_stored_settings_replace_the_papers_and_bad_ones_are_named():
    paper = RoiConfig()
    assert paper.stored_with({"stage": 1}) is paper
    got = paper.stored_with({"roi_threshold": 0.3, "roi_dilation": 17})
    assert (got.threshold, got.dilation_diameter, got.min_voxels) == (0.3, 17, paper.min_voxels)
    for meta, entry in (({"roi_threshold": 1.0}, "roi_threshold"), ({"roi_threshold": "0.3"}, "roi_threshold"),
                        ({"roi_dilation": 0}, "roi_dilation"), ({"roi_dilation": 11.5}, "roi_dilation"),
                        ({"roi_dilation": True}, "roi_dilation")):
        with pytest.raises(ValueError, match=f"{entry} in the metadata of w.npz must be"):
            paper.stored_with(meta, "in the metadata of w.npz")


def test_segmenter_takes_the_rule_stored_with_stage1_unless_given_one(weights, capsys, load_script):
    store = load_script("store_roi_rule")
    s1 = weights / "stage1_tiny.npz"
    before, _ = read_weights(s1)
    assert Segmenter(weights_dir=weights).roi_config == RoiConfig()
    assert store.main([str(s1), "--threshold", "0.3", "--dilation", "17"]) == 0
    assert "roi_threshold = 0.3, roi_dilation = 17" in capsys.readouterr().out
    after, meta = read_weights(s1)
    assert all(np.array_equal(before[k], after[k]) for k in before) and before.keys() == after.keys()
    assert (meta["roi_threshold"], meta["roi_dilation"]) == (0.3, 17)
    seg = Segmenter(weights_dir=weights)
    assert seg.roi_config == RoiConfig(threshold=0.3, dilation_diameter=17)
    assert Segmenter(weights_dir=weights, roi_config=RoiConfig()).roi_config == RoiConfig()
    # the stored rule segments exactly as the same rule given by hand
    case = phantom.make_phantom(seed=3, preset="tiny")
    by_hand = Segmenter(s1, weights / "stage2_tiny.npz", roi_config=RoiConfig(threshold=0.3, dilation_diameter=17))
    mine, theirs = (sg.segment(case.image, case.spacing, details=True) for sg in (seg, by_hand))
    np.testing.assert_array_equal(mine.labels, theirs.labels)
    assert [(tuple(r.lo), tuple(r.hi)) for r in mine.rois] == [(tuple(r.lo), tuple(r.hi)) for r in theirs.rois]
    # an ensemble whose members store different rules is refused, naming the entry
    other = weights / "stage1_other.npz"
    save_weights(KidneyNet("tiny", seed=4), other, {"stage": 1, "spacing_mm": 8.0})
    with pytest.raises(WeightsError, match="different roi_threshold settings"):
        Segmenter([s1, other], weights / "stage2_tiny.npz")
    assert Segmenter([s1, s1], weights / "stage2_tiny.npz").roi_config.threshold == 0.3


def test_store_script_refuses_bad_values_stage2_files_and_no_setting(weights, capsys, load_script):
    store = load_script("store_roi_rule")
    for argv, message in (([str(weights / "stage1_tiny.npz"), "--threshold", "1.5"], "roi_threshold"),
                          ([str(weights / "stage2_tiny.npz"), "--threshold", "0.2"], "stage-2 weights"),
                          ([str(weights / "missing.npz"), "--dilation", "13"], "does not exist"),
                          ([str(weights / "stage1_tiny.npz")], "give --threshold and/or --dilation")):
        with pytest.raises(SystemExit):
            store.main(argv)
        assert message in capsys.readouterr().err
    assert "roi_threshold" not in read_weights(weights / "stage1_tiny.npz")[1]


def test_one_setting_can_be_overridden_by_argument_cli_and_cohort(weights, tmp_path, capsys, load_script):
    from kidney import cli, cohort, io
    s1 = weights / "stage1_tiny.npz"
    assert load_script("store_roi_rule").main([str(s1), "--threshold", "0.3", "--dilation", "17"]) == 0
    seg = Segmenter(weights_dir=weights, roi_dilation=11)   # the stored threshold, the dilation given
    assert (seg.roi_config.threshold, seg.roi_config.dilation_diameter) == (0.3, 11)
    with pytest.raises(ValueError, match=r"roi_threshold \(given\) must be a number in \(0, 1\)"):
        Segmenter(weights_dir=weights, roi_threshold=0.0)
    # the command line: the same labels as the segmenter with the same rule, and a bad value named
    case = phantom.make_phantom(seed=3, preset="tiny")
    img = tmp_path / "ct.nii.gz"
    io.save_array(case.image.astype(np.int16), np.diag([*case.spacing[::-1], 1.0]), img)
    out = tmp_path / "out.nii.gz"
    assert cli.main(["segment", str(img), "-o", str(out), "--weights", str(weights), "--quiet",
                     "--roi-threshold", "0.05"]) == 0
    by_hand = Segmenter(weights_dir=weights, roi_config=RoiConfig(threshold=0.05, dilation_diameter=17))
    np.testing.assert_array_equal(io.load_nifti(out, label=True).array,
                                  by_hand.segment(io.load_nifti(img)).astype(np.uint8))
    capsys.readouterr()
    assert cli.main(["segment", str(img), "-o", str(tmp_path / "x.nii.gz"), "--weights", str(weights),
                     "--roi-dilation", "0"]) != 0
    assert "roi_dilation on the command line must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()
    # a cohort run carries the override, and its fingerprint tells the settings apart
    runs = [cohort.Weights.from_dir(weights, **k) for k in ({}, {"roi_threshold": 0.3}, {"roi_threshold": 0.2},
                                                              {"roi_dilation": 17})]
    assert len({r.fingerprint() for r in runs}) == 4   # a resumed run never mixes rules
    assert cohort.Weights.from_dir(weights, roi_threshold=0.2).load().roi_config.threshold == 0.2
