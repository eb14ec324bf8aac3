"""kidney.postprocess (keep the largest foreground components), its place in the Segmenter, the
setting stored with the stage-2 weights, and scripts/choose_postprocess.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from kidney import cli
from kidney.model import KidneyNet, read_weights, save_weights
from kidney.pipeline import Segmenter
from kidney.postprocess import check_keep_components, keep_largest_components

REPO = Path(__file__).resolve().parents[2]


def _three_parts():
    """Foreground parts of 12 (labels 1 and 2), 8 (label 1) and 1 (label 3) voxels."""
    a = np.zeros((6, 8, 8), np.uint8)
    a[0:2, 0:2, 0:3] = 1
    a[0:2, 0:2, 2] = 2            # a tumour inside the first part
    a[4:6, 5:7, 5:7] = 1
    a[5, 0, 7] = 3
    return a


def test_keeps_the_largest_parts_with_their_labels():
    a = _three_parts()
    out = keep_largest_components(a, 2)
    expect = a.copy()
    expect[5, 0, 7] = 0
    assert np.array_equal(out, expect) and out.dtype == a.dtype
    one = keep_largest_components(a, 1)
    assert np.count_nonzero(one) == 12 and set(np.unique(one)) == {0, 1, 2}
    assert np.array_equal(keep_largest_components(a, 3), a)


@pytest.mark.parametrize("n", [None, 0])
def test_none_or_zero_keeps_everything_as_a_copy(n):
    a = _three_parts()
    out = keep_largest_components(a, n)
    assert np.array_equal(out, a) and out is not a


def test_parts_touching_at_a_corner_are_one_part():
    a = np.zeros((4, 4, 4), np.uint8)
    a[0, 0, 0] = a[1, 1, 1] = a[2, 2, 2] = 1
    a[0, 3, 3] = 2  # touches nothing
    assert np.array_equal(keep_largest_components(a, 1), np.where(a == 2, 0, a))


def test_equal_sizes_keep_the_first_in_c_order():
    a = np.zeros((4, 4, 4), np.uint8)
    a[3, 3, 3] = 1
    a[0, 0, 0] = 2
    out = keep_largest_components(a, 1)
    assert out[0, 0, 0] == 2 and out[3, 3, 3] == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="whole number >= 0"):
        check_keep_components(bad)
    with pytest.raises(ValueError, match="whole number"):
        keep_largest_components(_three_parts(), bad)


def test_needs_a_3d_map():
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        keep_largest_components(np.zeros((4, 4), np.uint8), 1)


# --- in the Segmenter ---------------------------------------------------------------------------

def _segmenter(keep=None, meta2=None):
    return Segmenter((KidneyNet("tiny", seed=1), {"stage": 1, "spacing_mm": 8.0}),
                     (KidneyNet("tiny", seed=2), {"stage": 2, "spacing_mm": 4.0, **(meta2 or {})}),
                     keep_components=keep)


def test_segmenter_applies_it_to_the_label_map(tiny_phantom):
    img, sp = tiny_phantom.image, tiny_phantom.spacing
    everything = _segmenter(0).segment(img, sp)
    _, parts = ndimage.label(everything > 0, structure=np.ones((3, 3, 3)))
    assert parts > 1, "the random network should leave several parts for this test to mean anything"
    assert np.array_equal(_segmenter(1).segment(img, sp), keep_largest_components(everything, 1))


def test_setting_comes_from_the_stage2_weights_unless_overridden(tiny_phantom):
    img, sp = tiny_phantom.image, tiny_phantom.spacing
    assert _segmenter().keep_components is None
    stored = _segmenter(meta2={"keep_components": 1})
    assert stored.keep_components == 1
    assert np.array_equal(stored.segment(img, sp), _segmenter(1).segment(img, sp))
    assert _segmenter(0, meta2={"keep_components": 1}).keep_components is None  # 0: keep all
    with pytest.raises(ValueError, match="keep_components in the metadata"):
        _segmenter(meta2={"keep_components": -2})


def test_cli_option_overrides_the_weights(tmp_path, tiny_phantom, capsys):
    w = tmp_path / "w"
    save_weights(KidneyNet("tiny", seed=1), w / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), w / "stage2_tiny.npz",
                 {"stage": 2, "spacing_mm": 4.0, "keep_components": 1})
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(tiny_phantom.image.astype(np.int16), np.diag([*tiny_phantom.spacing[::-1], 1.0])), img)
    outs = {}
    for name, extra in (("stored", []), ("all", ["--keep-components", "0"])):
        outs[name] = tmp_path / f"{name}.nii.gz"
        assert cli.main(["segment", str(img), "-o", str(outs[name]), "--weights", str(w), "--quiet", *extra]) == 0
    stored, every = (np.asarray(nib.load(outs[k]).dataobj) for k in ("stored", "all"))
    assert np.array_equal(stored, keep_largest_components(every, 1)) and not np.array_equal(stored, every)
    capsys.readouterr()
    assert cli.main(["segment", str(img), "-o", str(tmp_path / "x.nii.gz"), "--weights", str(w),
                     "--keep-components", "-1"]) != 0
    assert "--keep-components must be a whole number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


# --- choosing it on validation ------------------------------------------------------------------

def _case(data: Path, pred: Path, name: str, truth: np.ndarray, predicted: np.ndarray) -> None:
    (data / name).mkdir(parents=True)
    nib.save(nib.Nifti1Image(truth, np.eye(4)), data / name / "segmentation.nii.gz")
    pred.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(predicted, np.eye(4)), pred / f"{name}.nii.gz")


def test_choose_postprocess_picks_on_validation_and_writes_the_weights(tmp_path):
    data, pred = tmp_path / "val", tmp_path / "pred"
    truth = _three_parts()
    truth[5, 0, 7] = 0
    _case(data, pred, "case_00000", truth, _three_parts())   # a stray voxel: keeping 2 is better
    _case(data, pred, "case_00001", truth, truth)            # exact: every candidate ties
    w = tmp_path / "stage2.npz"
    save_weights(KidneyNet("tiny", seed=2), w, {"stage": 2, "spacing_mm": 4.0})
    before, _ = read_weights(w)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "choose_postprocess.py"), f"{pred}:{data}",
                          "--candidates", "0,1,2", "--write", str(w)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "chosen: keep 2 components" in run.stdout
    # keeping 1 removes each case's second kidney (8 of 20 true voxels): the worst case is shown
    assert "keep 1: largest loss of kidney+masses Dice on one case against keeping all 0.2500; " \
           "cases losing more than 0.05: 2" in run.stdout
    assert "keep 2: largest loss of kidney+masses Dice on one case against keeping all 0.0000; " \
           "cases losing more than 0.05: 0" in run.stdout
    after, meta = read_weights(w)
    assert meta["keep_components"] == 2 and meta["stage"] == 2
    assert all(np.array_equal(before[k], after[k]) for k in before) and before.keys() == after.keys()


def test_choose_postprocess_prefers_keeping_everything_on_a_tie(tmp_path):
    data, pred = tmp_path / "val", tmp_path / "pred"
    _case(data, pred, "case_00000", _three_parts(), _three_parts())
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "choose_postprocess.py"), f"{pred}:{data}"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "chosen: keep every component" in run.stdout
