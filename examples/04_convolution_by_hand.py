"""04 — One convolution output, and one gradient entry, computed four ways.

    python examples/04_convolution_by_hand.py            # figures into docs/figures
    python examples/04_convolution_by_hand.py --smoke    # the same, into --out (it is small anyway)

A submanifold 3×3×3 convolution is ``out[p] = b + Σ_k x[p + off_k] @ W[k]`` over the offsets whose
neighbour ``p + off_k`` is active. This example takes one output voxel and computes it

1. **by hand**: a Python dict from coordinates to rows, a loop over the 27 offsets, every term printed;
2. with the **NumPy reference** backend (gather-GEMM-scatter over per-offset pair lists);
3. with the **Numba** backend (output-stationary over the neighbour table);
4. with the **dense twin** ``sparseconv.dense.conv3d`` on the zero-filled grid, read at the voxel;

then does the same for the gradients of ``L = Σ out ⊙ G`` (G a fixed random upstream gradient):
one weight-gradient entry ``dW[k, ci, co] = Σ_pairs(k) x[i, ci] · G[o, co]``, and one input-gradient
entry ``dX[i, ci] = Σ_k Σ_co W[k, ci, co] · G[i − off_k, co]`` (the transposed map), each also
checked by a central finite difference. Everything runs in float64, so all columns agree to ~1e-16.

Figure: ``04_by_hand.png`` (which neighbours contribute to the output, and how much).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sparseconv  # noqa: E402
from sparseconv import SparseTensor, dense  # noqa: E402
from sparseconv.functional import conv as F  # noqa: E402
from sparseconv.kmap import centred_offsets, submanifold_map  # noqa: E402
from sparseconv.testing.conformance import dense_weight  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sparse_forward_backward(name, x, weight, bias, grad_out):
    """out, dX, dW, db of the submanifold conv on backend ``name`` (kernel map built there too)."""
    with sparseconv.use_backend(name):
        sites = SparseTensor(x.coords, x.feats, x.spatial_shape, x.batch_size)  # fresh cache: map built here
        kmap = submanifold_map(sites, 3)
        out = F.conv_forward(sites.feats, weight, kmap, bias)
        dx, dw, db = F.conv_backward(grad_out, sites.feats, weight, kmap)
    return out, dx, dw, db


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG figures")
    p.add_argument("--smoke", "--quick", action="store_true", help="CI mode (this example is small anyway)")
    p.add_argument("--seed", type=int, default=4)
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    rng = np.random.default_rng(args.seed)
    shape, cin, cout = (5, 6, 7), 3, 2
    coords = np.argwhere(rng.random((1, *shape)) < 0.35).astype(np.int32)
    x = SparseTensor(coords, rng.standard_normal((len(coords), cin)), shape)  # float64
    weight = rng.standard_normal((27, cin, cout))
    bias = rng.standard_normal(cout)
    grad_out = rng.standard_normal((len(x), cout))  # G = dL/d out
    offsets = centred_offsets(3)
    row_of = {tuple(c): r for r, c in enumerate(x.coords.tolist())}  # the "hash table" of this example

    kmap = submanifold_map(x, 3)
    active = (kmap.neighbors >= 0).sum(axis=1)
    o = int(np.argmax(active))  # the output with the most active neighbours
    b, pz, py, px = x.coords[o]
    print(f"{len(x)} active voxels on a {shape} grid, Cin={cin}, Cout={cout}, float64")
    print(f"output voxel p = {x.coords[o].tolist()} (row {o}), {active[o]} of 27 neighbours active\n")

    # ---- 1. the forward value, by hand ------------------------------------------------------------
    print("1. out[p] = b + sum over offsets of x[p + off] @ W[k]  (by hand)")
    print(f"{'k':>3}{'offset':>13}{'neighbour':>16}{'row':>5}   {'x[row] @ W[k]':<26}")
    total = bias.copy()
    terms = np.full((27, cout), np.nan)
    for k, off in enumerate(offsets):
        q = (int(b), int(pz + off[0]), int(py + off[1]), int(px + off[2]))
        row = row_of.get(q)
        if row is None:
            print(f"{k:>3}{str(off.tolist()):>13}{str(list(q[1:])):>16}{'-':>5}   (inactive: counts as zero)")
            continue
        terms[k] = x.feats[row] @ weight[k]
        total += terms[k]
        print(f"{k:>3}{str(off.tolist()):>13}{str(list(q[1:])):>16}{row:>5}   "
              f"[{', '.join(f'{v:+.6f}' for v in terms[k])}]")
    print(f"{'':>37}+ bias [{', '.join(f'{v:+.6f}' for v in bias)}]")

    results = {name: sparse_forward_backward(name, x, weight, bias, grad_out) for name in ("reference", "numba")}
    xd = x.dense()
    w_dense = dense_weight(weight, 3)
    out_dense = dense.conv3d(xd, w_dense, bias, padding=1)
    gd = x.replace_feats(grad_out).dense()
    dxd, dwd, dbd = dense.conv3d_backward(gd, xd, w_dense, padding=1)

    print(f"\n{'':<14}{'by hand':>20}{'reference':>20}{'numba':>20}{'dense twin':>20}")
    for co in range(cout):
        vals = [total[co], results["reference"][0][o, co], results["numba"][0][o, co], out_dense[b, co, pz, py, px]]
        print(f"{f'out[p, {co}]':<14}" + "".join(f"{v:>20.15f}" for v in vals))
        assert max(vals) - min(vals) < 1e-12

    # ---- 2. one weight-gradient entry -------------------------------------------------------------
    k, ci, co = 14, 1, 0  # offset (0, 0, +1)
    off = offsets[k]
    print(f"\n2. dW[k={k}, ci={ci}, co={co}] = sum over pairs (i -> o) of offset {off.tolist()} of x[i, ci] * G[o, co]")
    acc, n_pairs = 0.0, 0
    for oo, c in enumerate(x.coords.tolist()):
        i = row_of.get((c[0], c[1] + off[0], c[2] + off[1], c[3] + off[2]))
        if i is not None:
            acc += x.feats[i, ci] * grad_out[oo, co]
            n_pairs += 1
            if n_pairs <= 4:
                print(f"   pair {i:>3} -> {oo:>3}:  x[{i}, {ci}] * G[{oo}, {co}] = {x.feats[i, ci]:+.5f} * "
                      f"{grad_out[oo, co]:+.5f} = {x.feats[i, ci] * grad_out[oo, co]:+.6f}")
    print(f"   ... {n_pairs} pairs in all (= kmap.pair_counts()[{k}] = {kmap.pair_counts()[k]})")
    eps = 1e-6
    w_plus, w_minus = weight.copy(), weight.copy()
    w_plus[k, ci, co] += eps
    w_minus[k, ci, co] -= eps
    loss = lambda w: float((F.conv_forward(x.feats, w, kmap, bias) * grad_out).sum())  # noqa: E731
    fd = (loss(w_plus) - loss(w_minus)) / (2 * eps)
    kz, ky, kx = off + 1
    vals = [acc, results["reference"][2][k, ci, co], results["numba"][2][k, ci, co], dwd[co, ci, kz, ky, kx]]
    print(f"\n{'':<14}{'by hand':>20}{'reference':>20}{'numba':>20}{'dense twin':>20}{'finite diff.':>16}")
    print(f"{'dW entry':<14}" + "".join(f"{v:>20.15f}" for v in vals) + f"{fd:>16.9f}")
    assert max(vals) - min(vals) < 1e-12 and abs(fd - acc) < 1e-6

    # ---- 3. one input-gradient entry: the transposed map ------------------------------------------
    i, ci = o, 2
    print(f"\n3. dX[i={i}, ci={ci}] = sum over offsets k and channels co of W[k, ci, co] * G[i - off_k, co]")
    print("   (input i feeds output i - off_k through offset k: the map read backwards)")
    acc = 0.0
    for k, off in enumerate(offsets):
        c = x.coords[i]
        src = row_of.get((int(c[0]), int(c[1] - off[0]), int(c[2] - off[1]), int(c[3] - off[2])))
        if src is not None:
            acc += float(weight[k, ci] @ grad_out[src])
    fd_x = x.feats.copy()
    fd_x[i, ci] += eps
    lp = float((F.conv_forward(fd_x, weight, kmap, bias) * grad_out).sum())
    fd_x[i, ci] -= 2 * eps
    lm = float((F.conv_forward(fd_x, weight, kmap, bias) * grad_out).sum())
    fd = (lp - lm) / (2 * eps)
    vals = [acc, results["reference"][1][i, ci], results["numba"][1][i, ci], dxd[b, ci, pz, py, px]]
    print(f"\n{'':<14}{'by hand':>20}{'reference':>20}{'numba':>20}{'dense twin':>20}{'finite diff.':>16}")
    print(f"{'dX entry':<14}" + "".join(f"{v:>20.15f}" for v in vals) + f"{fd:>16.9f}")
    assert max(vals) - min(vals) < 1e-12 and abs(fd - acc) < 1e-6
    print(f"\ndb = sum of G over the active sites: {np.round(grad_out.sum(0), 12).tolist()} "
          f"(reference {np.round(results['reference'][3], 12).tolist()}, dense {np.round(dbd, 12).tolist()})")

    # float32: the two backends add in different orders, so they agree to rounding, not bitwise
    x32 = x.replace_feats(x.feats.astype(np.float32))
    r32 = [sparse_forward_backward(n, x32, weight.astype(np.float32), bias.astype(np.float32),
                                   grad_out.astype(np.float32))[0][o] for n in ("reference", "numba")]
    print(f"float32: reference out[p] = {r32[0].tolist()}, numba = {r32[1].tolist()} "
          f"(|diff| = {np.abs(r32[0] - r32[1]).max():.1e}: summation order)")

    # ---- figure ------------------------------------------------------------------------------------
    fig = plt.figure(figsize=(12, 3.8))
    gs = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 2.4])
    lim = np.nanmax(np.abs(terms[:, 0]))
    for j, dz in enumerate((-1, 0, 1)):
        ax = fig.add_subplot(gs[0, j])
        sel = np.flatnonzero(offsets[:, 0] == dz)
        grid = terms[sel, 0].reshape(3, 3)
        ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-lim, vmax=lim)
        for (r, c), v in np.ndenumerate(grid):
            ax.text(c, r, "·" if np.isnan(v) else f"{v:+.2f}", ha="center", va="center", fontsize=8,
                    color="w" if abs(np.nan_to_num(v)) > 0.6 * lim else "k")
        ax.set_xticks(range(3), ["-1", "0", "+1"])
        ax.set_yticks(range(3), ["-1", "0", "+1"])
        ax.set_xlabel("dx")
        if j == 0:
            ax.set_ylabel("dy")
        ax.set_title(f"dz = {dz:+d}", fontsize=10)
        ax.set_facecolor("#eeeeee")
    ax = fig.add_subplot(gs[0, 3])
    contrib = np.nan_to_num(terms[:, 0])
    ax.bar(range(27), contrib, color=np.where(np.isnan(terms[:, 0]), "#cccccc", "tab:blue"))
    ax.axhline(total[0], color="tab:red", lw=1.5, label=f"out[p, 0] = {total[0]:+.4f} (with bias {bias[0]:+.3f})")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(0, 27, 2))
    ax.set_xlabel("offset index k (inactive neighbours contribute 0)")
    ax.set_ylabel("x[p + off_k] @ W[k, :, 0]")
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"one output of a submanifold 3×3×3 conv, by hand: voxel {x.coords[o].tolist()[1:]}, channel 0 — "
                 "term of each neighbour (· = inactive)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "04_by_hand.png", dpi=120)
    plt.close(fig)
    print(f"\nfigures written to {out_dir} ({time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
