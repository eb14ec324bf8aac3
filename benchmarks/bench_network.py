"""The paper's computational claim, measured here: the sparse kidney network vs its dense twin
(the same layers and weights run on the whole grid), inference, batch 1, fp32, CPU.

    python benchmarks/bench_network.py                    # compact config, stage-1 input (~8 min on 2 cores)
    python benchmarks/bench_network.py --configs paper,compact --inputs stage2-median,stage2-p95,stage1
    python benchmarks/bench_network.py --quick            # tiny smoke run

Inputs (sizes from data/kits23_sample/kits23_segmentation_stats.csv):
  * ``stage1``: a whole phantom scan resampled to 1.99 mm, HU window [-53.4, 283.2]; ``stage1@MM``
    the same scan on an MM-millimetre grid;
  * ``stage2-median`` / ``stage2-p95``: one kidney ROI crop at 0.78 mm (window [-300, 500], inside
    the dilated kidney), the crop box of the median / 95th-percentile KiTS23 kidney: the component's
    extent in mm, dilated by the ball of 11 stage-1 voxels, at 0.78 mm, plus margins (10, 35, 35).
    The crop is cut around a phantom kidney and zoomed to that box.

Time: median of ``--repeats`` forwards after one warm-up, each from a fresh SparseTensor (kernel
maps built inside the timed call, as at inference). Memory: in a fresh subprocess per (config,
input, method), after a warm-up on a tiny input (JIT compilation), the peak RSS is reset; the
number is the peak RSS during one forward minus the RSS just before it (model and input built).
Writes ``benchmarks/results/bench_network.{json,md,png}``. With ``SPARSECONV_BACKEND=cupy`` the sparse network
runs on the GPU (``model.to("cuda")``, input ``.to("cuda")``, timed to a device synchronise) and the
PyTorch twin too when PyTorch sees a GPU; the memory column stays host RSS.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import cpu_model, median_time  # noqa: E402

from kidney.roi import RoiConfig  # noqa: E402
from kidney.sparsify import STAGE1, STAGE2  # noqa: E402

STATS = HERE.parent / "data" / "kits23_sample" / "kits23_segmentation_stats.csv"
# the paper's grids (the stage presets) and the ROI rule's sizes on them (kidney.roi.RoiConfig)
STAGE1_MM, STAGE2_MM = STAGE1.spacing_mm, STAGE2.spacing_mm
ROI = RoiConfig()
MARGIN = np.array(ROI.margin_at(STAGE2_MM))  # stage-2 voxels, (cranio-caudal, y, x)
# radius of the dilation ball (diameter 11 stage-1 voxels: radius 5) in mm
DILATION_MM = (ROI.dilation_diameter - 1) / 2 * ROI.ref_stage1_mm


# --- inputs ------------------------------------------------------------------------------------

def kits_crop_shapes(stats_path=STATS):
    """Stage-2 crop shapes ``{"median": (Z, Y, X), "p95": ...}`` of KiTS23 kidney components."""
    if not Path(stats_path).is_file():
        raise FileNotFoundError(f"KiTS23 statistics not found at {stats_path} (the repository ships them in "
                                "data/kits23_sample/; pass --stats PATH)")
    boxes = []
    with open(stats_path) as f:
        for row in csv.DictReader(f):
            spacing = [float(row[f"sp{i}_mm"]) for i in range(3)]
            for comp in ("comp1", "comp2"):
                if row.get(f"{comp}_vox") and int(float(row[f"{comp}_vox"])) > 0:
                    boxes.append([float(row[f"{comp}_ext{i}"]) * spacing[i] for i in range(3)])
    boxes = np.array(boxes)
    shapes = {}
    for name, q in [("median", 50), ("p95", 95)]:
        mm = np.percentile(boxes, q, axis=0) + 2 * DILATION_MM
        shapes[name] = tuple(int(v) for v in np.round(mm / STAGE2_MM) + 2 * MARGIN)
    return shapes, len(boxes)


def make_inputs(names, seed=0, quick=False, stats_path=STATS):
    """``{name: (coords, feats, spatial_shape)}`` of the sparse inputs (a phantom case, sparsified)."""
    from kidney import io, phantom, roi
    from kidney.sparsify import sparsify

    ph = phantom.make_phantom(seed, preset="tiny" if quick else "demo")
    image, labels, spacing = ph.image.astype(np.float32), ph.labels, ph.spacing
    out = {}
    for name in [n for n in names if n.split("@")[0] == "stage1"]:  # "stage1@3" = on a 3 mm grid
        mm = float(name.split("@")[1]) if "@" in name else 5.0 if quick else STAGE1_MM
        hu = io.resample(image, spacing, mm, order=1)
        out[name] = _as_input(sparsify(hu, STAGE1))
    wanted = [n for n in names if n.startswith("stage2")]
    if wanted:
        grid1 = io.resampled_shape(labels.shape, spacing, (STAGE1_MM,) * 3)
        kidney1 = io.resample(labels, spacing, STAGE1_MM, order=0, out_shape=grid1) > 0
        extent = [n * s for n, s in zip(image.shape, spacing)]
        largest = roi.find_rois(kidney1, STAGE1_MM, extent, STAGE2_MM)[0]
        hu, mask, _ = roi.crop_roi(image, spacing, largest)
        shapes = None if quick else kits_crop_shapes(stats_path)[0]
        for name in wanted:
            target = (24, 40, 40) if quick else shapes[name.split("-")[1]]
            zoom = [t / s for t, s in zip(target, hu.shape)]
            hu_t = ndimage.zoom(hu, zoom, order=1, output=np.float32, grid_mode=True, mode="nearest")
            mask_t = ndimage.zoom(mask.astype(np.uint8), zoom, order=0, grid_mode=True, mode="nearest") > 0
            out[name] = _as_input(sparsify(hu_t, STAGE2, mask=mask_t))
    return out


def _as_input(sp):
    t = sp.tensor
    return np.asarray(t.coords), np.asarray(t.feats), tuple(t.spatial_shape)


# --- timing ------------------------------------------------------------------------------------

def run_forward(method, model, coords, feats, shape):
    """One inference forward; ``method`` is ``sparse``, ``dense`` or ``torch``."""
    from sparseconv import SparseTensor
    from sparseconv.autograd import no_grad
    if method == "sparse":
        with no_grad():
            x = SparseTensor(coords, feats, shape)
            if _on_gpu():
                out = model(x.to("cuda"), n_outputs=1)
                import cupy
                cupy.cuda.Device().synchronize()  # kernels run asynchronously: wait before the clock stops
                return out
            return model(x, n_outputs=1)
    dense_x = np.zeros((1, 1, *shape), np.float32)
    dense_x[0, 0, coords[:, 1], coords[:, 2], coords[:, 3]] = feats[:, 0]
    return model(dense_x)


def build(method, config, seed=0):
    """The network of ``method`` (sparse, dense, torch) for a config name or an existing KidneyNet."""
    from kidney.model import KidneyNet
    net = config if isinstance(config, KidneyNet) else KidneyNet(config, seed=seed)
    net.eval()
    if method == "sparse":
        return net.to("cuda") if _on_gpu() else net
    if method == "dense":
        from kidney.dense_twin import DenseKidneyNet
        return DenseKidneyNet(net)
    from torch_twin import TorchDenseKidneyNet  # noqa: E402 (optional, benchmarks only)
    import torch
    return TorchDenseKidneyNet(net, "cuda" if _on_gpu() and torch.cuda.is_available() else "cpu")


def _on_gpu() -> bool:
    """With the cupy backend (SPARSECONV_BACKEND=cupy) the sparse net and PyTorch's twin run on the GPU."""
    import sparseconv
    return sparseconv.get_backend().name == "cupy"


