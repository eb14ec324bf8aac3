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
entry ``dX[i, ci] = Σ_k Σ_co W[k, ci, co] · G[i − off_k, co]``, computed twice by hand — from the
coordinates, and as the library does it, a forward pass over the transposed map with ``Wᵀ``
(``kmap.transposed().neighbors[i, k]`` is the output ``i − off_k`` that input i fed through the
*same* offset k, so no kernel flip) — each checked against both backends, the dense twin and a
central finite difference (asserts). Everything runs in float64, so all columns agree to ~1e-16.

Figure: ``04_by_hand.png`` (top: which neighbours contribute to the output, and how much; bottom:
the terms of the dW entry, one per pair of its offset, and of the dX entry, one per offset).
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
    acc, n_pairs, dw_terms = 0.0, 0, []
    for oo, c in enumerate(x.coords.tolist()):
        i = row_of.get((c[0], c[1] + off[0], c[2] + off[1], c[3] + off[2]))
        if i is not None:
            acc += x.feats[i, ci] * grad_out[oo, co]
            dw_terms.append((i, oo, x.feats[i, ci] * grad_out[oo, co]))
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
    dw_entry = dict(k=k, ci=ci, co=co, off=off, terms=dw_terms, value=acc)

    # ---- 3. one input-gradient entry: the transposed map ------------------------------------------
    i, ci = o, 2
    print(f"\n3. dX[i={i}, ci={ci}] = sum over offsets k and channels co of W[k, ci, co] * G[i - off_k, co]")
    print("   (input i fed output i - off_k through offset k: the map read backwards)")
    acc = 0.0
    for k, off in enumerate(offsets):  # from the coordinates
        c = x.coords[i]
        src = row_of.get((int(c[0]), int(c[1] - off[0]), int(c[2] - off[1]), int(c[3] - off[2])))
        if src is not None:
            acc += float(weight[k, ci] @ grad_out[src])
    # the library's way: dX = conv_forward(G, Wᵀ, transposed map). Wᵀ is (K, Cout, Cin), each offset's
    # matrix transposed; the transposed map keeps every pair under its own offset k, so no kernel flip.
    w_t = weight.transpose(0, 2, 1)
    kt = kmap.transposed()
    print(f"   as the library computes it: dX[i] = sum_k G[kt[i, k]] @ W_t[k], kt = kmap.transposed().neighbors "
          f"{kt.neighbors.shape}, W_t = weight.transpose(0, 2, 1) {w_t.shape}")
    print(f"{'k':>6}{'offset':>13}{'kt[i, k]':>10}{'= row of i - off_k':>20}   G[kt[i, k]] @ W_t[k][:, ci]")
    dx_terms = np.full(27, np.nan)
    for k, off in enumerate(offsets):
        out_row = int(kt.neighbors[i, k])
        c = x.coords[i]
        by_coords = row_of.get((int(c[0]), int(c[1] - off[0]), int(c[2] - off[1]), int(c[3] - off[2])), -1)
        assert out_row == by_coords  # the same offset k: the output input i fed through it
        if out_row >= 0:
            dx_terms[k] = grad_out[out_row] @ w_t[k][:, ci]
            print(f"{k:>6}{str(off.tolist()):>13}{out_row:>10}{by_coords:>20}   {dx_terms[k]:+.6f}")
    assert abs(np.nansum(dx_terms) - acc) < 1e-12
    print(f"   {int(np.isfinite(dx_terms).sum())} terms (offsets with no pair are skipped), sum "
          f"{np.nansum(dx_terms):+.15f} = the coordinate loop's {acc:+.15f}")
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
    dx_entry = dict(i=i, ci=ci, terms=dx_terms, value=acc, library=results["reference"][1][i, ci])
    print(f"\ndb = sum of G over the active sites: {np.round(grad_out.sum(0), 12).tolist()} "
          f"(reference {np.round(results['reference'][3], 12).tolist()}, dense {np.round(dbd, 12).tolist()})")

    # float32: the two backends add in different orders, so they agree to rounding, not bitwise
    x32 = x.replace_feats(x.feats.astype(np.float32))
    r32 = [sparse_forward_backward(n, x32, weight.astype(np.float32), bias.astype(np.float32),
                                   grad_out.astype(np.float32))[0][o] for n in ("reference", "numba")]
    print(f"float32: reference out[p] = {r32[0].tolist()}, numba = {r32[1].tolist()} "
          f"(|diff| = {np.abs(r32[0] - r32[1]).max():.1e}: summation order)")

    # ---- figure ------------------------------------------------------------------------------------
    fig = plt.figure(figsize=(12, 7.6))
    gs = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 2.4], height_ratios=[1, 1.05])
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

    def terms_panel(ax, values, total, colour, xlabel, title):
        """Bars = the terms of a sum (grey ticks: no term), red line = the sum; no legend to hide a bar."""
        ax.bar(range(len(values)), np.nan_to_num(values), color=colour)
        ax.axhline(total, color="tab:red", lw=1.5)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)

    ax = fig.add_subplot(gs[0, 3])
    terms_panel(ax, terms[:, 0], total[0], "tab:blue", "offset index k (· inactive neighbours contribute 0)",
                f"out[p, 0] = Σ_k x[p + off_k] @ W[k, :, 0] + bias\n= {total[0]:+.4f} (red; bias {bias[0]:+.3f})")
    ax.set_xticks(range(0, 27, 2))
    ax.set_ylabel("term of offset k")

    ax = fig.add_subplot(gs[1, :2])
    d = dw_entry
    terms_panel(ax, [t for _, _, t in d["terms"]], d["value"], "tab:green",
                f"pair (i → o) of offset k = {d['k']} {tuple(d['off'].tolist())}",
                f"dW[{d['k']}, {d['ci']}, {d['co']}] = Σ_pairs x[i, {d['ci']}]·G[o, {d['co']}] = {d['value']:+.4f} "
                f"(red)\nlibrary: reference {results['reference'][2][d['k'], d['ci'], d['co']]:+.4f}, numba "
                f"{results['numba'][2][d['k'], d['ci'], d['co']]:+.4f}")
    ax.set_xticks(range(len(d["terms"])), [f"{i}→{oo}" for i, oo, _ in d["terms"]], fontsize=7)
    ax.set_ylabel("term of the pair")

    ax = fig.add_subplot(gs[1, 2:])
    d = dx_entry
    terms_panel(ax, d["terms"], d["value"], "tab:purple",
                "offset index k (no bar: input i fed no output through k)",
                f"dX[{d['i']}, {d['ci']}] = Σ_k G[kt[i, k]] @ Wᵀ[k][:, {d['ci']}] over the transposed map "
                f"(same k, no flip) = {d['value']:+.4f} (red)\nlibrary: reference {d['library']:+.4f}, numba "
                f"{results['numba'][1][d['i'], d['ci']]:+.4f}")
    ax.set_xticks(range(0, 27, 2))
    ax.set_ylabel("term of offset k")
    fig.suptitle(f"a submanifold 3×3×3 conv by hand at voxel p = {x.coords[o].tolist()[1:]} (row {o}): the output's "
                 "term from each neighbour (top; · = inactive), one dW and one dX entry (bottom)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "04_by_hand.png", dpi=120)
    plt.close(fig)
    print(f"\nfigures written to {out_dir} ({time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
