"""kidney.train and kidney.augment: loss, parameter groups, stage-2 crops, exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kidney import augment as A
from kidney.model import KidneyNet
from kidney.train import Trainer, TrainConfig, load_samples, loss_and_dice, make_batch, stage2_crops


def _cfg(**kw):
    base = dict(stage=1, model="tiny", spacing=8.0, steps=4, accumulate=2, lr=1e-3, warmup_steps=1,
                checkpoint_every=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_deep_supervised_loss_reaches_the_used_heads_only(tiny_phantom):
    from kidney import io
    hu = io.resample(tiny_phantom.image, tiny_phantom.spacing, 8.0)
    lab = io.resample(tiny_phantom.labels, tiny_phantom.spacing, 8.0, order=0, out_shape=hu.shape)
    x, t = make_batch(hu, lab, None, 1)
    model = KidneyNet("tiny", seed=0)
    loss, dice = loss_and_dice(model, x, t, (1.0, 0.5, 0.25))
    assert np.isfinite(loss.item()) and 0 < loss.item() <= 1.5 * 3 and dice.shape == (3,)
    loss.backward()
    assert model.heads[0].out.weight.grad is not None and model.heads[1].out.weight.grad is not None
    # tiny has 2 decoder levels, both supervised; the paper's extra coarse heads would get no grad
    paper_like = KidneyNet("compact", seed=0)
    loss, _ = loss_and_dice(paper_like, x, t, (1.0, 0.5, 0.25))
    loss.backward()
    assert all(h.out.weight.grad is not None for h in paper_like.heads)


def test_each_loss_adds_its_term_to_the_soft_dice(tiny_phantom):
    """dice+bce and dice+topk10 are the soft Dice plus a BCE term: larger than Dice alone, and the
    top-10 % BCE (the hardest voxels' mean) at least the all-voxel BCE summed over channels."""
    from kidney import io
    from kidney.cli import build_parser
    from kidney.train import LOSSES
    hu = io.resample(tiny_phantom.image, tiny_phantom.spacing, 8.0)
    lab = io.resample(tiny_phantom.labels, tiny_phantom.spacing, 8.0, order=0, out_shape=hu.shape)
    x, t = make_batch(hu, lab, None, 1)
    model = KidneyNet("tiny", seed=0)
    value = {kind: loss_and_dice(model, x, t, (1.0,), kind)[0].item() for kind in LOSSES}
    assert value["dice"] < value["dice+bce"] <= value["dice+topk10"]
    loss, _ = loss_and_dice(model, x, t, (1.0, 0.5), "dice+topk10")
    loss.backward()
    assert all(h.out.weight.grad is not None for h in model.heads)
    with pytest.raises(ValueError, match="loss must be one of dice, dice[+]bce, dice[+]topk10"):
        TrainConfig(loss="topk").resolved()
    train_cli = build_parser()._subparsers._group_actions[0].choices["train"]
    assert next(a for a in train_cli._actions if a.dest == "loss").choices == LOSSES


def test_parameter_groups_follow_the_paper(tiny_data, tmp_path):
    tr = Trainer(_cfg(), load_samples(tiny_data, _cfg()), tmp_path, progress=False)
    decay, no_decay = tr.opt.param_groups
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert decay["betas"] == (0.9, 0.95) and decay["eps"] == 1e-12


def test_stage2_crops_come_from_the_ground_truth_kidneys(tiny_phantom):
    cfg = TrainConfig(stage=2, spacing=4.0, stage1_spacing=8.0).resolved()
    crops = stage2_crops(tiny_phantom.image.astype(np.float32), tiny_phantom.labels, tiny_phantom.spacing, cfg)
    assert len(crops) == 2  # two kidneys
    for hu, mask, lab in crops:
        assert hu.shape == mask.shape == lab.shape and (lab[mask] > 0).any()


def test_augment_is_seeded_and_keeps_shapes(tiny_phantom):
    hu, lab = tiny_phantom.image, tiny_phantom.labels
    cfg = A.AugmentConfig(p_affine=1.0, p_blur=1.0)
    a = A.augment(hu, lab, np.random.default_rng(3), cfg)
    b = A.augment(hu, lab, np.random.default_rng(3), cfg)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == hu.shape and a[0].dtype == np.float32 and set(np.unique(a[1])) <= {0, 1, 2, 3}
    same = A.augment(hu, lab, np.random.default_rng(3), A.NO_AUGMENT)
    assert same[0] is not None and np.array_equal(same[0], hu.astype(np.float32))


def test_resume_is_bitwise_identical(tiny_data, tmp_path):
    cfg = _cfg()
    samples = load_samples(tiny_data, cfg)
    straight = Trainer(cfg, samples, tmp_path / "a", progress=False).run()
    first = Trainer(cfg, samples, tmp_path / "b", progress=False).run(steps=2)
    assert (tmp_path / "b" / "checkpoint.npz").is_file()
    resumed = Trainer(cfg, samples, tmp_path / "b", progress=False).load_checkpoint()
    assert resumed.opt_step == 2 and resumed.micro_step == 4
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    sa, sb = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(np.array_equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    log = [json.loads(l) for l in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and first.opt_step == 2
    assert (tmp_path / "b" / "weights.npz").is_file()


def test_weights_kept_at_the_asked_steps_are_the_weights_of_those_steps(tiny_data, tmp_path):
    from kidney.model import read_weights
    cfg = _cfg(keep_weights_at=(3, 1))
    samples = load_samples(tiny_data, cfg)
    Trainer(cfg, samples, tmp_path / "a", progress=False).run()
    kept = sorted(p.name for p in (tmp_path / "a").glob("weights_step*.npz"))
    assert kept == ["weights_step1.npz", "weights_step3.npz"]
    at3 = Trainer(_cfg(), samples, tmp_path / "b", progress=False).run(steps=3)  # another run stopped at 3
    arrays, meta = read_weights(tmp_path / "a" / "weights_step3.npz")
    assert meta["optimizer_steps"] == 3
    ref = at3.model.state_dict()
    assert set(arrays) == set(ref) and all(np.array_equal(arrays[k], ref[k]) for k in ref)
    with pytest.raises(ValueError, match="keep_weights_at"):
        _cfg(keep_weights_at=(0,)).resolved()


def test_checkpoint_with_another_config_is_refused(tiny_data, tmp_path):
    cfg = _cfg(steps=1, accumulate=1)
    samples = load_samples(tiny_data, cfg)
    Trainer(cfg, samples, tmp_path, progress=False).run()
    other = Trainer(_cfg(steps=1, accumulate=1, lr=2e-3), samples, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different config"):
        other.load_checkpoint()


def test_stage2_can_train_on_stage1_crops_only(tiny_data, tmp_path):
    from kidney.model import save_weights
    w1 = save_weights(KidneyNet("tiny", seed=1), tmp_path / "stage1.npz", {"stage": 1, "spacing_mm": 8.0})
    kw = dict(stage=2, spacing=4.0, stage1_spacing=8.0)
    gt = load_samples(tiny_data, _cfg(**kw))
    both = load_samples(tiny_data, _cfg(stage1_weights=str(w1), **kw))
    only = load_samples(tiny_data, _cfg(stage1_weights=str(w1), gt_crops=False, **kw))
    assert len(gt) == 4 and len(only) >= 2 and len(both) == len(gt) + len(only)
    gt_masks = {s.mask.tobytes() for s in gt}
    assert not any(s.mask.tobytes() in gt_masks for s in only)  # masks from stage 1, not the truth
    with pytest.raises(ValueError, match="stage1_weights"):
        TrainConfig(stage=2, gt_crops=False).resolved()


def test_exported_weights_name_their_starting_files_by_digest_not_path(tiny_data, tmp_path):
    """A run started from other weights records their file name and SHA-256, so shipped weights carry
    no path of the machine that trained them, and the record still tells two starting files apart."""
    import hashlib
    from kidney.model import read_weights, save_weights
    init = save_weights(KidneyNet("tiny", seed=3), tmp_path / "start" / "init.npz", {"stage": 1})
    cfg = _cfg(steps=1, accumulate=1, init_weights=str(init))
    trainer = Trainer(cfg, load_samples(tiny_data, cfg), tmp_path / "run", progress=False).run()
    _, meta = read_weights(trainer.export_weights())
    digest = hashlib.sha256(init.read_bytes()).hexdigest()[:16]
    assert meta["train"]["init_weights"] == f"init.npz (sha256 {digest})"
    assert str(tmp_path) not in json.dumps(meta)
    assert meta["train"]["stage1_weights"] is None


def test_exported_weights_name_the_data_folder_not_its_path(tiny_data, tmp_path):
    """kidney.train.train records the training data as a count and the folder's name, never the
    path it had on the training machine."""
    from kidney.model import read_weights
    from kidney.train import train
    trainer = train(tiny_data, tmp_path / "run", _cfg(steps=1, accumulate=1), progress=False)
    _, meta = read_weights(trainer.export_weights())
    assert meta["data"] == f"2 cases from {tiny_data.name}"
    assert str(tiny_data.parent) not in json.dumps(meta) and str(tmp_path) not in json.dumps(meta)


def test_nnunet_augmentation_is_seeded_and_crops_stage1_only(tiny_phantom):
    hu, lab = tiny_phantom.image, tiny_phantom.labels
    cfg1, cfg2 = A.augmentation("nnunet", 1), A.augmentation("nnunet", 2)
    assert cfg1.p_fov_crop > 0 and cfg2.p_fov_crop == 0
    shapes = set()
    for i in range(12):
        a = A.augment(hu, lab, np.random.default_rng([7, i]), cfg1)
        b = A.augment(hu, lab, np.random.default_rng([7, i]), cfg1)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])   # same seed, same bits
        assert a[0].shape == a[1].shape and a[0].dtype == np.float32
        shapes.add(a[0].shape)
        c = A.augment(hu, lab, np.random.default_rng([7, i]), cfg2, mask=lab > 0)
        assert c[0].shape == hu.shape == c[2].shape
    assert len(shapes) > 1 and hu.shape in shapes      # some draws crop the field of view


def test_scanner_augmentation_changes_texture_only_and_is_seeded(tiny_phantom):
    """``--augment scanner``: blur, noise and low resolution only — the labels and the shape stay,
    the HU move by the noise alone (no intensity scale or shift), same seed same bits; and the
    extra noise's in-plane point spread makes neighbours alike as drawn (white at σ 0)."""
    hu, lab = tiny_phantom.image, tiny_phantom.labels
    cfg = A.augmentation("scanner", 2)
    changed = 0
    for i in range(16):
        a = A.augment(hu, lab, np.random.default_rng([9, i]), cfg, mask=lab > 0)
        b = A.augment(hu, lab, np.random.default_rng([9, i]), cfg, mask=lab > 0)
        assert np.array_equal(a[0], b[0])                                   # same seed, same bits
        assert np.array_equal(a[1], lab) and np.array_equal(a[2], lab > 0)  # geometry untouched
        changed += not np.array_equal(a[0], hu.astype(np.float32))
        assert abs(float(a[0].mean()) - float(hu.mean())) < 20.0            # no HU shift or scale
    assert 0 < changed < 16                                                 # each step drawn, some none
    noise = np.random.default_rng(0).standard_normal((4, 64, 64)).astype(np.float32)

    def lag1(v):
        return float(np.mean(v[:, :, 1:] * v[:, :, :-1]) / np.mean(v * v))
    assert abs(lag1(A._correlated(noise, 0.0))) < 0.05                     # white
    smooth = A._correlated(noise, 1.0)
    assert lag1(smooth) > 0.6 and abs(float(smooth.std()) - 1.0) < 1e-3    # alike, unit sd
    assert lag1(A._correlated(noise, 0.5)) < lag1(smooth)


def test_fat_strands_paint_thin_soft_tissue_into_fat_only_and_are_seeded():
    """Step F: only fat voxels change, towards one soft-tissue HU per crop, in a thin band (a small
    share of the fat, not all of it); labels untouched; same seed, same bits; off by default."""
    from dataclasses import replace as _replace
    from kidney.augment import NO_AUGMENT
    rng0 = np.random.default_rng(0)
    hu = np.where(rng0.random((24, 48, 48)) < 0.5, -100.0, 50.0).astype(np.float32)
    hu[:, :24] = -100.0                                   # a block of fat
    labels = (hu > 0).astype(np.uint8)
    cfg = _replace(NO_AUGMENT, p_fat_strands=1.0)
    a = A.augment(hu, labels, np.random.default_rng(5), cfg)
    b = A.augment(hu, labels, np.random.default_rng(5), cfg)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], labels)
    changed = a[0] != hu
    fat = (hu > -200) & (hu < -30)
    assert changed.any() and not (changed & ~fat).any()               # fat only
    share = changed[fat].mean()
    assert 0.01 < share < 0.5                                          # thin: a band, not the fat
    moved = a[0][changed]
    assert (moved > -100.0).all() and (moved <= 40.0 + 1e-3).all()     # towards soft tissue, no further
    assert np.array_equal(A.augment(hu, labels, np.random.default_rng(5), NO_AUGMENT)[0], hu)
    with pytest.raises(ValueError, match="fat_strands"):
        TrainConfig(stage=2, fat_strands=1.5).resolved()