_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[4])
import bench_network as B
from measure import reset_peak, rss_mb, peak_rss_mb
d = np.load(sys.argv[1]); method, config = sys.argv[2], sys.argv[3]
coords, feats, shape = d["coords"], d["feats"], tuple(int(s) for s in d["shape"])
model = B.build(method, config)
B.run_forward(method, B.build(method, "tiny"), coords[:50], feats[:50], shape)  # JIT-compile first
reset_peak()
base = rss_mb()
B.run_forward(method, model, coords, feats, shape)
print(peak_rss_mb() - base)
"""


def check_twins(methods):
    """Before timing anything: every dense twin must compute what the sparse network computes."""
    from kidney.model import KidneyNet
    rng = np.random.default_rng(0)
    net = KidneyNet("compact", seed=1)
    net.load_state_dict({k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
                         for k, v in net.state_dict().items()})
    shape = (13, 10, 11)
    coords = np.argwhere(rng.random((1,) + shape) < 0.3).astype(np.int32)
    feats = rng.standard_normal((len(coords), 1)).astype(np.float32)
    want = run_forward("dense", build("dense", net), coords, feats, shape)[0]
    for method in methods:
        if method == "torch":
            got = run_forward("torch", build("torch", net), coords, feats, shape)[0]
            err = np.abs(got - want).max()
            if err > 1e-4:
                raise RuntimeError(f"the torch twin differs from the NumPy dense twin by {err:.2e}")


def peak_memory_mb(inputs_file, method, config):
    out = subprocess.run([sys.executable, "-c", _CHILD, inputs_file, method, config, str(HERE)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory subprocess ({method}, {config}) failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


# --- main --------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="compact", help="comma list of paper, compact, tiny (default compact)")
    p.add_argument("--inputs", default="stage1",
                   help="comma list of stage1, stage2-median, stage2-p95 (default stage1: the default run stays "
                        "under 10 minutes; one NumPy dense forward of the paper config on stage2-median takes ~5)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dense-repeats", type=int, default=None,
                   help="repeats for the NumPy dense twin (default: --repeats; it is by far the slowest)")
    p.add_argument("--methods", default="sparse,dense" + (",torch" if _has_torch() else ""))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--stats", default=str(STATS), help="KiTS23 statistics CSV (default: data/kits23_sample/kits23_segmentation_stats.csv)")
    p.add_argument("--quick", action="store_true", help="tiny inputs, tiny config, 1 repeat (smoke test)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_network.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.inputs, args.repeats = "tiny", "stage2-median,stage1", 1

    import numba
    import sparseconv
    machine = dict(platform=platform.platform(), cpu_model=cpu_model(), cpus=os.cpu_count(),
                   numba_threads=numba.get_num_threads(), backend=sparseconv.get_backend().name, numpy=np.__version__)
    shapes, n_boxes = ({}, 0) if args.quick else kits_crop_shapes(args.stats)
    print(f"machine: {machine}\nKiTS23 stage-2 crop boxes from {n_boxes} kidney components: {shapes}", flush=True)
    check_twins(args.methods.split(","))
    inputs = make_inputs(args.inputs.split(","), quick=args.quick, stats_path=args.stats)
    results = dict(machine=machine, kits_crop_shapes=shapes, rows=[])
    with tempfile.TemporaryDirectory() as tmp:
        for name, (coords, feats, shape) in inputs.items():
            grid = int(np.prod(shape))
            print(f"\n== {name}: grid {shape} = {grid:,} voxels, {len(coords):,} active ({len(coords) / grid:.1%})",
                  flush=True)
            inputs_file = os.path.join(tmp, f"{name}.npz")
            np.savez(inputs_file, coords=coords, feats=feats, shape=np.array(shape))
            for config in args.configs.split(","):
                for method in args.methods.split(","):
                    model = build(method, config)
                    repeats = args.dense_repeats if method == "dense" and args.dense_repeats else args.repeats
                    t = median_time(lambda: run_forward(method, model, coords, feats, shape), repeats)
                    mem = None if args.no_memory else peak_memory_mb(inputs_file, method, config)
                    row = dict(input=name, config=config, method=method, grid=list(shape), grid_voxels=grid,
                               active=len(coords), time_s=t, repeats=repeats, peak_mb=mem)
                    results["rows"].append(row)
                    print(f"   {config:8s} {method:7s} {t:9.3f} s   " + ("" if mem is None else f"{mem:9.1f} MB"),
                          flush=True)
    add_reductions(results["rows"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    md = markdown(results)
    out.with_suffix(".md").write_text(md)
    chart(results, out.with_suffix(".png"))
    print("\n" + md + f"\nwrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return results


def _has_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def add_reductions(rows):
    """Sparse rows get ``time_reduction`` / ``memory_reduction`` vs the dense twin, in %."""
    dense = {(r["input"], r["config"]): r for r in rows if r["method"] == "dense"}
    for r in rows:
        d = dense.get((r["input"], r["config"]))
        if r["method"] == "sparse" and d:
            r["time_reduction_pct"] = 100 * (1 - r["time_s"] / d["time_s"])
            if r["peak_mb"] is not None and d["peak_mb"]:
                r["memory_reduction_pct"] = 100 * (1 - r["peak_mb"] / d["peak_mb"])


def markdown(results):
    lines = ["| input | config | method | grid voxels | active | time (s) | runs | peak MB | time saved | memory saved |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        pct = lambda k: f"{r[k]:.0f} %" if k in r else ""  # noqa: E731
        mem = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(f"| {r['input']} | {r['config']} | {r['method']} | {r['grid_voxels']:,} | {r['active']:,} | "
                     f"{r['time_s']:.2f} | {r.get('repeats', '')} | {mem} | {pct('time_reduction_pct')} | {pct('memory_reduction_pct')} |")
    return "\n".join(lines) + "\n"


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in results["rows"] if r["method"] in ("sparse", "dense")]
    groups = sorted({(r["input"], r["config"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in [(axes[0], "time_s", "inference time (s)"), (axes[1], "peak_mb", "peak memory (MB)")]:
        x = np.arange(len(groups))
        for i, method in enumerate(["dense", "sparse"]):
            vals = [next((r[key] or 0 for r in rows if (r["input"], r["config"]) == g and r["method"] == method), 0)
                    for g in groups]
            ax.bar(x + (i - 0.5) * 0.4, vals, 0.4, label=method)
        ax.set_xticks(x, [f"{i}\n{c}" for i, c in groups], fontsize=8)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("sparse kidney network vs its dense twin (batch 1, fp32, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
