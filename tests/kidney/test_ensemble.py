"""Ensembles of a stage's networks: the mean of their sigmoids, from a list, a folder or the CLI."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kidney import cli, cohort, io
from kidney.model import KidneyNet, WeightsError, save_weights
from kidney.pipeline import Segmenter, default_weights
from kidney.postprocess import META_KEY as KEEP_KEY
from kidney.sparsify import STAGE2

S1, S2 = 8.0, 4.0


def _pair(seed, stage=2, spacing=S2, **meta):
    return KidneyNet("tiny", seed=seed), {"stage": stage, "spacing_mm": spacing, **meta}


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """A folder with one stage-1 file and two stage-2 files of different networks."""
    d = tmp_path_factory.mktemp("ensemble")
    for pair, name in ((_pair(1, stage=1, spacing=S1), "stage1_tiny.npz"), (_pair(2), "stage2_a.npz"),
                       (_pair(3), "stage2_b.npz")):
        save_weights(pair[0], d / name, pair[1])
    return d


def _crop(tiny_phantom):
    hu = tiny_phantom.image[12:27, 48:69, 20:39].astype(np.float32)  # around a kidney
    mask = np.zeros(hu.shape, bool)
    mask[2:13, 3:18, 1:17] = True
    return hu, mask


def test_a_folder_of_several_stage2_files_is_an_ensemble_in_name_order(members):
    s1, s2 = default_weights(members)
    assert s1 == members / "stage1_tiny.npz"
    assert s2 == (members / "stage2_a.npz", members / "stage2_b.npz")
    seg = Segmenter(weights_dir=members)
    assert [m.meta["path"] for m in seg.stage2.members] == [str(p) for p in s2]
    assert seg.stage2.describe() == "ensemble of 2 (tiny, tiny)" and seg.stage1.describe() == "tiny"


def test_the_ensemble_is_the_mean_of_its_members(members, tiny_phantom):
    hu, mask = _crop(tiny_phantom)
    s1, (a, b) = default_weights(members)
    both = Segmenter(s1, [a, b])
    got, n = both.probabilities_on_grid(both.stage2, hu, STAGE2, mask)
    pa, na = Segmenter(s1, a).probabilities_on_grid(Segmenter(s1, a).stage2, hu, STAGE2, mask)
    seg_b = Segmenter(s1, b)
    pb, _ = seg_b.probabilities_on_grid(seg_b.stage2, hu, STAGE2, mask)
    assert n == na > 0
    np.testing.assert_array_equal(got, (pa + pb) / np.float32(2))
    assert np.abs(pa - pb).max() > 1e-3  # two different networks: the mean is not either one
    # one member is that network itself, and a network twice is that network, bit for bit
    for stage2 in ([a], [a, a]):
        seg = Segmenter(s1, stage2)
        p, _ = seg.probabilities_on_grid(seg.stage2, hu, STAGE2, mask)
        np.testing.assert_array_equal(p, pa)
    # and the whole segmentation is deterministic
    np.testing.assert_array_equal(both.segment(tiny_phantom.image, tiny_phantom.spacing),
                                  Segmenter(s1, [a, b]).segment(tiny_phantom.image, tiny_phantom.spacing))


def test_members_on_different_grids_or_settings_are_refused(tmp_path):
    with pytest.raises(WeightsError, match=r"share one grid.*4\.0 mm.*2\.0 mm"):
        Segmenter(_pair(1, stage=1, spacing=S1), [_pair(2), _pair(3, spacing=2.0)])
    with pytest.raises(WeightsError, match=f"different {KEEP_KEY}"):
        Segmenter(_pair(1, stage=1, spacing=S1), [_pair(2, **{KEEP_KEY: 2}), _pair(3)])
    with pytest.raises(WeightsError, match="non-empty list"):
        Segmenter(_pair(1, stage=1, spacing=S1), [])
    model, meta = _pair(1, stage=1, spacing=S1)
    save_weights(model, tmp_path / "stage1.npz", meta)
    with pytest.raises(WeightsError, match="for stage 1, not stage 2"):
        Segmenter(_pair(1, stage=1, spacing=S1), [_pair(2), tmp_path / "stage1.npz"])


def test_a_setting_all_members_store_is_used(members):
    seg = Segmenter(_pair(1, stage=1, spacing=S1), [_pair(2, **{KEEP_KEY: 2}), _pair(3, **{KEEP_KEY: 2})])
    assert seg.keep_components == 2
    assert Segmenter(weights_dir=members).keep_components is None


def test_cohort_weights_of_an_ensemble(members):
    s1, s2 = default_weights(members)
    single = cohort.Weights.from_dir(members, stage2=s2[0])
    both = cohort.Weights.from_dir(members)
    assert isinstance(single.stage2, str) and both.stage2 == tuple(str(p) for p in s2)
    assert both.files() == [str(s1)] + [str(p) for p in s2]
    # a single file's fingerprint is the hash of the two files and the settings, as it always was
    h = hashlib.sha256((s1.read_bytes() + s2[0].read_bytes()))
    h.update(b"tta=False")
    assert single.fingerprint() == h.hexdigest()[:16]
    assert len({single.fingerprint(), both.fingerprint(),
                cohort.Weights(str(s1), (str(s2[1]), str(s2[0]))).fingerprint()}) == 3
    assert isinstance(both.load().stage2.members, list)


def test_segment_an_ensemble_on_the_cli(members, tiny_phantom, tmp_path, capsys):
    from kidney import phantom
    phantom.write_case(tiny_phantom, tmp_path / "data" / "case_00000")
    s1, (a, b) = default_weights(members)
    runs = {"folder": ["--weights", str(members)],
            "files": ["--stage1-weights", str(s1), "--stage2-weights", str(a), str(b)]}
    for name, flags in runs.items():
        assert cli.main(["segment", "-i", str(tmp_path / "data"), "-o", str(tmp_path / name), "--quiet"]
                        + flags) == 0
    got = [io.load_nifti(tmp_path / name / "case_00000.nii.gz").array for name in runs]
    want = Segmenter(s1, [a, b]).segment(str(tmp_path / "data" / "case_00000" / io.IMAGE_NAME))
    for labels in got:
        np.testing.assert_array_equal(labels, want)
