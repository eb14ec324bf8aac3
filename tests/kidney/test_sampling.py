"""kidney.sampling: stage-2 crops picked through a mass, boxes cut from them, some centred on a mass."""
from __future__ import annotations

import numpy as np
import pytest

from kidney.sampling import mass_owners, patch_box
from kidney.train import Trainer, TrainConfig, load_samples


def _crop():
    """A 40 × 30 × 36 crop: a kidney holding one large tumour and, far from it, one 1-voxel cyst."""
    labels = np.zeros((40, 30, 36), np.uint8)
    labels[5:35, 5:25, 5:31] = 1
    labels[6:18, 6:18, 6:18] = 2        # 1,728 voxels
    labels[30, 20, 28] = 3              # 1 voxel
    return labels


def test_boxes_have_the_size_asked_and_lie_inside_the_crop():
    labels = _crop()
    for seed in range(30):
        box = patch_box(labels, 16, np.random.default_rng(seed), lesion_share=0.5)
        assert len(box) == 3
        for s, n in zip(box, labels.shape):
            assert 0 <= s.start < s.stop <= n and s.stop - s.start == 16
    # an axis shorter than the box keeps its whole length
    box = patch_box(labels, 32, np.random.default_rng(0))
    assert [s.stop - s.start for s in box] == [32, 30, 32] and box[1] == slice(0, 30)


def test_lesion_boxes_centre_each_mass_as_often_however_small():
    """With lesion_share 1 every box holds a mass voxel, at its centre (away from the crop's faces);
    the 1-voxel cyst is centred about as often as the 1,728-voxel tumour (one mass drawn uniformly)."""
    labels = _crop()
    hits = {2: 0, 3: 0}
    for seed in range(400):
        box = patch_box(labels, 9, np.random.default_rng(seed), lesion_share=1.0)
        centre = labels[tuple(s.start + 4 for s in box)]
        assert centre in (2, 3)  # both masses lie at least 4 voxels inside the crop
        hits[int(centre)] += 1
    assert 150 <= hits[3] <= 250, hits  # binomial(400, 1/2): outside this once in ~10^5 runs


def test_boxes_are_a_function_of_the_generator_and_fall_back_without_a_mass():
    labels = _crop()
    for seed in range(5):
        assert patch_box(labels, 12, np.random.default_rng(seed), 0.5) == \
            patch_box(labels, 12, np.random.default_rng(seed), 0.5)
    boxes = {tuple(b.start for b in patch_box(labels, 12, np.random.default_rng(s), 0.0)) for s in range(20)}
    assert len(boxes) > 10  # anywhere in the crop, not one fixed place
    kidney_only = np.where(labels >= 2, 1, labels).astype(np.uint8)
    box = patch_box(kidney_only, 12, np.random.default_rng(0), lesion_share=1.0)  # no mass: any box
    assert all(s.stop - s.start == 12 for s in box)


@pytest.mark.parametrize("args, message", [
    ((np.zeros((4, 4, 4), np.uint8), 0), "patch size must be >= 1"),
    ((np.zeros((4, 4, 4), np.uint8), 4, 1.5), "lesion_share must lie in"),
    ((np.zeros((4, 4), np.uint8), 4), r"3-d \(Z, Y, X\) array, got shape \(4, 4\)"),
])
def test_bad_patch_arguments_are_named(args, message):
    labels, size, *share = args
    with pytest.raises(ValueError, match=message):
        patch_box(labels, size, np.random.default_rng(0), *share)


def test_config_keeps_patches_to_stage2():
    with pytest.raises(ValueError, match="patch is for stage 2"):
        TrainConfig(stage=1, patch=32).resolved()
    with pytest.raises(ValueError, match="patch must be >= 1"):
        TrainConfig(stage=2, patch=0).resolved()
    with pytest.raises(ValueError, match="lesion_patches needs patch"):
        TrainConfig(stage=2, lesion_patches=0.5).resolved()
    with pytest.raises(ValueError, match="lesion_patches must lie in"):
        TrainConfig(stage=2, patch=32, lesion_patches=2.0).resolved()
    assert TrainConfig(stage=2, patch=32, lesion_patches=0.5).resolved().patch == 32


def test_training_draws_patches_seeded_and_leaves_runs_without_them_unchanged(tiny_data, tmp_path):
    """A step's sample is cut to the box (the crop's length where shorter), the same bits for the same
    (seed, micro-step); without patch the draws are the crops as before, the box never drawn."""
    base = dict(stage=2, model="tiny", spacing=4.0, stage1_spacing=8.0, steps=2, accumulate=1,
                lr=1e-3, warmup_steps=1, seed=5, augmentation="none")
    samples = load_samples(tiny_data, TrainConfig(**base))
    whole = Trainer(TrainConfig(**base), samples, tmp_path / "a", progress=False)
    cut = Trainer(TrainConfig(**base, patch=6, lesion_patches=0.5), samples, tmp_path / "b", progress=False)
    again = Trainer(TrainConfig(**base, patch=6, lesion_patches=0.5), samples, tmp_path / "c", progress=False)
    smaller = 0
    for step in range(6):
        s, x, t = whole.draw(step)
        rng = np.random.default_rng([5, step])
        assert s is samples[int(rng.integers(len(samples)))]  # the first draw picks the crop, as before
        s2, x2, t2 = cut.draw(step)
        _, x3, t3 = again.draw(step)
        extent = x2.coords[:, 1:].max(axis=0) - x2.coords[:, 1:].min(axis=0) + 1
        assert np.all(extent <= 6) and len(x2) <= len(x)
        smaller += len(x2) < len(x)
        assert np.array_equal(x2.coords, x3.coords) and np.array_equal(x2.feats, x3.feats)
        assert np.array_equal(t2, t3)
    assert smaller > 0


