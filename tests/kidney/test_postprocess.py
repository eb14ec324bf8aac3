"""kidney.postprocess (keep the largest foreground components, or those touching stage 1's kidneys), its place in the Segmenter, the
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
from kidney.postprocess import check_keep_components, keep_anchored_components, keep_largest_components
from kidney.roi import RoiConfig, at_stage1_centres, cores_on_scan, find_rois, scan_box

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


def test_choose_postprocess_set_stores_a_setting_chosen_elsewhere(tmp_path):
    w = tmp_path / "stage2.npz"
    save_weights(KidneyNet("tiny", seed=2), w, {"stage": 2, "spacing_mm": 4.0})
    before, _ = read_weights(w)
    script = [sys.executable, str(REPO / "scripts" / "choose_postprocess.py")]
    run = subprocess.run(script + ["--set", "stage1", "--write", str(w)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    after, meta = read_weights(w)
    assert meta["keep_components"] == "stage1" and all(np.array_equal(before[k], after[k]) for k in before)
    assert Segmenter((KidneyNet("tiny", seed=1), {"stage": 1, "spacing_mm": 8.0}), w).keep_components == "stage1"
    bad = subprocess.run(script + ["--set", "-1", "--write", str(w)], capture_output=True, text=True)
    assert bad.returncode != 0 and "--set must be a whole number >= 0" in bad.stderr
    alone = subprocess.run(script + ["--set", "stage1"], capture_output=True, text=True)
    assert alone.returncode == 2 and "give --write" in alone.stderr
    assert read_weights(w)[1]["keep_components"] == "stage1"


# --- the parts that touch stage 1's kidneys -------------------------------------------------------

def test_anchored_keeps_the_parts_touching_the_anchor_with_their_labels():
    a = _three_parts()
    anchor = np.zeros(a.shape, bool)
    anchor[5, 6, 6] = True          # inside the 8-voxel part only
    out = keep_anchored_components(a, anchor)
    expect = np.zeros_like(a)
    expect[4:6, 5:7, 5:7] = 1
    assert np.array_equal(out, expect) and out.dtype == a.dtype
    anchor[0, 0, 0] = True          # and the part holding the tumour, whole
    out = keep_anchored_components(a, anchor)
    expect = a.copy()
    expect[5, 0, 7] = 0
    assert np.array_equal(out, expect)
    assert not keep_anchored_components(a, np.zeros(a.shape, bool)).any()
    assert np.array_equal(keep_anchored_components(a, a > 0), a)


def test_anchored_keeps_a_small_part_the_largest_rule_drops():
    a = _three_parts()
    anchor = np.zeros(a.shape, bool)
    anchor[5, 0, 7] = anchor[1, 1, 1] = True   # the 1-voxel part and the 12-voxel part: not the 8
    out = keep_anchored_components(a, anchor)
    assert out[5, 0, 7] == 3 and not out[4:6, 5:7, 5:7].any()
    assert keep_largest_components(a, 2)[5, 0, 7] == 0


def test_anchored_needs_an_anchor_of_the_map_shape():
    with pytest.raises(ValueError, match="anchor of its shape"):
        keep_anchored_components(_three_parts(), np.zeros((6, 8, 7), bool))


def test_stage1_is_a_setting_but_not_a_count():
    assert check_keep_components("stage1") == "stage1"
    with pytest.raises(ValueError, match="keep_anchored_components"):
        keep_largest_components(_three_parts(), "stage1")


def test_segmenter_stage1_setting_keeps_what_touches_stage1_kidneys(tiny_phantom):
    # a stage-1 kidney of one voxel on a part the random stage 2 labels, with a wide dilation: the
    # stage-2 parts in the dilated rim that do not reach that voxel are dropped, the one that does is kept
    img, sp = tiny_phantom.image, tiny_phantom.spacing
    every = _segmenter(0).segment(img, sp)
    z, y, x = np.argwhere(every > 0)[20000]
    prob = np.zeros(tuple(int(np.ceil(n * s / 8.0)) for n, s in zip(img.shape, sp)), np.float32)
    prob[int((z + .5) * sp[0] / 8), int((y + .5) * sp[1] / 8), int((x + .5) * sp[2] / 8)] = 1
    rois = find_rois(prob, 8.0, [n * s for n, s in zip(img.shape, sp)], 4.0, RoiConfig(dilation_diameter=40))
    outs = {}
    for keep in (0, "stage1"):
        outs[keep] = np.zeros(img.shape, np.uint8)
        _segmenter(keep).labels_on_rois(img, sp, rois, outs[keep])
    ulo, uhi = scan_box(rois, sp, img.shape)
    box = tuple(slice(a, b) for a, b in zip(ulo, uhi))
    expect = outs[0].copy()
    expect[box] = keep_anchored_components(outs[0][box], cores_on_scan(rois, sp, ulo, uhi))
    assert np.array_equal(outs["stage1"], expect)
    parts = [ndimage.label(outs[k] > 0, structure=np.ones((3, 3, 3)))[1] for k in (0, "stage1")]
    assert parts[1] == 1 < parts[0], "the random network should leave parts apart from stage 1's kidney"


def test_cores_on_scan_maps_each_stage1_voxel_to_the_scan_voxels_inside_it():
    prob = np.zeros((4, 4, 4), np.float32)
    prob[1, 2, 3] = 1
    (roi,) = find_rois(prob, 8.0, (32.0, 32.0, 32.0), 4.0, RoiConfig(min_voxels=1, dilation_diameter=40))
    assert roi.mask1.sum() > 1 and np.array_equal(roi.core1, prob > 0)  # the core is the undilated part
    on_scan = cores_on_scan([roi], (2.0, 4.0, 8.0), (0, 0, 0), (16, 8, 4))
    expect = np.zeros((16, 8, 4), bool)
    expect[4:8, 4:6, 3] = True   # z 8-16 mm on 2 mm voxels, y 16-24 mm on 4 mm, x 24-32 mm on 8 mm
    assert np.array_equal(on_scan, expect)
    # and back: the scan read at each stage-1 voxel's centre is the core again
    assert np.array_equal(at_stage1_centres(on_scan, (2.0, 4.0, 8.0), (4, 4, 4), 8.0), roi.core1)
    assert np.array_equal(cores_on_scan([roi], (2.0, 4.0, 8.0), (5, 4, 2), (9, 6, 4)), expect[5:9, 4:6, 2:4])
    roi.core1 = None
    with pytest.raises(ValueError, match="core1"):
        cores_on_scan([roi], (2.0, 4.0, 8.0), (0, 0, 0), (16, 8, 4))


def test_cli_takes_stage1_and_refuses_words(tmp_path, tiny_phantom, capsys):
    w = tmp_path / "w"
    save_weights(KidneyNet("tiny", seed=1), w / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), w / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(tiny_phantom.image.astype(np.int16), np.diag([*tiny_phantom.spacing[::-1], 1.0])), img)
    out = tmp_path / "s1.nii.gz"
    assert cli.main(["segment", str(img), "-o", str(out), "--weights", str(w), "--quiet",
                     "--keep-components", "stage1"]) == 0
    expect = _segmenter("stage1").segment(nib.load(img))
    assert np.array_equal(np.asarray(nib.load(out).dataobj), expect)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["segment", str(img), "-o", str(tmp_path / "x.nii.gz"), "--weights", str(w),
                  "--keep-components", "largest"])
    assert "takes a whole number >= 0 or 'stage1', got 'largest'" in capsys.readouterr().err


def test_the_varied_set_stores_the_stage1_rule_and_the_default_set_none():
    from kidney.pipeline import default_weights
    _, s2 = default_weights("varied")
    assert read_weights(s2)[1]["keep_components"] == "stage1"
    assert "keep_components" not in read_weights(default_weights(None)[1])[1]


def test_a_cohort_run_carries_the_stage1_override_and_tells_it_apart(tmp_path):
    from kidney import cohort
    w = tmp_path / "w"
    save_weights(KidneyNet("tiny", seed=1), w / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), w / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    runs = {k: cohort.Weights.from_dir(w, keep_components=k) for k in (None, 0, 2, "stage1")}
    assert runs["stage1"].load().keep_components == "stage1"
    assert len({r.fingerprint() for r in runs.values()}) == 4  # a resumed run never mixes settings
