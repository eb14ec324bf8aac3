"""Test-time blur: Segmenter(blur_tta=), the setting stored with the stage-2 weights
(scripts/store_settings.py --blur-tta), ensembles, the command line and cohorts."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kidney import phantom
from kidney.model import KidneyNet, WeightsError, read_weights, save_weights
from kidney.pipeline import Segmenter, check_blur_tta
from kidney.roi import crop_roi
from kidney.sparsify import STAGE2, in_window


@pytest.fixture
def weights(tmp_path):
    save_weights(KidneyNet("tiny", seed=1), tmp_path / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), tmp_path / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    return tmp_path


@pytest.fixture(scope="module")
def case():
    return phantom.make_phantom(seed=3, preset="tiny")


def _stage2_and_roi(seg, case):
    res = seg.segment(case.image, case.spacing, details=True)
    assert res.rois, "the tiny phantom should give the tiny stage 1 a ROI"
    return res.rois[0]


def test_sigmas_are_checked_and_named():
    assert check_blur_tta([0, 1]) == (0.0, 1.0)
    assert check_blur_tta(0.5) == (0.5,)
    for bad, message in (([], "at least one"), ([0, -1], ">= 0"), ([0, float("nan")], ">= 0"),
                         (["x"], "takes σ values"), ([1, 1.0], "repeated")):
        with pytest.raises(ValueError, match=message):
            check_blur_tta(bad, "blur_tta")


def test_as_is_is_the_default_and_the_same_bits(weights, case):
    plain = Segmenter(weights_dir=weights)
    assert plain.blur_tta == (0.0,)
    given = Segmenter(weights_dir=weights, blur_tta=[0])
    a, b = (s.segment(case.image, case.spacing, probabilities=True) for s in (plain, given))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_each_pass_is_the_crop_blurred_read_at_the_as_is_sites(weights, case):
    """The mean of the passes equals, site for site, the mean of the network on each crop blurred by
    hand (scipy's Gaussian, values clipped into the window), read at the as-is crop's active sites."""
    seg = Segmenter(weights_dir=weights, blur_tta=(0, 1.0))
    roi = _stage2_and_roi(seg, case)
    got, n = seg.stage2_probabilities(case.image, case.spacing, roi)
    hu, mask, _ = crop_roi(np.asarray(case.image, np.float32), case.spacing, roi)
    active = in_window(hu, STAGE2) & mask
    plain = Segmenter(weights_dir=weights)
    as_is, n0 = plain.probabilities_on_grid(plain.stage2, hu, STAGE2, active)
    blurred = np.clip(ndimage.gaussian_filter(hu, sigma=1.0, mode="nearest"), -300, 500)
    blurred = np.where(active, blurred, hu).astype(np.float32)
    once, n1 = plain.probabilities_on_grid(plain.stage2, blurred, STAGE2, active)
    assert n == n0 == n1 == int(active.sum()) > 0
    np.testing.assert_array_equal(got, (as_is + once) / np.float32(2))
    assert not np.allclose(as_is, once)  # the blur changes what the network reads
    assert (got[~active] == 0).all()


def test_stored_setting_is_the_default_overridable_and_ensembles_agree(weights, case, capsys, load_script):
    s2 = weights / "stage2_tiny.npz"
    before, _ = read_weights(s2)
    store = load_script("store_settings")
    assert store.main([str(s2), "--blur-tta", "0,1"]) == 0
    assert "blur_tta = [0.0, 1.0]" in capsys.readouterr().out
    after, meta = read_weights(s2)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert meta["blur_tta"] == [0.0, 1.0]
    stored = Segmenter(weights_dir=weights)
    assert stored.blur_tta == (0.0, 1.0)
    assert Segmenter(weights_dir=weights, blur_tta=[0]).blur_tta == (0.0,)
    by_hand = Segmenter(weights / "stage1_tiny.npz", s2, blur_tta=(0, 1))
    np.testing.assert_array_equal(stored.segment(case.image, case.spacing),
                                  by_hand.segment(case.image, case.spacing))
    other = weights / "stage2_other.npz"
    save_weights(KidneyNet("tiny", seed=5), other, {"stage": 2, "spacing_mm": 4.0})
    with pytest.raises(WeightsError, match="different blur_tta settings"):
        Segmenter(weights / "stage1_tiny.npz", [s2, other])
    # a bad stored value is named with the file; the script refuses bad values and stage-1 files
    save_weights(KidneyNet("tiny", seed=5), other, {"stage": 2, "spacing_mm": 4.0, "blur_tta": [-1]})
    with pytest.raises(ValueError, match="blur_tta in the metadata of .*stage2_other.npz"):
        Segmenter(weights / "stage1_tiny.npz", other)
    for argv, message in (([str(s2), "--blur-tta", "0,-2"], ">= 0"),
                          ([str(s2)], "give --blur-tta, --antialias or --combine-readings"),
                          ([str(weights / "stage1_tiny.npz"), "--blur-tta", "1"], "stage-1 weights")):
        with pytest.raises(SystemExit):
            store.main(argv)
        assert message in capsys.readouterr().err


def test_command_line_and_cohort_carry_it(weights, case, tmp_path, capsys):
    from kidney import cli, cohort, io
    img = tmp_path / "ct.nii.gz"
    io.save_array(case.image.astype(np.int16), np.diag([*case.spacing[::-1], 1.0]), img)
    out = tmp_path / "out.nii.gz"
    assert cli.main(["segment", str(img), "-o", str(out), "--weights", str(weights), "--quiet",
                     "--blur-tta", "0,1.5"]) == 0
    by_hand = Segmenter(weights_dir=weights, blur_tta=(0, 1.5))
    np.testing.assert_array_equal(io.load_nifti(out, label=True).array,
                                  by_hand.segment(io.load_nifti(img)).astype(np.uint8))
    capsys.readouterr()
    bad = ["segment", str(img), "-o", str(tmp_path / "x.nii.gz"), "--weights", str(weights), "--blur-tta"]
    assert cli.main(bad + ["0,-1"]) != 0                 # a number out of range: named, nothing written
    assert "--blur-tta: every σ must be a finite number >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):                      # not numbers: argparse's usage error
        cli.main(bad + ["a,b"])
    assert "takes comma-separated σ values" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()
    runs = [cohort.Weights.from_dir(weights, **k) for k in ({}, {"blur_tta": (0.0, 1.0)}, {"blur_tta": (1.0,)})]
    assert len({r.fingerprint() for r in runs}) == 3   # a resumed run never mixes settings
    assert runs[1].load().blur_tta == (0.0, 1.0)