def test_augmentation_pieces():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-300, 500, size=(6, 7, 8)).astype(np.float32)
    g = A._gamma(hu, 1.0, False, (-160, 300))
    assert np.allclose(g, hu, atol=1e-3)                     # gamma 1 is the identity
    g = A._gamma(hu, 1.5, False, (-160, 300))
    inside = (hu >= -160) & (hu <= 300)
    assert np.array_equal(g[~inside], hu[~inside]) and (g[inside] <= hu[inside] + 1e-3).all()
    low = A._low_resolution(hu, (0.5, 0.5, 0.5))
    assert low.shape == hu.shape and low.dtype == np.float32
    assert np.array_equal(A._low_resolution(hu, (1.0, 1.0, 1.0)), hu)
    with pytest.raises(ValueError, match="augmentation"):
        A.augmentation("heavy", 1)


def test_kidney_free_crops_hold_no_kidney_and_are_seeded():
    from dataclasses import replace as _replace
    from kidney.augment import NNUNET_AUGMENT, augment
    labels = np.zeros((40, 16, 16), np.uint8)
    labels[25:30, 4:10, 4:10] = 1
    hu = np.random.default_rng(0).normal(0, 50, labels.shape).astype(np.float32)
    cfg = _replace(NNUNET_AUGMENT, p_fov_crop=1.0, p_fov_kidney_free=1.0, p_affine=0.0)
    for seed in range(10):
        h, lab, _ = augment(hu, labels, np.random.default_rng(seed), cfg)
        assert lab.shape[0] >= cfg.kidney_free_min_slices and not lab.any()
        h2, lab2, _ = augment(hu, labels, np.random.default_rng(seed), cfg)
        assert np.array_equal(h, h2)
    # too few kidney-free slices: an ordinary field-of-view crop instead
    labels[2:38] = 1
    _, lab, _ = augment(hu, labels, np.random.default_rng(1), cfg)
    assert lab.any()


