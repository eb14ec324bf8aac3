"""Submanifold conv benchmark on the CT-like active sets: kernel-map build, forward, backward,
peak memory of one layer — sparse backends vs the dense convolution of the same grid.

    python benchmarks/bench_conv.py                      # both sets, C = 16, 32, 64 (~10 min)
    python benchmarks/bench_conv.py --quick              # a small grid, for a smoke run

Prints a Markdown table and writes ``benchmarks/results/bench_conv.json`` (+ ``.md``).
Times are medians over ``--repeats`` runs after a warm-up; every number comes from this run.
GFLOP/s is *effective*: ``2 · pairs · Cin · Cout / t`` (only the multiply-adds a sparse conv
must do), so rows compare on useful work. The backward is that of the forward timed, a convolution
without bias: the input gradient (dX) and the weight gradient (dW). Peak memory is measured in a fresh subprocess per row:
after JIT warm-up the peak RSS is reset, then peak RSS during the layer minus the RSS before it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ct_like import CT_LIKE_SETS, ct_like_coords  # noqa: E402
from measure import cpu_model, median_time  # noqa: E402

K3 = 27


def gemm_rate(repeats=5, n=2048):
    """float32 GEMM rate of the BLAS in use (GFLOP/s), the yardstick for the conv kernels."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / median_time(lambda: a @ a, repeats) / 1e9


def sparse_rows(backend, coords, shape, channels, repeats):
    """Kernel-map build, forward and backward of one submanifold conv on ``backend``."""
    import sparseconv
    from sparseconv import SparseTensor
    from sparseconv.functional.conv import conv_backward, conv_forward
    from sparseconv.kmap import submanifold_map

    rows = []
    with sparseconv.use_backend(backend):
        x = SparseTensor(coords, np.zeros((len(coords), 1), np.float32), shape)

        def build():
            x.cache.clear()
            return submanifold_map(x, 3)

        t_map = median_time(build, repeats)
        kmap = build()
        kmap.transposed()  # built once per level in a network; not part of the timed backward
        pairs = kmap.num_pairs
        for c in channels:
            rng = np.random.default_rng(c)
            feats = rng.standard_normal((len(coords), c), dtype=np.float32)
            weight = (rng.standard_normal((K3, c, c), dtype=np.float32) / np.sqrt(K3 * c)).astype(np.float32)
            grad = rng.standard_normal((len(coords), c), dtype=np.float32)
            t_fwd = median_time(lambda: conv_forward(feats, weight, kmap), repeats)
            t_bwd = median_time(lambda: conv_backward(grad, feats, weight, kmap, bias=False), repeats)
            flops = 2 * pairs * c * c
            rows.append(dict(method=f"sparseconv[{backend}]", C=c, active=len(coords), pairs=pairs,
                             map_s=t_map, map_mvox_s=len(coords) / t_map / 1e6, fwd_s=t_fwd,
                             fwd_gflops=flops / t_fwd / 1e9, bwd_s=t_bwd, bwd_gflops=2 * flops / t_bwd / 1e9,
                             bwd_over_fwd=t_bwd / t_fwd))
    return rows


