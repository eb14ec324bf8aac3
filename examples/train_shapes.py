"""Train your first sparse network: a small sparse ConvNeXt-V2 U-Net that tells hollow spheres from
solid blobs, voxel by voxel, in generated 32³ scenes — NumPy only, no PyTorch.

    python examples/train_shapes.py            # ~100 steps, well under a minute on 2 cores
    python examples/train_shapes.py --quick    # a few seconds: the CI smoke run

Writes ``<out>/shapes_unet.npz`` (the weights; ``model.load(path)`` reads them back) and
``<out>/shapes_slice.png`` (a held-out slice: truth beside prediction).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import sparseconv
from sparseconv import functional as F, nn, no_grad, optim
from sparseconv.toydata import make_batch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--size", type=int, default=32, help="grid edge (voxels)")
    p.add_argument("--dims", default="8,16", help="channels per U-Net level")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=5)
    p.add_argument("--backend", default=None, help="reference | numba | cupy (default: the library's choice)")
    p.add_argument("--out", default="shapes_out", help="folder for the model and the PNG")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.size, args.eval_batches = 8, 16, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        sparseconv.set_backend(args.backend)
    from tqdm import tqdm

    sparseconv.manual_seed(args.seed)
    dims = tuple(int(d) for d in args.dims.split(","))
    model = nn.SparseUNet(1, 2, dims=dims, depths=(1,) * len(dims), stem_kernel=3, init="default")
    opt = optim.AdamW(optim.param_groups(model, 1e-4), lr=args.lr, betas=(0.9, 0.95))
    sched = optim.WarmupCosine(opt, warmup_steps=max(args.steps // 5, 1), total_steps=args.steps)
    print(f"backend {sparseconv.get_backend().name}; SparseUNet dims {dims}: {model.num_parameters():,} parameters")

    rng = np.random.default_rng(args.seed + 1)
    start, voxels = time.perf_counter(), 0
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for _ in bar:
        x, target = make_batch(rng, args.batch_size, args.size)
        logits = model(x)
        loss = F.soft_dice_loss(logits, target) + F.bce_with_logits(logits, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        voxels += len(x)
        dice = F.dice_score(np.asarray(logits.feats) > 0, target > 0.5).mean()
        bar.set_postfix(loss=f"{loss.item():.3f}", dice=f"{dice:.3f}",
                        vox_s=f"{voxels / (time.perf_counter() - start):,.0f}")
    train_s = time.perf_counter() - start

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "shapes_unet.npz")
    model.save(model_path)

    model.eval()
    held_out = np.random.default_rng(12345)
    preds, trues, example = [], [], None
    with no_grad():
        for _ in range(args.eval_batches):
            x, target = make_batch(held_out, args.batch_size, args.size)
            pred = np.asarray(model(x).feats) > 0
            preds.append(pred)
            trues.append(target > 0.5)
            example = example or (x, target, pred)
    dice = F.dice_score(np.concatenate(preds), np.concatenate(trues))
    print(f"trained {args.steps} steps in {train_s:.1f} s ({voxels / train_s:,.0f} voxels/s); "
          f"final loss {loss.item():.3f}")
    print(f"held-out per-voxel Dice: shell {dice[0]:.4f}, blob {dice[1]:.4f}")
    print(f"model saved to {model_path}")
    png = os.path.join(args.out, "shapes_slice.png")
    save_slice_png(png, *example)
    print(f"slice picture saved to {png}")
    return dice


def save_slice_png(path, x, target, pred):
    """A z-slice of the first scene showing both classes: truth (left) beside prediction (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = x.coords[:, 0] == 0
    coords = x.coords[rows]
    depth = x.spatial_shape[0]
    per_class = [np.bincount(coords[target[rows][:, c] > 0.5, 1], minlength=depth) for c in range(2)]
    z = int(np.argmax(np.minimum(*per_class) * depth + per_class[0] + per_class[1]))
    on = coords[:, 1] == z

    def label_image(onehot):
        img = np.zeros(x.spatial_shape[1:], np.int64)  # 0 empty, 1 shell, 2 blob
        cls = np.where(onehot[rows][on][:, 0], 1, np.where(onehot[rows][on][:, 1], 2, 0))
        img[coords[on, 2], coords[on, 3]] = cls
        return img

    cmap = matplotlib.colors.ListedColormap(["white", "tab:orange", "tab:blue"])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax, (title, onehot) in zip(axes, [("truth", target > 0.5), ("prediction", pred)]):
        ax.imshow(label_image(onehot), cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_title(f"{title} (z = {z})")
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("orange: hollow-sphere shell, blue: solid blob")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
