"""Stage 1 reading scans anti-aliased: kidney.io.resample(antialias=), kidney train --antialias, the
setting stored with the weights and read by the segmenter, scripts/store_settings.py --antialias."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kidney import io, phantom
from kidney.model import KidneyNet, WeightsError, read_weights, save_weights
from kidney.pipeline import Segmenter
from kidney.sample_cache import cache_key
from kidney.train import Trainer, TrainConfig, load_samples


def test_shrinking_smooths_first_by_scikit_images_rule():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 40, 40)).astype(np.float32)
    got = io.resample(a, (2.0, 1.0, 1.0), (3.0, 4.0, 4.0), antialias=True)
    # σ = (t / s - 1) / 2 input voxels per axis: 0.25 along z, 1.5 in plane
    by_hand = io.resample(ndimage.gaussian_filter(a, (0.25, 1.5, 1.5), mode="nearest"), (2.0, 1.0, 1.0),
                          (3.0, 4.0, 4.0))
    np.testing.assert_array_equal(got, by_hand)
    plain = io.resample(a, (2.0, 1.0, 1.0), (3.0, 4.0, 4.0))
    assert got.std() < 0.5 * plain.std()  # white noise shrunk 4x in plane: averaged, not sampled
    # an axis that is not shrunk is not smoothed: upsampling is the plain resample, bit for bit
    np.testing.assert_array_equal(io.resample(a, (2.0,) * 3, 1.0, antialias=True), io.resample(a, (2.0,) * 3, 1.0))
    with pytest.raises(ValueError, match="antialias is for images"):
        io.resample(a.astype(np.uint8), (1.0,) * 3, 4.0, order=0, antialias=True)


def _cfg(**kw):
    base = dict(stage=1, model="tiny", spacing=8.0, steps=2, accumulate=1, lr=1e-3, warmup_steps=1,
                checkpoint_every=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_training_reads_scans_antialiased_and_says_so_in_the_weights(tiny_data, tmp_path):
    samples = load_samples(tiny_data, _cfg(antialias=True))
    case = io.load_case(sorted(p for p in tiny_data.iterdir() if p.is_dir())[0], label=True)
    want = io.resample(case.image.array, case.image.spacing, 8.0, antialias=True)
    np.testing.assert_array_equal(samples[0].hu, want)
    assert not np.array_equal(load_samples(tiny_data, _cfg())[0].hu, want)
    _, meta = read_weights(Trainer(_cfg(antialias=True), samples, tmp_path / "a", progress=False).run()
                           .export_weights())
    assert meta["antialias"] is True and meta["train"]["antialias"] is True
    plain = Trainer(_cfg(), load_samples(tiny_data, _cfg()), tmp_path / "b", progress=False).run()
    assert "antialias" not in read_weights(plain.export_weights())[1]  # off: the metadata as before
    # the sample cache tells the two apart, and a cache made before the option still matches when off
    assert cache_key(tiny_data, _cfg(antialias=True)) != cache_key(tiny_data, _cfg())
    assert "antialias" not in cache_key(tiny_data, _cfg())
    with pytest.raises(ValueError, match="antialias is for stage 1"):
        TrainConfig(stage=2, antialias=True).resolved()


@pytest.fixture
def weights(tmp_path):
    save_weights(KidneyNet("tiny", seed=1), tmp_path / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), tmp_path / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    return tmp_path


def test_the_segmenter_reads_the_scan_as_the_weights_say(weights, capsys, load_script):
    case = phantom.make_phantom(seed=3, preset="tiny")
    s1, s2 = weights / "stage1_tiny.npz", weights / "stage2_tiny.npz"
    plain = Segmenter(s1, s2)
    before, _ = read_weights(s1)
    assert load_script("store_settings").main([str(s1), "--antialias", "true"]) == 0
    assert "antialias = True" in capsys.readouterr().out
    after, meta = read_weights(s1)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    smooth = Segmenter(s1, s2)
    assert (plain.stage1.antialias, smooth.stage1.antialias, meta["antialias"]) == (False, True, True)
    got, _ = smooth.stage1_probabilities(case.image, case.spacing)
    hu = io.resample(case.image, case.spacing, 8.0, antialias=True)
    want, _ = plain.probabilities_on_grid(plain.stage1, hu, "stage1")
    np.testing.assert_array_equal(got, want.max(axis=3))
    assert not np.array_equal(got, plain.stage1_probabilities(case.image, case.spacing)[0])
    # an ensemble whose members read scans differently is refused; bad or misplaced values are named
    save_weights(KidneyNet("tiny", seed=4), weights / "stage1_other.npz", {"stage": 1, "spacing_mm": 8.0})
    with pytest.raises(WeightsError, match="different antialias settings"):
        Segmenter([s1, weights / "stage1_other.npz"], s2)
    # false stored and nothing stored read the scan alike: such members do form an ensemble
    save_weights(KidneyNet("tiny", seed=4), weights / "stage1_off.npz", {"stage": 1, "spacing_mm": 8.0,
                                                                         "antialias": False})
    assert Segmenter([weights / "stage1_other.npz", weights / "stage1_off.npz"], s2).stage1.antialias is False
    save_weights(KidneyNet("tiny", seed=4), weights / "stage1_bad.npz", {"stage": 1, "antialias": "yes"})
    with pytest.raises(WeightsError, match="antialias in the metadata of .*stage1_bad.npz must be true or false"):
        Segmenter(weights / "stage1_bad.npz", s2)
    save_weights(KidneyNet("tiny", seed=4), weights / "stage2_bad.npz", {"stage": 2, "antialias": True})
    with pytest.raises(WeightsError, match="a stage-1 setting"):
        Segmenter(s1, weights / "stage2_bad.npz")
    store = load_script("store_settings")
    for argv, message in (([str(s2), "--antialias", "true"], "holds stage-2 weights; antialias go with stage 1"),
                          ([str(s1), "--antialias", "maybe"], "invalid choice"),
                          ([str(weights / "missing.npz"), "--antialias", "true"], "does not exist")):
        with pytest.raises(SystemExit):
            store.main(argv)
        assert message in capsys.readouterr().err
    assert "antialias" not in read_weights(s2)[1]


def test_an_ensemble_reads_the_scan_both_ways_when_its_members_say_how_to_combine(weights, capsys, load_script):
    case = phantom.make_phantom(seed=3, preset="tiny")
    s1, s2 = weights / "stage1_tiny.npz", weights / "stage2_tiny.npz"
    save_weights(KidneyNet("tiny", seed=4), weights / "stage1_other.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=4), weights / "stage1_other_aa.npz",
                 {"stage": 1, "spacing_mm": 8.0, "antialias": True})
    members = [s1, weights / "stage1_other.npz", weights / "stage1_other_aa.npz"]
    with pytest.raises(WeightsError, match="different antialias settings.*--combine-readings mean\\|min"):
        Segmenter(members, s2)
    store = load_script("store_settings")
    as_is = Segmenter(members[:2], s2)  # the two that read the scan as it is, averaged
    smooth = Segmenter(members[2], s2)
    p_plain, _ = as_is.probabilities_on_grid(as_is.stage1, io.resample(case.image, case.spacing, 8.0), "stage1")
    p_aa, _ = smooth.probabilities_on_grid(smooth.stage1,
                                           io.resample(case.image, case.spacing, 8.0, antialias=True), "stage1")
    for how, want in (("mean", (p_plain + p_aa) / np.float32(2)), ("min", np.minimum(p_plain, p_aa))):
        for f in members:
            assert store.main([str(f), "--combine-readings", how]) == 0
        seg = Segmenter(members, s2)
        assert seg.stage1.antialias is None and seg.stage1.combine == how
        assert [a for a, _ in seg.stage1.readings] == [False, True]
        assert f"readings' {how}" in seg.stage1.describe()
        got, n = seg.stage1_probabilities(case.image, case.spacing)
        np.testing.assert_array_equal(got, want.max(axis=3))
        assert n > 0
        assert isinstance(seg.segment(case.image, case.spacing), np.ndarray)
        with pytest.raises(WeightsError, match="read the scan differently"):
            seg.stage1.probabilities(None)
    assert not np.array_equal(p_plain, p_aa)  # the two readings differ, so the two rules do too
    # stored on members that read alike it changes nothing: the plain mean, bit for bit
    alike = Segmenter(members[:2], s2)
    np.testing.assert_array_equal(alike.stage1_probabilities(case.image, case.spacing)[0], p_plain.max(axis=3))
    # members that disagree on it, a bad value, or stage-2 weights holding it are refused
    assert store.main([str(members[0]), "--combine-readings", "mean"]) == 0
    with pytest.raises(WeightsError, match="different combine_readings settings"):
        Segmenter(members, s2)
    save_weights(KidneyNet("tiny", seed=4), weights / "stage1_bad.npz", {"stage": 1, "combine_readings": "max"})
    with pytest.raises(WeightsError, match="combine_readings in the metadata of .*stage1_bad.npz must be one of"):
        Segmenter(weights / "stage1_bad.npz", s2)
    save_weights(KidneyNet("tiny", seed=4), weights / "stage2_bad.npz", {"stage": 2, "combine_readings": "min"})
    with pytest.raises(WeightsError, match="a stage-1 setting"):
        Segmenter(s1, weights / "stage2_bad.npz")
    capsys.readouterr()
    for argv, message in (([str(s2), "--combine-readings", "min"], "holds stage-2 weights"),
                          ([str(s1), "--combine-readings", "max"], "invalid choice"),
                          ([str(s2), "--blur-tta", "0,1", "--combine-readings", "min"], "one at a time")):
        with pytest.raises(SystemExit):
            store.main(argv)
        assert message in capsys.readouterr().err