def dense_rows(coords, shape, channels, repeats, pairs):
    """The dense NumPy conv3d (sparseconv.dense, BLAS per kernel tap) on the whole grid."""
    from sparseconv import dense
    rows = []
    for c in channels:
        rng = np.random.default_rng(c)
        x = np.zeros((1, c, *shape), np.float32)
        x[0][:, coords[:, 1], coords[:, 2], coords[:, 3]] = rng.standard_normal((c, len(coords)), dtype=np.float32)
        w = rng.standard_normal((c, c, 3, 3, 3), dtype=np.float32)
        t = median_time(lambda: dense.conv3d(x, w, padding=1), max(1, repeats // 2))
        rows.append(dict(method="dense conv3d [numpy]", C=c, active=len(coords), pairs=pairs, fwd_s=t,
                         fwd_gflops=2 * pairs * c * c / t / 1e9))
    return rows


def torch_rows(coords, shape, channels, repeats, pairs):
    """PyTorch dense conv3d on the same grid, if torch happens to be installed (never required)."""
    try:
        import torch
    except ImportError:
        return []
    rows = []
    for c in channels:
        x = torch.zeros((1, c, *shape))
        x[0][:, coords[:, 1], coords[:, 2], coords[:, 3]] = torch.randn(c, len(coords))
        w = torch.randn(c, c, 3, 3, 3)
        with torch.no_grad():
            t = median_time(lambda: torch.nn.functional.conv3d(x, w, padding=1), max(1, repeats // 2))
        rows.append(dict(method=f"torch {torch.__version__} conv3d (dense)", C=c, active=len(coords),
                         pairs=pairs, fwd_s=t, fwd_gflops=2 * pairs * c * c / t / 1e9))
    return rows


# --- peak memory of one layer, each in a fresh subprocess --------------------------------------

_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[5])
from measure import reset_peak, rss_mb, peak_rss_mb
coords = np.load(sys.argv[1]); shape = tuple(int(s) for s in sys.argv[2].split(",")); c = int(sys.argv[3])
method = sys.argv[4]
import sparseconv
from sparseconv import SparseTensor, dense
from sparseconv.functional.conv import conv_forward
from sparseconv.kmap import submanifold_map
rng = np.random.default_rng(0)
w = rng.standard_normal((27, c, c), dtype=np.float32)
if method != "dense":  # compile the kernels first, so JIT memory is not counted
    sparseconv.set_backend(method)
    tiny = SparseTensor(coords[:64], np.ones((64, c), np.float32), shape)
    conv_forward(tiny.feats, w, submanifold_map(tiny, 3))
reset_peak()
base = rss_mb()
if method == "dense":
    x = np.zeros((1, c, *shape), np.float32)
    x[0, :, coords[:, 1], coords[:, 2], coords[:, 3]] = 1.0
    y = dense.conv3d(x, w.reshape(3, 3, 3, c, c).transpose(4, 3, 0, 1, 2), padding=1)
else:
    x = SparseTensor(coords, np.ones((len(coords), c), np.float32), shape)
    y = conv_forward(x.feats, w, submanifold_map(x, 3))
print(peak_rss_mb() - base)
"""


def layer_memory_mb(coords_file, shape, c, method):
    out = subprocess.run([sys.executable, "-c", _CHILD, coords_file, ",".join(map(str, shape)), str(c), method,
                          str(HERE)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(name for name, _, _ in CT_LIKE_SETS),
                   help="CT-like sets to run (ct15: 128x256x256 at 15%%, ct05: 96x512x512 at 5%%)")
    p.add_argument("--channels", default="16,32,64")
    p.add_argument("--backends", default="reference,numba")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-dense", action="store_true", help="skip the dense NumPy rows (slow, big)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-layer peak-memory subprocesses")
    p.add_argument("--quick", action="store_true", help="a 48x64x64 grid at 15%%, C=16, for smoke tests")
    p.add_argument("--out", default=str(HERE / "results" / "bench_conv.json"))
    args = p.parse_args(argv)

    sets = [(n, g, d) for n, g, d in CT_LIKE_SETS if n in args.sets.split(",")]
    channels = [int(c) for c in args.channels.split(",")]
    if args.quick:
        sets, channels, args.repeats = [("quick", (48, 64, 64), 0.15)], [16], 2
    import numba
    machine = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                   cpu_model=cpu_model(), cpus=os.cpu_count(), numba_threads=numba.get_num_threads(), numpy=np.__version__,
                   numba=numba.__version__)
    gemm = gemm_rate()
    print(f"machine: {machine}\nfloat32 GEMM (2048^3, BLAS): {gemm:.1f} GFLOP/s\n")
    results = dict(machine=machine, gemm_gflops=gemm, sets=[])
    for name, shape, density in sets:
        coords = ct_like_coords(shape, density)
        print(f"== {name}: grid {shape}, {len(coords):,} active ({len(coords) / np.prod(shape):.1%})", flush=True)
        rows = []
        for backend in args.backends.split(","):
            rows += sparse_rows(backend, coords, shape, channels, args.repeats)
        pairs = rows[0]["pairs"]
        if not args.no_dense:
            rows += dense_rows(coords, shape, channels, args.repeats, pairs)
        rows += torch_rows(coords, shape, channels, args.repeats, pairs)
        if not args.no_memory:
            with tempfile.TemporaryDirectory() as tmp:
                coords_file = os.path.join(tmp, "coords.npy")
                np.save(coords_file, coords)
                for row in rows:
                    method = {"dense conv3d [numpy]": "dense"}.get(row["method"], row["method"][11:-1])
                    if method in ("dense", "numba", "reference"):
                        row["peak_mb"] = layer_memory_mb(coords_file, shape, row["C"], method)
        results["sets"].append(dict(name=name, grid=shape, density=density, active=len(coords), pairs=pairs, rows=rows))
        print(table(rows, gemm), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return results


def table(rows, gemm):
    head = "| method | C | map build (M vox/s) | fwd (ms) | fwd GFLOP/s | % of GEMM | bwd (ms) | bwd/fwd | peak MB |"
    lines = [head, "|" + "---|" * 9]
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['method']} | {r['C']} | {fmt(r.get('map_mvox_s'), '.2f')} | {r['fwd_s'] * 1e3:.0f} | "
                     f"{r['fwd_gflops']:.1f} | {100 * r['fwd_gflops'] / gemm:.0f} | {fmt(r.get('bwd_s') and r['bwd_s'] * 1e3, '.0f')} | "
                     f"{fmt(r.get('bwd_over_fwd'), '.2f')} | {fmt(r.get('peak_mb'), '.0f')} |")
    return "\n".join(lines)


def markdown(results):
    parts = [f"float32 GEMM rate of the machine: {results['gemm_gflops']:.1f} GFLOP/s; machine: {results['machine']}"]
    for s in results["sets"]:
        parts.append(f"\n### {s['name']}: grid {tuple(s['grid'])}, {s['active']:,} active, {s['pairs']:,} pairs (k=3)\n")
        parts.append(table(s["rows"], results["gemm_gflops"]))
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
