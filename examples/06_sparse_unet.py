"""06 — A sparse U-Net from the inside: levels, down and inverse maps, sites and memory per level.

    python examples/06_sparse_unet.py            # full size, figures into docs/figures
    python examples/06_sparse_unet.py --smoke    # a few seconds (CI), figures into --out

The paper's network (docs/design.md, Network) is a six-level sparse U-Net: channels (16, 32, 64, 128, 256, 512),
a k2 s2 ``SparseConv3d`` between levels and a k2 s2 ``SparseInverseConv3d`` on the way back up.
This example takes a CT-like active set and

1. builds the **level hierarchy** the way the network does: each level's sites are
   ``unique(c // 2)`` of the level above (``kmap.down_map``), on a ``ceil(shape / 2)`` grid, with
   ``stride`` recording the factor to the input grid; prints per level the grid, sites, occupancy,
   active children per coarse site, and kernel-map pairs (submanifold k3, down, inverse);
2. shows that the **inverse map is the down map read backwards** (``inverse_map`` returns
   ``down.transposed()``, cached on the coarse sites, and lands back on the fine level's own sites);
3. tallies **memory per level** for the paper's channel widths: features (``N·C·4`` bytes) and
   neighbour tables (``N·27·4``), against the dense tensor of the same level (``D·H·W·C·4``);
4. runs a compact six-level ``nn.SparseUNet`` forward on the volume and lists the kernel maps it
   built and cached per level — each built once, shared by every layer on that level.

Figures: ``06_unet_levels.png`` (the middle slice of every level, and the down map's parent→child
blocks), ``06_unet_memory.png`` (sites and memory per level, sparse vs dense).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy.ndimage import uniform_filter  # noqa: E402

import sparseconv  # noqa: E402
from sparseconv import SparseTensor, nn, no_grad  # noqa: E402
from sparseconv.kmap import down_map, inverse_map, submanifold_map  # noqa: E402

from ct_like import ct_like_coords  # noqa: E402

PAPER_DIMS = (16, 32, 64, 128, 256, 512)
MiB = 2 ** 20


def slice_image(t: SparseTensor, z: int) -> np.ndarray:
    img = np.zeros(t.spatial_shape[1:], bool)
    m = t.coords[:, 1] == z
    img[t.coords[m, 2], t.coords[m, 3]] = True
    return img


def set_log_floor(ax, values):
    """Log y axis whose floor is a power of ten at least 3x below the smallest bar, so that every bar
    (a bar starts at the axis floor on a log scale) shows with a visible height."""
    ax.set_yscale("log")
    ax.set_ylim(bottom=10.0 ** np.floor(np.log10(min(values) / 3)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG figures")
    p.add_argument("--smoke", "--quick", action="store_true", help="small sizes: a few seconds (CI)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    shape = (32, 64, 64) if args.smoke else (96, 192, 192)
    coords = ct_like_coords(shape, 0.15)
    x = SparseTensor(coords, np.ones((len(coords), 1), np.float32), shape)
    print(f"input: CT-like active set, grid {shape}, {len(x):,} active voxels ({len(x) / np.prod(shape):.1%}), "
          f"backend {sparseconv.get_backend().name}\n")

    # ---- 1. the level hierarchy -----------------------------------------------------------------------
    print("1. levels: each is unique(c // 2) of the one above, on a ceil(shape / 2) grid")
    levels, downs = [x], []
    for _ in range(len(PAPER_DIMS) - 1):
        kmap, coarse = down_map(levels[-1], 2, 2)
        downs.append(kmap)
        levels.append(coarse)
    print(f"{'level':>5}{'grid':>16}{'stride':>8}{'sites':>10}{'occupancy':>11}{'children':>10}"
          f"{'subm k3 pairs':>15}{'down pairs':>12}{'inverse pairs':>15}")
    rows = []
    for lv, t in enumerate(levels):
        subm = submanifold_map(t, 3)
        grid_size = int(np.prod(t.spatial_shape))
        children = len(levels[lv - 1]) / len(t) if lv else float("nan")
        down_pairs = downs[lv].num_pairs if lv < len(downs) else 0
        inv_pairs = inverse_map(t)[0].num_pairs if lv else 0
        rows.append(dict(level=lv, grid=t.spatial_shape, stride=t.stride[0], n=len(t), grid_size=grid_size,
                         subm_pairs=subm.num_pairs, down_pairs=down_pairs))
        print(f"{lv:>5}{str(t.spatial_shape):>16}{t.stride[0]:>8}{len(t):>10,}{len(t) / grid_size:>11.1%}"
              f"{'' if lv == 0 else f'{children:.2f}':>10}{subm.num_pairs:>15,}"
              f"{f'{down_pairs:,}' if lv < len(downs) else '-':>12}{f'{inv_pairs:,}' if lv else '-':>15}")
    print("children = active fine sites per coarse site (of 8); a level's down pairs = the level's sites "
          "(every fine site has exactly one parent)")

    # ---- 2. the inverse map is the down map reversed -------------------------------------------------
    print("\n2. the inverse map is the down map read backwards")
    fine, coarse, down = levels[0], levels[1], downs[0]
    inv, back = inverse_map(coarse)
    assert back is fine and inv is down.transposed() and inv.transposed() is down
    pairs_equal = all(
        np.array_equal(np.sort(inv.pairs(k)[0]), np.sort(down.pairs(k)[1])) and
        np.array_equal(np.sort(inv.pairs(k)[1]), np.sort(down.pairs(k)[0])) for k in range(down.K))
    print(f"  down map   {down}")
    print(f"  inverse    {inv}")
    print(f"  inverse_map(coarse) returns (down.transposed(), the fine level itself): True; same pairs with in/out "
          f"swapped, per offset: {pairs_equal}")
    print(f"  so an inverse conv lands exactly on the {len(fine):,} fine sites (not on all "
          f"{8 * len(coarse):,} children of the coarse sites)")

    # ---- 3. memory per level -----------------------------------------------------------------------
    print(f"\n3. memory per level with the paper's widths {PAPER_DIMS} (float32 features, int32 tables)")
    print(f"{'level':>5}{'C':>5}{'sparse feats':>14}{'subm table':>12}{'down table':>12}{'dense tensor':>14}"
          f"{'feats/dense':>13}{'(+ maps)/dense':>16}")
    tot_sparse = tot_dense = tot_feats = 0.0
    for r, c in zip(rows, PAPER_DIMS):
        feats_b = r["n"] * c * 4
        table_b = r["n"] * 27 * 4
        down_b = (len(levels[r["level"] + 1]) * 8 * 4) if r["level"] + 1 < len(levels) else 0
        dense_b = r["grid_size"] * c * 4
        r.update(C=c, feats=feats_b, table=table_b, down_table=down_b, dense=dense_b)
        tot_sparse += feats_b + table_b + down_b
        tot_feats += feats_b
        tot_dense += dense_b
        print(f"{r['level']:>5}{c:>5}{feats_b / MiB:>11.2f} MiB{table_b / MiB:>8.2f} MiB{down_b / MiB:>8.2f} MiB"
              f"{dense_b / MiB:>10.2f} MiB{feats_b / dense_b:>13.1%}{(feats_b + table_b + down_b) / dense_b:>16.1%}")
    print(f"one activation per level: sparse features {tot_feats / MiB:.1f} MiB vs dense {tot_dense / MiB:.1f} MiB "
          f"({tot_feats / tot_dense:.0%}); with the kernel maps {tot_sparse / MiB:.1f} MiB ({tot_sparse / tot_dense:.0%})")
    print("the maps are built once per level and shared by every layer on it; a network holds many activations")
    print("per level (every block's intermediates), so the features dominate as the network gets deeper")

    # ---- 4. a compact U-Net forward; the maps it cached ---------------------------------------------
    dims = (8, 16, 24, 32, 48, 64)
    sparseconv.manual_seed(0)
    model = nn.SparseUNet(1, 3, dims=dims, depths=(1,) * len(dims), decoder_depth=1)
    xin = SparseTensor(x.coords, x.feats, shape)  # fresh sites: an empty kernel-map cache
    t0 = time.perf_counter()
    with no_grad():
        y = model(xin)
    t_fwd = time.perf_counter() - t0
    print(f"\n4. compact SparseUNet dims={dims}, {model.num_parameters():,} parameters: forward in {t_fwd:.2f} s, "
          f"output {y.feats.shape} on the input's sites")
    t, lv = xin, 0
    while t is not None:
        keys = []
        for key in t.cache:
            if key == "index":
                keys.append("hash index")
            elif isinstance(key, tuple) and key[0] == "subm":
                keys.append(f"subm k{key[1][0]}")
            elif isinstance(key, tuple) and key[0] == "down":
                keys.append("down k2s2")
            elif isinstance(key, tuple) and key[0] == "up":
                keys.append("inverse k2s2")
            else:
                keys.append(str(key))
        print(f"  level {lv} ({len(t):,} sites): cached {', '.join(keys)}")
        nxt = t.cache.get(("down", (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1)))
        t, lv = (nxt[1] if nxt else None), lv + 1
    assert lv == len(dims), f"found the cached maps of {lv} levels, expected {len(dims)}"

    # ---- figures -----------------------------------------------------------------------------------
    fig = plt.figure(figsize=(13, 7))
    gs = fig.add_gridspec(2, 4)
    zmid = shape[0] // 2
    for lv, t in enumerate(levels):
        ax = fig.add_subplot(gs[lv // 4, lv % 4])
        ax.imshow(slice_image(t, zmid // t.stride[0]), cmap="Greys", vmin=0, vmax=1.3, interpolation="nearest")
        ax.set_title(f"level {lv}: stride {t.stride[0]}, grid {t.spatial_shape}\n{len(t):,} sites "
                     f"({len(t) / np.prod(t.spatial_shape):.0%} of the grid)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    # the down map's parent -> children blocks, zoomed: fine sites coloured by their coarse parent
    ax = fig.add_subplot(gs[1, 2:])
    nbr = downs[0].neighbors  # (n_coarse, 8): the fine rows of each coarse site's children
    parent = np.full(len(fine), -1)
    for k in range(8):
        has = nbr[:, k] >= 0
        parent[nbr[has, k]] = np.flatnonzero(has)
    m = fine.coords[:, 1] == zmid
    hw, hh = 24, 12  # half width / height of the zoom window, in voxels
    density = uniform_filter(slice_image(fine, zmid).astype(float), size=(2 * hh, 2 * hw))
    cy, cx = np.unravel_index(np.argmax(density), density.shape)
    cy, cx = min(max(cy, hh), shape[1] - hh), min(max(cx, hw), shape[2] - hw)
    y0, x0 = cy - hh, cx - hw
    img = np.full((2 * hh, 2 * hw), np.nan)
    for (yy, xx), par in zip(fine.coords[m, 2:], parent[m]):
        if y0 <= yy < y0 + 2 * hh and x0 <= xx < x0 + 2 * hw:
            img[yy - y0, xx - x0] = (par * 7919) % 20
    ax.imshow(np.ma.masked_invalid(img), cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
    for r in range(2 * hh + 1):
        if (r + y0) % 2 == 0:
            ax.axhline(r - 0.5, color="#dddddd", lw=0.5)
    for c in range(2 * hw + 1):
        if (c + x0) % 2 == 0:
            ax.axvline(c - 0.5, color="#dddddd", lw=0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"the down map, zoomed: level-0 sites (y {y0}–{y0 + 2 * hh - 1}, x {x0}–{x0 + 2 * hw - 1}) "
                 "coloured by their level-1 parent;\ngrid lines = the 2×2 blocks that become one coarse site",
                 fontsize=9)
    fig.suptitle(f"the levels of a sparse U-Net: middle slice of each level's active sites (input {shape})",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "06_unet_levels.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    L = np.arange(len(rows))
    ax = axes[0]
    ax.bar(L - 0.2, [r["n"] for r in rows], 0.4, label="active sites", color="tab:blue")
    ax.bar(L + 0.2, [r["grid_size"] for r in rows], 0.4, label="grid positions (dense)", color="#bbbbbb")
    set_log_floor(ax, [r["n"] for r in rows])
    ax.set_xticks(L, [f"{r['level']}\n×{r['stride']}" for r in rows])
    ax.set_xlabel("level / stride")
    ax.set_title("sites per level")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.bar(L - 0.2, [r["feats"] / MiB for r in rows], 0.4, label="sparse: features", color="tab:green")
    ax.bar(L - 0.2, [(r["table"] + r["down_table"]) / MiB for r in rows], 0.4,
           bottom=[r["feats"] / MiB for r in rows], label="+ kernel maps (once per level)", color="tab:olive")
    ax.bar(L + 0.2, [r["dense"] / MiB for r in rows], 0.4, label="dense tensor", color="#bbbbbb")
    set_log_floor(ax, [r["feats"] / MiB for r in rows])
    ax.set_xticks(L, [f"{r['level']}\nC={r['C']}" for r in rows])
    ax.set_xlabel("level / channels (the paper's widths)")
    ax.set_ylabel("MiB per activation")
    ax.set_title("memory per level, float32")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "06_unet_memory.png", dpi=120)
    plt.close(fig)
    print(f"\nfigures written to {out} ({time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
