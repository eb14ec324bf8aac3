"""kidney.sample_cache: training samples on disk, memory-mapped; the same bits as in memory."""
from __future__ import annotations

import os

import numpy as np
import pytest

from kidney import sample_cache as C
from kidney.model import KidneyNet, read_weights, save_weights
from kidney.train import Trainer, TrainConfig, load_samples, train


def _cfg(**kw):
    base = dict(stage=1, model="tiny", spacing=8.0, steps=3, accumulate=2, lr=1e-3, warmup_steps=1,
                checkpoint_every=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def _stage2(tmp_path, **kw):
    w1 = save_weights(KidneyNet("tiny", seed=1), tmp_path / "stage1.npz", {"stage": 1, "spacing_mm": 8.0})
    return _cfg(stage=2, spacing=4.0, stage1_spacing=8.0, stage1_weights=str(w1), **kw)


def _same(a, b):
    assert [s.case_id for s in a] == [s.case_id for s in b]
    for s, t in zip(a, b):
        for name in ("hu", "labels", "mask"):
            x, y = getattr(s, name), getattr(t, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("stage", [1, 2])
def test_cached_samples_are_the_same_bytes_mapped_read_only(tiny_data, tmp_path, stage):
    cfg = _cfg() if stage == 1 else _stage2(tmp_path)
    ref = load_samples(tiny_data, cfg)
    first = C.cached_samples(tiny_data, cfg, tmp_path / "cache")
    again = C.cached_samples(tiny_data, cfg, tmp_path / "cache")
    _same(ref, first)
    _same(ref, again)
    if stage == 2:
        assert all(s.mask is not None for s in again) and len(again) >= 4  # ground-truth + stage-1 crops
    hu = again[0].hu
    assert isinstance(hu.base, np.memmap) or isinstance(hu, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        hu[(0,) * hu.ndim] = 0.0
    assert sorted(os.listdir(tmp_path)) == sorted(["cache"] + (["stage1.npz"] if stage == 2 else []))


def test_a_run_on_the_cache_is_bitwise_the_run_in_memory(tiny_data, tmp_path):
    cfg = _stage2(tmp_path, augment=True, augmentation="scanner", edge_cuts=0.5)
    plain = Trainer(cfg, load_samples(tiny_data, cfg), tmp_path / "plain", progress=False).run()
    cached = train(tiny_data, tmp_path / "cached", cfg, progress=False, sample_cache=tmp_path / "cache")
    a, b = plain.model.state_dict(), cached.model.state_dict()
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in cached.history]


def test_a_cache_made_for_other_samples_is_refused_and_kept(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    C.cached_samples(tiny_data, _cfg(), cache)
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    with pytest.raises(ValueError, match=r"spacing: 8\.0 in the cache, 6\.0 for this run"):
        C.cached_samples(tiny_data, _cfg(spacing=6.0), cache)
    with pytest.raises(ValueError, match=r"cases: 0 new, 1 not in this run, 0 changed"):
        C.cached_samples(tiny_data, _cfg(max_cases=1), cache)
    image = sorted(tiny_data.iterdir())[0] / "imaging.nii.gz"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the scan changed since the cache was made
    try:
        with pytest.raises(ValueError, match=f"1 changed \\(first: {image.parent.name}\\)"):
            C.cached_samples(tiny_data, _cfg(), cache)
    finally:
        os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before
    assert len(C.cached_samples(tiny_data, _cfg(), cache)) == 2  # as it was made: used again


def test_a_folder_that_is_not_a_cache_is_not_touched(tiny_data, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a sample cache"):
        C.cached_samples(tiny_data, _cfg(), other)
    assert (other / "notes.txt").read_text() == "keep me" and len(os.listdir(other)) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(C.cached_samples(tiny_data, _cfg(), empty)) == 2  # an empty folder is used


def test_a_failed_write_leaves_no_cache(tiny_data, tmp_path):
    samples = load_samples(tiny_data, _cfg())

    def broken():
        yield samples[0]
        raise RuntimeError("reading the second case failed")

    with pytest.raises(RuntimeError, match="second case"):
        C.write_cache(broken(), tmp_path / "cache", C.cache_key(tiny_data, _cfg()))
    assert os.listdir(tmp_path) == []


def test_kidney_train_sample_cache_from_the_command_line(tiny_data, tmp_path, capsys):
    from kidney.cli import main
    args = ["train", "--data", str(tiny_data), "--stage", "1", "--model", "tiny", "--spacing", "8",
            "--steps", "2", "--accumulate", "1", "--quiet", "--sample-cache", str(tmp_path / "cache")]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "cache" / "samples.json").is_file()
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    (a, meta_a), (b, meta_b) = read_weights(tmp_path / "a" / "weights.npz"), read_weights(tmp_path / "b" / "weights.npz")
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert meta_a["n_samples"] == meta_b["n_samples"] == 2
