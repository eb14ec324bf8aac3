"""05 — A tour of the autograd: a tiny sparse network, its graph, and its backward pass step by step.

    python examples/05_autograd_tour.py            # figures into docs/figures
    python examples/05_autograd_tour.py --smoke    # the same, into --out (it is small anyway)

``sparseconv.autograd`` is a ~250-line reverse-mode autograd (read it: it is one file). Sparse
tensors take part through their *features*: ``SparseTensor.feats_tensor`` is an autograd ``Tensor``
(``feats`` the plain array inside it); coordinates and kernel maps are plain data the ops carry along.

The graph here is a one-level U-Net in miniature, in float64::

    h = SubMConv3d(2→4)(x)            Conv on the submanifold map
    a = ReLU(h)
    d = SparseConv3d(4→8, k2 s2)(a)   Conv on the down map     (coarse sites)
    u = SparseInverseConv3d(8→4)(d)   Conv on the inverse map  (back on x's sites)
    s = u + h                         skip connection: h feeds two ops (fan-out)
    y = Linear(4→1)(s)
    loss = mean(y²)

What it prints: the forward graph in topological order; then the backward pass, replayed by hand
exactly as ``Tensor.backward`` runs it — each node's incoming gradient, the ``Function.backward``
it calls, what flows to each input, and where two paths *add* (h); then a check that the replay
equals ``loss.backward()``, and a finite-difference ``gradcheck`` of every parameter.

Figure: ``05_autograd_graph.png`` (the graph, with each tensor's gradient norm).
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

import sparseconv  # noqa: E402
from sparseconv import SparseTensor, Tensor, nn  # noqa: E402
from sparseconv import autograd as AG  # noqa: E402
from sparseconv import functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    def __init__(self):
        kw = dict(dtype=np.float64)
        self.conv = nn.SubMConv3d(2, 4, 3, **kw)
        self.down = nn.SparseConv3d(4, 8, 2, 2, **kw)
        self.up = nn.SparseInverseConv3d(8, 4, 2, **kw)
        self.head = nn.Linear(4, 1, **kw)

    def forward(self, x, names=None):
        h = self.conv(x)
        a = F.relu(h)
        d = self.down(a)
        u = self.up(d)
        s = F.add(u, h)
        y = self.head(s)
        sq = y.feats_tensor * y.feats_tensor  # Tensor ops: the loss is built from Mul, Sum, Mul
        total = sq.sum()
        loss = total * (1.0 / len(sq))
        if names is not None:
            for name, t in [("h", h), ("a", a), ("d", d), ("u", u), ("s", s), ("y", y)]:
                names[id(t.feats_tensor)] = name
            names.update({id(sq): "y²", id(total): "Σy²", id(loss): "loss"})
        return loss


def describe(fn, ctx) -> str:
    kmap = getattr(ctx, "kmap", None)
    return f"{fn.__name__}[{kmap.kind} map]" if kmap is not None else fn.__name__


def params_of(chain, feats):
    """The parameter leaves the ops of ``chain`` read, in order."""
    seen = {}
    for t in chain[1:]:
        for i in t._node[2]:
            if isinstance(i, Tensor) and i.is_leaf and i is not feats:
                seen[id(i)] = i
    return list(seen.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG figures")
    p.add_argument("--smoke", "--quick", action="store_true", help="CI mode (this example is small anyway)")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    sparseconv.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = (4, 5, 6)
    coords = np.argwhere(rng.random((1, *shape)) < 0.4).astype(np.int32)
    feats = Tensor(rng.standard_normal((len(coords), 2)), requires_grad=True)  # a leaf: we want d loss / d x
    x = SparseTensor(coords, feats, shape)
    model = Tiny()
    names = {id(feats): "x.feats"}
    names.update({id(prm): name for name, prm in model.named_parameters()})

    loss = model(x, names)
    print(f"input: {len(x)} active voxels on {shape}, C=2, float64; loss = {loss.item():.6f}\n")

    # ---- the forward graph ------------------------------------------------------------------------
    order = AG._topological_order(loss)  # root first: every consumer before what it consumes
    for t in order:  # name the few intermediates we did not name (the loss's own little ops)
        names.setdefault(id(t), f"t{len(names)}")
    print("forward graph, in the order the ops ran (a Tensor made by an op keeps (Function, ctx, inputs)):")
    for t in reversed(order):
        if t.is_leaf:
            continue
        fn, ctx, inputs = t._node
        ins = ", ".join(names.get(id(i), "const") if isinstance(i, Tensor) else type(i).__name__
                        for i in inputs if isinstance(i, Tensor))
        print(f"  {names[id(t)]:>6} {str(t.shape):>9} = {describe(fn, ctx):<24}({ins})")

    # ---- the backward pass, replayed by hand --------------------------------------------------------
    print("\nbackward, replayed step by step (what Tensor.backward does; root first):")
    grads = {id(loss): np.ones_like(loss.data)}
    leaf_grads, arrivals = {}, defaultdict(int)
    for t in order:
        g = grads.pop(id(t), None)
        if g is None:
            continue
        name = names[id(t)]
        if t.is_leaf:
            leaf_grads[name] = g
            print(f"  {name:>16}: leaf — .grad = incoming {g.shape}, |g| = {np.linalg.norm(g):.4e}")
            continue
        fn, ctx, inputs = t._node
        in_grads = fn.backward(ctx, g)
        in_grads = in_grads if isinstance(in_grads, tuple) else (in_grads,)
        flows = []
        for inp, ig in zip(inputs, in_grads):
            if ig is None or not isinstance(inp, Tensor) or not inp.requires_grad:
                continue
            arrivals[id(inp)] += 1
            added = id(inp) in grads
            grads[id(inp)] = ig if not added else grads[id(inp)] + ig
            flows.append(f"{names[id(inp)]} {tuple(ig.shape)}" + (" (ADDED to the grad already there)" if added else ""))
        print(f"  {name:>16}: {describe(fn, ctx) + '.backward':<33} -> " + "; ".join(flows))
    print("  (dX of a Conv is a forward conv of dY with Wᵀ over the transposed map; h gets two gradients,"
          " from ReLU and from the skip sum, and they add)")

    # ---- compare with the real thing, then gradcheck --------------------------------------------------
    model(x).backward()
    real = {"x.feats": feats.grad, **{name: prm.grad for name, prm in model.named_parameters()}}
    worst = max(float(np.abs(leaf_grads[n] - real[n]).max()) for n in leaf_grads)
    print(f"\nreplay vs loss.backward(): max |difference| over all {len(leaf_grads)} leaf gradients = {worst:.1e}")
    assert worst == 0.0

    params = [feats] + model.parameters()
    per_tensor = 4 if args.smoke else None
    err = AG.gradcheck(lambda: model(x), params, eps=1e-6, rtol=1e-5, atol=1e-7, max_per_tensor=per_tensor)
    checked = sum(min(t.size, per_tensor or t.size) for t in params)
    print(f"gradcheck (central differences on x.feats and all {len(params) - 1} parameters, {checked} of "
          f"{sum(t.size for t in params)} entries): max |analytic - numeric| = {err:.1e}")

    # ---- figure: the graph ------------------------------------------------------------------------------
    chain = [feats] + [t for t in reversed(order) if not t.is_leaf]  # x.feats, then the ops in forward order
    step = 3.4
    pos = {id(t): (i * step, 0.0) for i, t in enumerate(chain)}
    for t in chain[1:]:  # each op's parameters sit above it: weight left, bias right
        params = [i for i in t._node[2] if isinstance(i, Tensor) and i.is_leaf and i is not feats]
        for j, prm in enumerate(params):
            x0 = pos[id(t)][0] + (j - (len(params) - 1) / 2) * 1.65
            pos[id(prm)] = (x0, 1.5)
    fig, ax = plt.subplots(figsize=(16, 4.6))
    W, H = 1.55, 0.8
    for t in chain[1:]:
        (x1, y1) = pos[id(t)]
        for inp in dict.fromkeys(i for i in t._node[2] if isinstance(i, Tensor) and i.requires_grad):
            (x0, y0) = pos[id(inp)]
            if y0 > 0:  # a parameter, from above
                start, end, style = (x0, y0 - H / 2), (x1 + (x0 - x1) * 0.3, y1 + H / 2), "arc3,rad=0"
            elif abs(x1 - x0) > step * 1.5:  # a skip edge: arc below the chain
                start, end, style = (x0, y0 - H / 2), (x1, y1 - H / 2), "arc3,rad=0.25"
            else:
                start, end, style = (x0 + W / 2, y0), (x1 - W / 2, y1), "arc3,rad=0"
            ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color="#555555", lw=1,
                                                        connectionstyle=style))
    for t in [*chain, *(prm for prm in params_of(chain, feats))]:
        x0, y0 = pos[id(t)]
        name = names[id(t)]
        label = name if t.is_leaf else f"{name} =\n{describe(*t._node[:2]).replace('submanifold', 'subm.')}"
        g = leaf_grads.get(name)
        label += f"\n{tuple(t.shape)}" + (f"\n|grad| {np.linalg.norm(g):.2e}" if g is not None else "")
        ax.add_patch(FancyBboxPatch((x0 - W / 2, y0 - H / 2), W, H, boxstyle="round,pad=0.03",
                                    fc="#fde0c5" if t.is_leaf else "#cfe2f3", ec="k", lw=0.8))
        ax.text(x0, y0, label.replace("[", "\n[") if not t.is_leaf else label, ha="center", va="center",
                fontsize=6.5)
    ax.text(pos[id(chain[1])][0], -1.35, "h is used twice (ReLU, and the skip sum s = u + h): "
            "backward adds its two gradients", fontsize=8, color="#555555")
    xs = [v[0] for v in pos.values()]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(-1.6, 2.1)
    ax.axis("off")
    ax.set_title("the autograd graph of a tiny sparse U-Net (orange: leaves, with the gradient backward() gave them; "
                 "blue: op outputs). backward() walks it right to left.", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "05_autograd_graph.png", dpi=120)
    plt.close(fig)
    print(f"\nfigures written to {out_dir} ({time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
