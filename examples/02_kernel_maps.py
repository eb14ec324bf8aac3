"""02 — Kernel maps (rulebooks): which input row feeds which output row through which offset.

    python examples/02_kernel_maps.py            # full size, figures into docs/figures
    python examples/02_kernel_maps.py --smoke    # a few seconds (CI), figures into --out

What it shows, in order:

1. **A rulebook you can read**: a single z-slice with a handful of active voxels, its submanifold
   3×3×3 kernel map printed offset by offset as pairs ``out_row <- in_row``, and drawn as arrows
   from each output site to the input site it reads, ``p → p + offset`` (one panel per in-plane
   offset, so every arrow in a panel points along that panel's offset). Offsets with dz ≠ 0 have
   no pairs: the volume is one slice thick.
2. **Two views of one map**: the per-offset pair lists (what gather-GEMM-scatter consumes) and the
   ``(N, K)`` neighbour table (what the output-stationary kernels consume) — the same information.
3. **Symmetry and the centre identity**: the centre offset maps every site to itself; the pair
   (i → j) at +d is the pair (j → i) at −d, so a backend need look up only the 13 offsets before
   the centre and mirror them. Checked on the CT-like volume, with the time it saves — and, on a
   backend with ``submanifold_table`` (Numba: merged from the sorted grid rows, no hash), the same
   table in one call.
4. **Pair counts per offset on a CT-like volume** (bar chart): the submanifold map's 27 offsets
   and the k2 s2 down map's 8 child positions.

Figures: ``02_rulebook_2d.png``, ``02_neighbour_table.png``, ``02_pair_counts.png``.
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

from sparseconv import SparseTensor, get_backend  # noqa: E402
from sparseconv.kmap import coordinate_index, down_map, submanifold_map  # noqa: E402

from ct_like import ct_like_coords  # noqa: E402

SLICE = """
. . . . . . . . .
. # # . . . . . .
. . # # . . . # .
. . . # . . # # .
. . . # # # # . .
. . . . . . . . .
. . # . . . . . .
"""


def small_slice() -> SparseTensor:
    """The voxels drawn in SLICE (``#``), on a (1, 7, 9) grid, one feature each (its row)."""
    grid = np.array([line.split() for line in SLICE.strip().splitlines()]) == "#"
    yx = np.argwhere(grid)
    coords = np.c_[np.zeros((len(yx), 2), np.int32), yx].astype(np.int32)
    return SparseTensor(coords, np.arange(len(yx), dtype=np.float32)[:, None], (1, *grid.shape))


def part1_rulebook(out: Path):
    print("=" * 78)
    print("1. The rulebook of a submanifold 3x3x3 convolution on one z-slice")
    print("=" * 78)
    x = small_slice()
    kmap = submanifold_map(x, 3)
    print(f"{len(x)} active voxels; {kmap}")
    print("row: (y, x) =", ", ".join(f"{i}:({c[2]},{c[3]})" for i, c in enumerate(x.coords)))
    print("out[o] = sum over offsets k of x[i] @ W[k], for every pair (o <- i) of offset k (i at o + offset):")
    for k in range(kmap.K):
        in_rows, out_rows = kmap.pairs(k)
        if len(in_rows) or kmap.offsets[k, 0] == 0:
            pairs = " ".join(f"{o}<-{i}" for i, o in zip(in_rows, out_rows))
            print(f"  k={k:>2} offset {str(kmap.offsets[k].tolist()):>12}: {len(in_rows):>2} pairs  {pairs}")
    print(f"offsets with dz != 0: {int(kmap.pair_counts()[kmap.offsets[:, 0] != 0].sum())} pairs (one slice thick)")

    fig, axes = plt.subplots(3, 3, figsize=(10, 8))
    yx = x.coords[:, 2:]
    for k in np.flatnonzero(kmap.offsets[:, 0] == 0):
        dz, dy, dx = kmap.offsets[k]
        ax = axes[dy + 1, dx + 1]
        ax.scatter(yx[:, 1], yx[:, 0], s=260, marker="s", color="#d9d9d9", edgecolor="k", zorder=1)
        for i, (yy, xx) in enumerate(yx):
            ax.text(xx, yy, str(i), ha="center", va="center", fontsize=7, zorder=3)
        in_rows, out_rows = kmap.pairs(k)
        for i, o in zip(in_rows, out_rows):
            (y0, x0), (y1, x1) = yx[i], yx[o]
            if i == o:
                ax.scatter(x1, y1, s=300, facecolor="none", edgecolor="tab:blue", lw=2, zorder=2)
            else:  # arrow from the output site p to the input site p + offset it reads
                assert (y0 - y1, x0 - x1) == (dy, dx)
                ax.annotate("", (x0, y0), (x1, y1), arrowprops=dict(arrowstyle="->", color="tab:blue", lw=1.5,
                                                                    shrinkA=6, shrinkB=6), zorder=2)
        ax.set_xlim(-0.7, 8.7)
        ax.set_ylim(6.7, -0.7)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"k={k}  (dy, dx) = ({dy:+d}, {dx:+d}): {len(in_rows)} pairs", fontsize=9)
        if (dy, dx) != (0, 0):  # the offset itself, drawn in the panel's empty top-right corner
            ax.annotate("", (8.0 + 0.5 * dx, 0.5 + 0.5 * dy), (8.0, 0.5),
                        arrowprops=dict(arrowstyle="-|>", color="k", lw=1.2, shrinkA=0, shrinkB=0), zorder=2)
            ax.text(8.0, 1.35, "offset", ha="center", va="center", fontsize=6)
    fig.suptitle("rulebook of a 3×3 submanifold conv on one slice: arrow = output site p → the input site p + offset "
                 "it reads\n(out[p] += x[p + offset] @ W[k]; data flows against the arrow; centre: every site "
                 "reads itself)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "02_rulebook_2d.png", dpi=120)
    plt.close(fig)
    return x, kmap


def part2_views(out: Path, x, kmap):
    print("\n" + "=" * 78)
    print("2. Two views of the same map: neighbour table (N, K) and per-offset pair lists")
    print("=" * 78)
    cols = np.flatnonzero(kmap.offsets[:, 0] == 0)
    print("neighbors[o, k] = input row feeding output o through offset k (-1: inactive); dz = 0 columns:")
    print("   o  " + "".join(f"{k:>4}" for k in cols))
    for o in range(kmap.n_out):
        print(f"{o:>4}  " + "".join(f"{kmap.neighbors[o, k]:>4}" for k in cols))
    # the pair list of an offset is the non-(-1) entries of its column
    k = cols[5]
    in_rows, out_rows = kmap.pairs(k)
    col = kmap.neighbors[:, k]
    assert np.array_equal(out_rows, np.flatnonzero(col >= 0)) and np.array_equal(in_rows, col[col >= 0])
    print(f"pairs(k={k}) = (in_rows={in_rows.tolist()}, out_rows={out_rows.tolist()}) = column {k}'s active entries")

    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.imshow(kmap.neighbors[:, cols] >= 0, cmap="Blues", vmin=0, vmax=1.6, aspect="auto")
    for o in range(kmap.n_out):
        for j, k in enumerate(cols):
            v = kmap.neighbors[o, k]
            ax.text(j, o, "·" if v < 0 else str(v), ha="center", va="center", fontsize=8,
                    color="k")
    ax.set_xticks(range(len(cols)), [f"k={k}\n{tuple(kmap.offsets[k, 1:].tolist())}" for k in cols], fontsize=8)
    ax.set_ylabel("output row o")
    ax.set_title("output-stationary view: neighbour table (one row per output, one column per offset)\n"
                 "a column's entries are that offset's pair list (gather-GEMM-scatter view)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "02_neighbour_table.png", dpi=120)
    plt.close(fig)


def part3_symmetry(ct: SparseTensor):
    print("\n" + "=" * 78)
    print(f"3. Symmetry and the centre identity, on the CT-like volume (N = {len(ct):,})")
    print("=" * 78)
    kmap = submanifold_map(ct, 3)
    K, centre = kmap.K, kmap.K // 2
    assert np.array_equal(kmap.neighbors[:, centre], np.arange(len(ct)))
    print(f"centre offset k={centre} {kmap.offsets[centre].tolist()}: neighbors[:, {centre}] == arange(N)  -> True")
    for k in range(centre):
        kk = K - 1 - k
        assert np.array_equal(kmap.offsets[kk], -kmap.offsets[k])
        fwd = kmap.neighbors[:, k]
        rows = np.flatnonzero(fwd >= 0)
        assert np.array_equal(kmap.neighbors[fwd[rows], kk], rows)  # i sees j at +d  <=>  j sees i at -d
    print(f"for all {centre} offset pairs (k, {K - 1}-k): offset[{K - 1}-k] = -offset[k] and "
          "neighbors[neighbors[i, k], 26-k] = i  -> True")
    be = get_backend()
    index = coordinate_index(ct)

    def build():
        t0 = time.perf_counter()
        full = be.neighbor_table(index, ct.coords, ct.spatial_shape, kmap.offsets)
        t1 = time.perf_counter()
        lower = be.neighbor_table(index, ct.coords, ct.spatial_shape, kmap.offsets[:centre])
        t2 = time.perf_counter()
        mirrored = be.mirror_table(lower, K)
        t3 = time.perf_counter()
        return full, mirrored, (t1 - t0, t2 - t1, t3 - t2)

    build()  # warm-up (JIT compile)
    full, mirrored, (t0, t1, t2) = build()
    assert np.array_equal(full, mirrored) and np.array_equal(full, kmap.neighbors)
    print(f"backend {be.name}: all 27 offsets looked up: {t0 * 1e3:.1f} ms;  13 offsets + mirror: "
          f"{t1 * 1e3:.1f} + {t2 * 1e3:.1f} ms  (same table)")
    if hasattr(be, "submanifold_table"):  # what submanifold_map calls on such a backend
        be.submanifold_table(ct.keys, ct.spatial_shape, kmap.offsets)  # warm-up
        t0 = time.perf_counter()
        merged = be.submanifold_table(ct.keys, ct.spatial_shape, kmap.offsets)
        t1 = time.perf_counter()
        assert np.array_equal(merged, full)
        print(f"backend {be.name}: submanifold_table from the sorted grid rows, no index: {(t1 - t0) * 1e3:.1f} ms "
              "(same table)")


def part4_counts(out: Path, ct: SparseTensor):
    print("\n" + "=" * 78)
    print("4. Pair counts per offset on the CT-like volume")
    print("=" * 78)
    kmap = submanifold_map(ct, 3)
    counts = kmap.pair_counts()
    down, coarse = down_map(ct, 2, 2)
    dcounts = down.pair_counts()
    n = len(ct)
    print(f"submanifold k3: N = {n:,} sites, {kmap.num_pairs:,} pairs = {kmap.num_pairs / n:.2f} per site "
          f"(of 27); centre {counts[13]:,} = N")
    print(f"  face neighbours (6):   {counts[[4, 10, 12, 14, 16, 22]].mean() / n:.1%} of sites have them")
    print(f"  edge neighbours (12):  {counts[[1, 3, 5, 7, 9, 11, 15, 17, 19, 21, 23, 25]].mean() / n:.1%}")
    print(f"  corner neighbours (8): {counts[[0, 2, 6, 8, 18, 20, 24, 26]].mean() / n:.1%}")
    print(f"  symmetric: counts[k] == counts[26-k] for all k -> {bool(np.array_equal(counts, counts[::-1]))}")
    print(f"down k2 s2: {n:,} fine sites -> {len(coarse):,} coarse sites on {coarse.spatial_shape} "
          f"({n / len(coarse):.2f} active children per coarse site of 8)")
    print("  pairs per child position (dz, dy, dx):",
          ", ".join(f"{tuple(o.tolist())}: {c:,}" for o, c in zip(down.offsets, dcounts)))
    print(f"  every fine site is in exactly one pair: sum = {int(dcounts.sum()):,} = N")
    hist = np.bincount((down.neighbors >= 0).sum(axis=1), minlength=9)[1:]
    print("  coarse sites with 1..8 active children:", ", ".join(f"{c:,}" for c in hist))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw=dict(width_ratios=[3, 1]))
    ax = axes[0]
    nnz = np.abs(kmap.offsets).sum(axis=1)  # 0 centre, 1 face, 2 edge, 3 corner
    colors = np.array(["tab:gray", "tab:blue", "tab:orange", "tab:red"])[nnz]
    ax.bar(range(27), counts / n, color=colors)
    ax.set_xticks(range(27), [f"{k}\n" + "".join("-0+"[v + 1] for v in o) for k, o in enumerate(kmap.offsets)],
                  fontsize=7)
    ax.set_ylabel("pairs / N  (share of sites that have this neighbour)")
    ax.set_title(f"submanifold 3×3×3 map of a CT-like volume (N = {n:,}): pairs per offset\n"
                 "grey centre, blue face, orange edge, red corner neighbours", fontsize=10)
    ax = axes[1]
    children = np.bincount((down.neighbors >= 0).sum(axis=1), minlength=9)[1:]
    ax.bar(range(1, 9), children / len(coarse), color="tab:green")
    ax.set_xticks(range(1, 9))
    ax.set_xlabel("active children of a coarse site")
    ax.set_ylabel("share of coarse sites")
    ax.set_title(f"k2 s2 down map: {len(coarse):,} outputs\n(each gathers 1–8 of its 2×2×2 children)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "02_pair_counts.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG figures")
    p.add_argument("--smoke", "--quick", action="store_true", help="small sizes: a few seconds (CI)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x, kmap = part1_rulebook(out)
    part2_views(out, x, kmap)
    shape = (24, 48, 48) if args.smoke else (96, 192, 192)
    coords = ct_like_coords(shape, 0.15)
    ct = SparseTensor(coords, np.zeros((len(coords), 1), np.float32), shape)
    print(f"\nCT-like volume: {shape}, density 0.15 -> {len(ct):,} active voxels (benchmarks/ct_like.py)")
    part3_symmetry(ct)
    part4_counts(out, ct)
    print(f"\nfigures written to {out} ({time.perf_counter() - t0:.1f} s, backend {get_backend().name})")


if __name__ == "__main__":
    main()
