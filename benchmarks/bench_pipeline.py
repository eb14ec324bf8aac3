"""What one whole case costs: ``kidney segment`` end to end on phantom scans of KiTS23's median and
95th-percentile sizes — wall time per stage and peak memory, on the CPU.

    python benchmarks/bench_pipeline.py                      # median + p95 KiTS23 scan grids
    python benchmarks/bench_pipeline.py --sizes median --repeats 3
    python benchmarks/bench_pipeline.py --quick              # a tiny smoke run

Sizes (from data/kits23_sample/kits23_segmentation_stats.csv): the scans at the 50th and
95th percentile of voxel count, with their grids and spacings (median: 104 x 512 x 512 at
5 x 0.98 x 0.98 mm; p95: 636 x 512 x 512 at 1 x 0.77 x 0.77 mm). A seeded phantom is drawn on
each grid and written as NIfTI (``imaging.nii.gz``), exactly what a user hands to ``kidney segment``.

Each run is a fresh subprocess that imports the library, loads the weights, reads the NIfTI file,
segments it and writes the label file — the command a user runs — after one warm-up on a tiny
phantom in the same process (Numba's compiled kernels are cached on disk, so a second run of the
CLI pays no compilation either). Reported per run: seconds for reading, each pipeline stage
(``stage1``: resample + sparsify + network on the whole scan; ``roi``; ``stage2``: crops + network;
``merge``: pasting the crops' probabilities back and labelling) and writing; the peak resident
memory of each stage and of the whole process. With ``--repeats N`` the table shows medians.

The shipped weights run at the grids stored in them (compact config: 5.97 mm / 1.56 mm); pass
``--weights DIR`` for others. Writes ``benchmarks/results/bench_pipeline.{json,md}``.
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
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import PeakRSS, cpu_model, peak_rss_mb, write_report  # noqa: E402
STATS = HERE.parent / "data" / "kits23_sample" / "kits23_segmentation_stats.csv"
STEPS = ("read", "stage1", "roi", "stage2", "merge", "write")


def kits_scan_grids(stats_path=STATS):
    """``{"median": (shape, spacing), "p95": ...}``: the KiTS23 scans at those percentiles of voxel count."""
    if not Path(stats_path).is_file():
        raise FileNotFoundError(f"KiTS23 statistics not found at {stats_path} (the repository ships them in "
                                "data/kits23_sample/; pass --stats PATH)")
    with open(stats_path) as f:
        rows = list(csv.DictReader(f))
    voxels = np.array([float(r["n0"]) * float(r["n1"]) * float(r["n2"]) for r in rows])
    order = np.argsort(voxels, kind="stable")
    grids = {}
    for name, q in [("median", 50), ("p95", 95)]:
        r = rows[order[int(round(q / 100 * (len(rows) - 1)))]]
        grids[name] = (tuple(int(r[f"n{i}"]) for i in range(3)), tuple(float(r[f"sp{i}_mm"]) for i in range(3)))
    return grids, len(rows)


def write_case(out_dir: Path, shape, spacing, seed: int) -> Path:
    """A phantom on ``shape``/``spacing`` as ``out_dir/case/{imaging,segmentation}.nii.gz``."""
    from kidney import phantom
    ph = phantom.make_phantom(seed, preset="full", shape=shape, spacing=spacing)
    case = out_dir / "case"
    phantom.write_case(ph, case)
    return case / "imaging.nii.gz"


# --- the measured run (in a fresh subprocess) -------------------------------------------------------

def run_case(image_path: str, out_path: str, weights_dir=None, warmup: bool = True) -> dict:
    """Segment one NIfTI file as ``kidney segment`` does; seconds and peak MB per step."""
    from kidney import io, phantom
    from kidney.pipeline import Segmenter

    seg = Segmenter(weights_dir=weights_dir)
    if warmup:  # compile / load every kernel on a tiny case, outside the measurement
        tiny = phantom.make_phantom(0, preset="tiny")
        seg.segment(tiny.image, tiny.spacing)
    out = {"seconds": {}, "peak_mb": {}}
    startup_peak = peak_rss_mb()  # imports, weights, warm-up: before the stages reset the peak counter

    def step(name, fn):
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            value = fn()
        out["seconds"][name], out["peak_mb"][name] = time.perf_counter() - t0, mem.mb
        return value

    image = step("read", lambda: io.load_nifti(image_path))
    res = seg.segment(image, details=True)
    out["seconds"].update(res.seconds)
    out["peak_mb"].update(res.peak_mb)
    step("write", lambda: io.save_nifti(res.labels, image, out_path))
    out["total_s"] = sum(out["seconds"].values())
    # the process's peak: the stages reset the kernel's high-water mark, so take the maximum of the parts
    out["process_peak_mb"] = max([startup_peak, *out["peak_mb"].values()])
    out["n_active"] = res.n_active
    out["n_rois"] = len(res.rois)
    out["labels_found"] = sorted(int(v) for v in np.unique(res.labels))
    return out


def measure_case(image_path: Path, weights_dir=None) -> dict:
    """:func:`run_case` in a fresh interpreter (so memory is this case's alone)."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import json, sys; sys.path.insert(0, %r); import bench_pipeline as b; "
                "print('RESULT' + json.dumps(b.run_case(%r, %r, %r)))"
                % (str(HERE), str(image_path), os.path.join(tmp, "pred.nii.gz"), weights_dir))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"segmenting {image_path} failed:\n{proc.stderr[-3000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    result["subprocess_wall_s"] = wall
    return result