def test_edge_cuts_end_the_crop_inside_its_kidney_and_are_seeded():
    from dataclasses import replace as _replace
    from kidney.augment import NO_AUGMENT, augment
    labels = np.zeros((30, 12, 12), np.uint8)
    labels[8:20, 3:9, 3:9] = 1
    labels[12:15, 4:7, 4:7] = 2
    hu = np.random.default_rng(0).normal(0, 50, labels.shape).astype(np.float32)
    mask = labels > 0
    cfg = _replace(NO_AUGMENT, p_edge_cut=1.0)  # applies even with the rest switched off
    sides = set()
    for seed in range(12):
        h, lab, m = augment(hu, labels, np.random.default_rng(seed), cfg, mask=mask)
        n = lab.shape[0]
        assert 0 < n < labels.shape[0] and h.shape == lab.shape == m.shape
        top = np.array_equal(lab, labels[:n])
        assert top or np.array_equal(lab, labels[-n:])  # one side of a plane, nothing else changed
        assert np.array_equal(h, hu[:n] if top else hu[-n:]) and np.array_equal(m, lab > 0)
        cut = lab[-1] if top else lab[0]  # the slice at the cut holds kidney: the scan ends inside it
        assert cut.any() and lab.sum() < labels.sum()
        sides.add(top)
        h2, lab2, _ = augment(hu, labels, np.random.default_rng(seed), cfg, mask=mask)
        assert np.array_equal(h, h2) and np.array_equal(lab, lab2)
    assert sides == {True, False}
    # fewer than two labelled slices: left as it is
    one = np.zeros_like(labels)
    one[5] = 1
    h, lab, _ = augment(hu, one, np.random.default_rng(0), cfg)
    assert np.array_equal(lab, one) and np.array_equal(h, hu)
    # the named sets leave it off (so their draws, and the runs made with them, are unchanged)
    assert all(a.p_edge_cut == 0.0 for a in A.AUGMENTATIONS.values())