def test_mass_owners_list_each_mass_once_with_its_crop():
    two = _crop()                                   # a tumour and a cyst, apart
    none = np.where(_crop() >= 2, 1, _crop()).astype(np.uint8)
    touching = np.zeros((6, 6, 6), np.uint8)
    touching[1:3, 1:3, 1:3] = 2
    touching[3, 3, 3] = 3                           # diagonal neighbour: one 26-connected mass
    owners = mass_owners([none, two, touching, none])
    assert owners.dtype == np.int64 and owners.tolist() == [1, 1, 2]
    assert mass_owners([none]).tolist() == [] and mass_owners([]).tolist() == []


def test_lesion_crops_pick_crops_through_their_masses(tiny_data, tmp_path):
    """With lesion_crops 1 every step reads a crop that holds a mass, and every such crop comes up; the
    draws are seeded; without it the trainer indexes no mass (its draws are those of before)."""
    base = dict(stage=2, model="tiny", spacing=4.0, stage1_spacing=8.0, steps=2, accumulate=1,
                lr=1e-3, warmup_steps=1, seed=5, augmentation="none")
    from kidney.train import Sample
    crops = load_samples(tiny_data, TrainConfig(**base))
    # each crop twice: as drawn, and with its masses relabelled kidney (a crop with no lesion)
    samples = [Sample(c.case_id, c.hu, c.labels, c.mask) for c in crops] + \
        [Sample(c.case_id + "/no_mass", c.hu, np.where(c.labels >= 2, 1, c.labels).astype(c.labels.dtype), c.mask)
         for c in crops]
    owners = mass_owners([s.labels for s in samples])
    assert len(owners) and set(owners.tolist()) == set(range(len(crops)))
    lean = Trainer(TrainConfig(**base, lesion_crops=1.0), samples, tmp_path / "a", progress=False)
    assert np.array_equal(lean.mass_owners, owners)
    picked = [lean.draw(step)[0] for step in range(40)]
    assert all(not s.case_id.endswith("/no_mass") for s in picked)
    counts = np.bincount([next(i for i, c in enumerate(samples) if c is s) for s in picked], minlength=len(crops))
    assert counts.sum() == 40 and all(counts[i] > 0 for i in set(owners.tolist()))
    again = Trainer(TrainConfig(**base, lesion_crops=1.0), samples, tmp_path / "b", progress=False)
    for step in range(5):
        _, x, _ = lean.draw(step)
        _, x2, _ = again.draw(step)
        assert np.array_equal(x.coords, x2.coords) and np.array_equal(x.feats, x2.feats)
    plain = Trainer(TrainConfig(**base), samples, tmp_path / "c", progress=False)
    assert plain.mass_owners is None
    with pytest.raises(ValueError, match="lesion_crops is for stage 2"):
        TrainConfig(stage=1, lesion_crops=0.5).resolved()
    with pytest.raises(ValueError, match="lesion_crops must lie in"):
        TrainConfig(stage=2, lesion_crops=-0.5).resolved()
    no_mass = samples[len(crops):]
    with pytest.raises(ValueError, match="no training crop holds a mass"):
        Trainer(TrainConfig(**base, lesion_crops=0.5), no_mass, tmp_path / "d", progress=False)


def test_kidney_train_takes_the_options_and_records_them(tiny_data, tmp_path, capsys):
    """End to end through the command line: refused where they do not apply (exit 2, the problem
    named, before any data is read), recorded in the weights where they do."""
    from kidney import cli
    from kidney.model import read_weights
    base = ["train", "--data", str(tiny_data), "--model", "tiny", "--steps", "2", "--accumulate", "1",
            "--quiet", "--checkpoint-every", "1"]
    stage2 = ["--stage", "2", "--spacing", "4", "--stage1-spacing", "8"]
    assert cli.main(base + ["--stage", "1", "--spacing", "8", "--lesion-crops", "0.5",
                            "--out", str(tmp_path / "a")]) == 2
    assert "lesion_crops is for stage 2" in capsys.readouterr().err
    assert cli.main(base + stage2 + ["--lesion-patches", "0.5", "--out", str(tmp_path / "b")]) == 2
    assert "lesion_patches needs patch" in capsys.readouterr().err
    out = tmp_path / "c"
    assert cli.main(base + stage2 + ["--lesion-crops", "1", "--patch", "8", "--lesion-patches", "0.5",
                                     "--out", str(out)]) == 0
    train = read_weights(out / "weights.npz")[1]["train"]
    assert (train["lesion_crops"], train["patch"], train["lesion_patches"]) == (1.0, 8, 0.5)
