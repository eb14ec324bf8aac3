"""03 — Submanifold vs regular sparse convolution: the active set, and what it costs.

    python examples/03_submanifold_vs_regular.py            # full size, figures into docs/figures
    python examples/03_submanifold_vs_regular.py --smoke    # a few seconds (CI), figures into --out

The input is a thin spherical shell — a 2D surface in a 3D grid, the situation sparse convolution
is made for. Two stacks of 3×3×3 convolutions run on it:

* **regular sparse conv** (``sparse_conv3d`` with k=3, s=1, p=1: dense-convolution semantics): an
  output is active wherever its window holds an active input, so every layer dilates the active
  set by one voxel in every direction — the shell thickens and the cost grows layer by layer;
* **submanifold conv** (``subm_conv3d``): outputs only at the input's active sites, so the set
  and the cost stay fixed however deep the network.

Printed per layer: active sites, kernel-map pairs, multiply-adds, and the measured forward time
(Numba) — against a dense conv3d of the whole grid. FLOPs = 2 · pairs · Cin · Cout.

The price of keeping the set fixed: a submanifold conv's output reads only active neighbours, so
information moves only between active sites that a chain of neighbours connects. The last part
shows it on two blobs one empty voxel apart — no number of submanifold layers lets one see the
other — and shows a down conv (k2 s2), a submanifold conv on the coarse level and the inverse conv
carrying information across the gap, back onto the fine sites: why a sparse U-Net has down/up pairs.

Figures: ``03_active_set_growth.png``, ``03_cost.png``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparseconv import SparseTensor, dense, get_backend  # noqa: E402
from sparseconv.functional import sparse_conv3d, sparse_inverse_conv3d, subm_conv3d  # noqa: E402
from sparseconv.functional import conv as F  # noqa: E402
from sparseconv.kmap import down_map, submanifold_map  # noqa: E402
from sparseconv.testing.conformance import dense_weight  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def shell(size: int) -> np.ndarray:
    """``(N, 4) int32`` voxels of a one-voxel-thick spherical shell centred in a ``size³`` grid."""
    zyx = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = np.linalg.norm(zyx - (size - 1) / 2, axis=1)
    R = 0.3 * size
    keep = np.abs(r - R) < 0.5
    return np.c_[np.zeros(keep.sum(), np.int32), zyx[keep]].astype(np.int32)


def information_flow():
    """Does blob A's output change when blob B's input does? Submanifold layers alone vs a down/up pair."""
    print("\ninformation flow between two blobs: does A's output change when B's input does?")
    grid = np.argwhere(np.ones((2, 2, 5), bool))
    blob_a, blob_b = grid[grid[:, 2] <= 1], grid[grid[:, 2] >= 3]  # x = 0..1 and x = 3..4; x = 2 stays empty
    coords = np.c_[np.zeros(len(blob_a) + len(blob_b), np.int32), np.r_[blob_a, blob_b]].astype(np.int32)
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((len(coords), 2))
    w3 = [rng.standard_normal((27, 2, 2)) / np.sqrt(27 * 2) for _ in range(10)]
    w_down, w_up = (rng.standard_normal((8, 2, 2)) / 4 for _ in range(2))
    w_mid = rng.standard_normal((27, 2, 2)) / np.sqrt(27 * 2)

    def subm_only(t):
        for w in w3:
            t = subm_conv3d(t, w)
        return t

    def down_subm_up(t):
        coarse = subm_conv3d(sparse_conv3d(t, w_down, kernel_size=2, stride=2), w_mid)
        return sparse_inverse_conv3d(coarse, w_up, kernel_size=2)

    x = SparseTensor(coords, feats, (2, 2, 5))  # sorts the rows into canonical order (A and B interleave)
    a_rows = np.flatnonzero(x.coords[:, 3] <= 1)
    b_rows = np.flatnonzero(x.coords[:, 3] >= 3)
    changed = x.feats.copy()
    changed[b_rows] += 1.0  # B's input changes, A's does not
    x_changed = x.replace_feats(changed)
    print(f"  blob A: {len(a_rows)} voxels at x = 0..1, blob B: {len(b_rows)} voxels at x = 3..4, x = 2 empty")
    results = {}
    for name, net in (("10 submanifold k3 layers", subm_only),
                      ("down k2s2 -> submanifold k3 -> inverse k2s2", down_subm_up)):
        y0, y1 = net(x), net(x_changed)
        assert np.array_equal(y0.coords, x.coords) and np.array_equal(y1.coords, x.coords)  # back on A and B
        change = float(np.abs(y1.feats[a_rows] - y0.feats[a_rows]).max())
        results[name] = change
        print(f"  {name:<44} max |change of A's output| = {change:.1e}")
    assert results["10 submanifold k3 layers"] == 0.0 and results["down k2s2 -> submanifold k3 -> inverse k2s2"] > 0
    print("  a submanifold conv reads active neighbours only, so A and B never meet on the fine level; on the")
    print("  coarse level (k2 s2: x = 0..1 -> 0, x = 3..4 -> 1, 2) they are neighbours, and the inverse conv")
    print("  brings what the coarse level mixed back onto the fine level's own sites")


def timed(fn, repeat=3):
    fn()  # warm-up (JIT)
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG figures")
    p.add_argument("--smoke", "--quick", action="store_true", help="small sizes: a few seconds (CI)")
    p.add_argument("--size", type=int, default=None, help="grid side (default 64, smoke 24)")
    p.add_argument("--layers", type=int, default=None, help="conv layers (default 6, smoke 3)")
    p.add_argument("--channels", type=int, default=16)
    args = p.parse_args(argv)
    size = args.size or (24 if args.smoke else 64)
    layers = args.layers or (3 if args.smoke else 6)
    C = args.channels
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    rng = np.random.default_rng(0)
    coords = shell(size)
    shape = (size,) * 3
    x0 = SparseTensor(coords, rng.standard_normal((len(coords), C)).astype(np.float32), shape)
    weight = (rng.standard_normal((27, C, C)) / np.sqrt(27 * C)).astype(np.float32)
    dense_flops = 2.0 * 27 * size ** 3 * C * C
    print(f"input: a spherical shell, {len(x0):,} active voxels of {size ** 3:,} ({len(x0) / size ** 3:.1%}), "
          f"C = {C}, kernel 3x3x3, backend {get_backend().name}")
    t0 = time.perf_counter()
    dense.conv3d(x0.dense(), dense_weight(weight, 3), padding=1)
    t_dense = time.perf_counter() - t0
    print(f"a dense conv3d of the grid: {dense_flops / 1e9:.3f} GFLOP per layer, whatever the input "
          f"({t_dense * 1e3:.0f} ms in NumPy, sparseconv.dense.conv3d)\n")
    print(f"{'layer':>5} | {'regular: sites':>15}{'pairs':>12}{'GFLOP':>8}{'ms':>8} | "
          f"{'submanifold: sites':>19}{'pairs':>11}{'GFLOP':>8}{'ms':>7}")

    regular, subm = [x0], [x0]
    stats = {"regular": [], "subm": []}
    for layer in range(1, layers + 1):
        # regular: the output sites are every position whose 3x3x3 window holds an active input
        xr = regular[-1]
        kmap, sites = down_map(xr, 3, 1, 1)
        t_r = timed(lambda: F.conv_forward(xr.feats, weight, kmap))
        regular.append(sites.replace_feats(F.conv_forward(xr.feats, weight, kmap)))
        stats["regular"].append((len(sites), kmap.num_pairs, 2.0 * kmap.num_pairs * C * C, t_r))
        # submanifold: the output sites are the input sites
        xs = subm[-1]
        smap = submanifold_map(xs, 3)
        t_s = timed(lambda: F.conv_forward(xs.feats, weight, smap))
        subm.append(xs.replace_feats(F.conv_forward(xs.feats, weight, smap)))
        stats["subm"].append((len(xs), smap.num_pairs, 2.0 * smap.num_pairs * C * C, t_s))
        (rn, rp, rf, rt), (sn, sp, sf, st) = stats["regular"][-1], stats["subm"][-1]
        print(f"{layer:>5} | {rn:>15,}{rp:>12,}{rf / 1e9:>8.3f}{rt * 1e3:>8.1f} | {sn:>19,}{sp:>11,}{sf / 1e9:>8.3f}"
              f"{st * 1e3:>7.1f}")
    tot_r = sum(s[2] for s in stats["regular"])
    tot_s = sum(s[2] for s in stats["subm"])
    print(f"\n{layers} layers: regular {tot_r / 1e9:.3f} GFLOP, submanifold {tot_s / 1e9:.3f} GFLOP "
          f"({tot_r / tot_s:.1f}x less), dense {layers * dense_flops / 1e9:.3f} GFLOP "
          f"({layers * dense_flops / tot_s:.0f}x less)")
    print(f"after {layers} regular layers the shell is {len(regular[-1]) / len(x0):.1f}x as many voxels "
          f"({len(regular[-1]) / size ** 3:.1%} of the grid); submanifold layers kept all {len(x0):,}")
    information_flow()

    # ---- figures -------------------------------------------------------------------------------
    show = sorted({0, 1, layers // 2, layers})
    fig, axes = plt.subplots(2, len(show), figsize=(3 * len(show), 6.2))
    z = size // 2
    for row, (name, stack) in enumerate([("regular conv", regular), ("submanifold conv", subm)]):
        for j, layer in enumerate(show):
            t = stack[layer]
            img = np.zeros(shape[1:], bool)
            m = t.coords[:, 1] == z
            img[t.coords[m, 2], t.coords[m, 3]] = True
            ax = axes[row, j]
            ax.imshow(img, cmap="Greys", vmin=0, vmax=1.2, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}, layer {layer}\n{len(t):,} sites", fontsize=9)
    fig.suptitle(f"the middle slice (z = {z}) of the active set after each 3×3×3 layer", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "03_active_set_growth.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    L = np.arange(0, layers + 1)
    ax = axes[0]
    ax.plot(L, [len(t) for t in regular], "o-", color="tab:red", label="regular sparse conv")
    ax.plot(L, [len(t) for t in subm], "s-", color="tab:blue", label="submanifold conv")
    ax.axhline(size ** 3, color="k", ls=":", label="dense grid")
    ax.set_yscale("log")
    ax.set_xticks(L)  # whole layers only (matplotlib would put ticks at 0.5 steps for few layers)
    ax.set_xlabel("layer (0 = the input)")
    ax.set_ylabel("active sites")
    ax.set_title("active set after each layer")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(L[1:], [s[2] / 1e9 for s in stats["regular"]], "o-", color="tab:red", label="regular sparse")
    ax.plot(L[1:], [s[2] / 1e9 for s in stats["subm"]], "s-", color="tab:blue", label="submanifold")
    ax.plot(L[1:], [dense_flops / 1e9] * layers, "k:", label="dense conv3d")
    ax.set_xticks(L[1:])
    ax.set_xlabel("layer")
    ax.set_ylabel("GFLOP of the layer (2·pairs·Cin·Cout)")
    ax.set_yscale("log")
    ax.set_title(f"cost of each 3×3×3 conv layer, C = {C}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "03_cost.png", dpi=120)
    plt.close(fig)
    print(f"\nfigures written to {out} ({time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
