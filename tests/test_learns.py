"""It learns: a small sparse U-Net, trained from a fixed seed on generated shapes (hollow spheres vs
solid blobs in a 32³ grid, labelled per voxel), separates them on held-out scenes (Dice ≥ 0.9)."""
import time

import numpy as np

import sparseconv
from sparseconv import functional as F, nn, no_grad, optim
from sparseconv.toydata import make_batch

STEPS, BATCH = 100, 2


def test_sparse_unet_learns_shapes():
    start = time.perf_counter()
    sparseconv.manual_seed(0)
    model = nn.SparseUNet(1, 2, dims=(8, 16), depths=(1, 1), stem_kernel=3, init="default")
    opt = optim.AdamW(optim.param_groups(model, 1e-4), lr=5e-3, betas=(0.9, 0.95))
    sched = optim.WarmupCosine(opt, warmup_steps=20, total_steps=STEPS)
    rng = np.random.default_rng(1)
    losses, voxels = [], 0
    for _ in range(STEPS):
        x, target = make_batch(rng, BATCH)
        logits = model(x)
        loss = F.soft_dice_loss(logits, target) + F.bce_with_logits(logits, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        losses.append(loss.item())
        voxels += len(x)
    train_s = time.perf_counter() - start

    model.eval()
    held_out = np.random.default_rng(12345)  # scenes never seen in training
    pred, true = [], []
    with no_grad():
        for _ in range(5):
            x, target = make_batch(held_out, BATCH)
            pred.append(np.asarray(model(x).feats) > 0)
            true.append(target > 0.5)
    dice = F.dice_score(np.concatenate(pred), np.concatenate(true))
    total_s = time.perf_counter() - start
    print(f"\n[learns] backend={sparseconv.get_backend().name} steps={STEPS} loss {np.mean(losses[:10]):.3f} -> "
          f"{np.mean(losses[-10:]):.3f}, held-out Dice shell={dice[0]:.4f} blob={dice[1]:.4f}, "
          f"train {train_s:.1f} s ({voxels / train_s:,.0f} voxels/s), total {total_s:.1f} s")
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert dice.min() >= 0.9, dice


def test_example_quick_mode(tmp_path):
    """``examples/train_shapes.py --quick``: trains a few steps, saves a loadable model and a PNG."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_shapes.py"
    spec = importlib.util.spec_from_file_location("train_shapes", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    dice = example.main(["--quick", "--out", str(tmp_path)])
    assert dice.shape == (2,) and np.all((0 <= dice) & (dice <= 1))
    assert (tmp_path / "shapes_slice.png").stat().st_size > 1000
    model = nn.SparseUNet(1, 2, dims=(8, 16), depths=(1, 1), stem_kernel=3)
    model.load(tmp_path / "shapes_unet.npz")