def test_edge_cuts_are_for_stage2():
    with pytest.raises(ValueError, match="edge_cuts is for stage 2"):
        TrainConfig(stage=1, edge_cuts=0.3).resolved()
    with pytest.raises(ValueError, match="edge_cuts must lie"):
        TrainConfig(stage=2, edge_cuts=-0.1).resolved()
    assert TrainConfig(stage=2, augmentation="none", edge_cuts=0.3).resolved().edge_cuts == 0.3


def test_kidney_free_crops_need_stage1_fov_crops():
    with pytest.raises(ValueError, match="kidney_free_crops"):
        TrainConfig(stage=2, augmentation="nnunet", kidney_free_crops=0.3).resolved()
    with pytest.raises(ValueError, match="kidney_free_crops"):
        TrainConfig(stage=1, augmentation="paper", kidney_free_crops=0.3).resolved()
    with pytest.raises(ValueError, match="kidney_free_crops"):
        TrainConfig(stage=1, augmentation="nnunet", kidney_free_crops=1.5).resolved()
    assert TrainConfig(stage=1, augmentation="nnunet", kidney_free_crops=0.3).resolved().kidney_free_crops == 0.3


def test_kept_freed_memory_gives_the_same_weights_as_the_allocators_default(tiny_data, tmp_path):
    """``kidney train`` keeps freed memory in the process (sparseconv.allocator), so an array it
    allocates may hold an earlier array's bytes where a fresh page would read zeros; a kernel that read
    an output before writing it would give other bits. Both ways must give the same weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kidney.model import read_weights
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    weights = []
    for extra in ([], ["--return-freed-memory"]):
        out = tmp_path / ("returned" if extra else "kept")
        subprocess.run([sys.executable, "-m", "kidney", "train", "--data", str(tiny_data), "--out", str(out),
                        "--stage", "1", "--model", "compact", "--spacing", "4", "--steps", "3", "--accumulate", "2",
                        "--lr", "1e-3", "--warmup", "1", "--seed", "5", "--quiet", *extra],
                       cwd=root, env=env, check=True, capture_output=True, text=True, timeout=300)
        weights.append(read_weights(out / "weights.npz")[0])
    kept, returned = weights
    assert kept.keys() == returned.keys() and len(kept) > 100
    assert all(kept[k].tobytes() == returned[k].tobytes() for k in kept)


def test_training_on_cuda_runs_through_the_gpu_backend(tiny_data, tmp_path, kidney_on_cupy_stand_in):
    """``kidney train --device cuda`` on the CuPy stand-in (NumPy arrays; every kernel the CUDA
    kernels compiled for the CPU emulation): the model, its optimiser state and each batch go
    through the GPU backend, the losses follow the CPU run's, a run resumed from its checkpoint ends
    on the same bits as one straight run, and the weights file says where it was trained."""
    from kidney import cli
    from kidney.model import load_weights
    args = ["train", "--data", tiny_data, "--stage", "1", "--model", "tiny", "--spacing", "8", "--steps", "3",
            "--accumulate", "1", "--warmup", "1", "--checkpoint-every", "1", "--seed", "5", "--quiet"]
    assert cli.main([str(a) for a in args] + ["--out", str(tmp_path / "cpu")]) == 0
    kidney_on_cupy_stand_in(*args, "--out", tmp_path / "gpu", "--device", "cuda")
    kidney_on_cupy_stand_in(*args, "--out", tmp_path / "resumed", "--device", "cuda", "--stop-at", "2")
    kidney_on_cupy_stand_in(*args, "--out", tmp_path / "resumed", "--device", "cuda")
    cpu, gpu = ([json.loads(l)["loss"] for l in (tmp_path / k / "train_log.jsonl").read_text().splitlines()]
                for k in ("cpu", "gpu"))
    assert len(cpu) == len(gpu) == 3 and np.allclose(gpu, cpu, rtol=1e-3), (gpu, cpu)
    straight, meta = load_weights(tmp_path / "gpu" / "weights.npz")
    resumed, _ = load_weights(tmp_path / "resumed" / "weights.npz")
    assert meta["device"] == "cuda" and meta["optimizer_steps"] == 3
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert np.array_equal(a, b), name