def summarise(runs):
    """Medians over repeats of every number the table shows."""
    med = lambda vals: float(np.median(vals))  # noqa: E731
    return {"seconds": {k: med([r["seconds"].get(k, 0.0) for r in runs]) for k in STEPS},
            "peak_mb": {k: med([r["peak_mb"].get(k, 0.0) for r in runs]) for k in STEPS},
            "total_s": med([r["total_s"] for r in runs]),
            "subprocess_wall_s": med([r["subprocess_wall_s"] for r in runs]),
            "process_peak_mb": med([r["process_peak_mb"] for r in runs])}


def markdown(results) -> str:
    head = "| scan | grid | voxels | " + " | ".join(f"{s} (s)" for s in STEPS) + \
           " | total (s) | peak MB (stage 1 / stage 2 / process) | runs |"
    lines = [head, "|" + "---|" * (len(STEPS) + 6)]
    for c in results["cases"]:
        m = c["median"]
        grid = "×".join(str(n) for n in c["shape"]) + " @ " + "×".join(f"{s:.2f}" for s in c["spacing"]) + " mm"
        secs = " | ".join(f"{m['seconds'][s]:.2f}" for s in STEPS)
        peaks = f"{m['peak_mb']['stage1']:.0f} / {m['peak_mb']['stage2']:.0f} / {m['process_peak_mb']:.0f}"
        lines.append(f"| {c['name']} | {grid} | {int(np.prod(c['shape'])):,} | {secs} | {m['total_s']:.1f} | "
                     f"{peaks} | {len(c['runs'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="median,p95", help="comma list of median, p95")
    p.add_argument("--repeats", type=int, default=1, help="runs per size (fresh process each; medians shown)")
    p.add_argument("--weights", default=None, help="folder with stage1_*.npz / stage2_*.npz (default: shipped)")
    p.add_argument("--seed", type=int, default=7, help="phantom seed")
    p.add_argument("--stats", default=str(STATS), help="KiTS23 statistics CSV (default: data/kits23_sample/kits23_segmentation_stats.csv)")
    p.add_argument("--quick", action="store_true", help="one tiny phantom grid (smoke test)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_pipeline.json"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    import numba
    grids, n_scans = ({"tiny": ((24, 96, 96), (5.0, 4.0, 4.0))}, 0) if args.quick else kits_scan_grids(args.stats)
    sizes = ["tiny"] if args.quick else args.sizes.split(",")
    unknown = [s for s in sizes if s not in grids]
    if unknown:
        p.error(f"unknown size(s) {unknown}; use median, p95")
    machine = dict(platform=platform.platform(), cpu_model=cpu_model(), cpus=os.cpu_count(),
                   numba_threads=numba.get_num_threads(), numpy=np.__version__)
    print(f"machine: {machine}\nKiTS23 scan grids ({n_scans} scans): {grids}", flush=True)
    results = dict(machine=machine, weights=args.weights or "shipped", seed=args.seed, cases=[])
    with tempfile.TemporaryDirectory() as tmp:
        for name in sizes:
            shape, spacing = grids[name]
            t0 = time.perf_counter()
            image = write_case(Path(tmp) / name, shape, spacing, args.seed)
            print(f"\n== {name}: phantom {shape} @ {spacing} mm written in {time.perf_counter() - t0:.1f} s "
                  f"({image.stat().st_size / 1e6:.1f} MB)", flush=True)
            runs = []
            for i in range(args.repeats):
                r = measure_case(image, args.weights)
                runs.append(r)
                print(f"   run {i + 1}: " + ", ".join(f"{k} {r['seconds'].get(k, 0):.2f} s" for k in STEPS)
                      + f"; total {r['total_s']:.1f} s, process peak {r['process_peak_mb']:.0f} MB, "
                      f"{r['n_rois']} ROI(s), active {r['n_active']}", flush=True)
            results["cases"].append(dict(name=name, shape=list(shape), spacing=list(spacing), runs=runs,
                                         median=summarise(runs)))
    write_report(results, args.out, markdown(results))
    return results


if __name__ == "__main__":
    main()
