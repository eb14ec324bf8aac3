"""A cohort through ``kidney segment``: the same phantom scans segmented serially, then on a Dask
LocalCluster of 1 and of 2 worker processes — cases per minute, peak memory per worker, scaling
efficiency and scheduler overhead per case.

    python benchmarks/bench_cohort.py                       # 24 scans of KiTS23 sizes
    python benchmarks/bench_cohort.py --cases 6             # fewer
    python benchmarks/bench_cohort.py --sizes demo          # the demo preset's grids (256², ~1.6 mm)
    python benchmarks/bench_cohort.py --engines serial,1,2,4
    python benchmarks/bench_cohort.py --quick               # 4 tiny scans (smoke test)

Scans: ``--sizes kits`` (default) draws ``--cases`` rows (seeded, without replacement) from the
statistics of all 489 KiTS23 scans (data/kits23_sample/kits23_segmentation_stats.csv) and makes a
phantom on each scan's grid and spacing; ``--sizes demo`` makes ``kidney phantom --preset demo``
scans. They are written as NIfTI, KiTS23 layout, once; every engine reads the same files.

Each engine is one run of the command a user types, in a fresh process, into its own output folder
(``kidney segment -i DATA -o OUT --quiet``; ``--workers K --dashboard-address none`` for Dask), after
one untimed warm-up run (so Numba's kernels are compiled and cached on disk; every process still
loads them). From the command's wall time and its manifest (per case: seconds to read, segment and
write, peak resident memory, worker; per run: wall and cluster start-up time):

* **cases/min** — cases over the run's time after the cluster was up (the driver's own clock, from
  planning to the last case); **end to end** — cases over the whole command's wall time (Python
  start, weights, cluster start-up included);
* **peak MB per worker** — the largest per-case peak resident memory of each worker process;
* **scaling efficiency** — cases/min of K workers / (K x cases/min of 1 worker);
* **overhead per case** — (K x run time - the sum of the cases' own seconds) / cases: time a
  worker was not inside a case (scheduling, transfers, the model's first load, the tail when fewer
  cases than workers are left), per case.

The labels of every engine are compared with the serial run's, byte for byte.
Writes ``benchmarks/results/bench_cohort.{json,md}``.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STATS = REPO / "data" / "kits23_sample" / "kits23_segmentation_stats.csv"
sys.path.insert(0, str(REPO))  # this checkout's kidney, as the timed `python -m kidney` (run from REPO) uses
sys.path.insert(0, str(HERE))
from measure import cpu_model, write_report  # noqa: E402


def kits_grids(n: int, seed: int, stats_path=STATS):
    """``n`` (shape, spacing, case) drawn without replacement from the KiTS23 statistics."""
    with open(stats_path) as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return [(tuple(int(rows[i][f"n{k}"]) for k in range(3)), tuple(float(rows[i][f"sp{k}_mm"]) for k in range(3)),
             rows[i]["case"]) for i in pick]


def write_scans(out: Path, n: int, sizes: str, seed: int) -> list:
    """Phantom scans in KiTS23 layout (``case_XXXXX/imaging.nii.gz``); one dict per case."""
    from kidney import phantom

    made = []
    grids = kits_grids(n, seed) if sizes == "kits" else [(None, None, None)] * n
    for i, (shape, spacing, like) in enumerate(grids):
        kw = dict(preset="full", shape=shape, spacing=spacing) if sizes == "kits" else dict(preset=sizes)
        ph = phantom.make_phantom(seed * 1000 + i, **kw)
        phantom.write_case(ph, out / f"case_{i:05d}")
        made.append(dict(case=f"case_{i:05d}", shape=list(ph.image.shape),
                         spacing=[round(float(s), 3) for s in ph.spacing], like=like))
        print(f"  case_{i:05d}: {ph.image.shape} @ {tuple(round(float(s), 2) for s in ph.spacing)} mm"
              + (f" (grid of KiTS23 {like})" if like else ""), flush=True)
    return made


def run_engine(engine: str, data: Path, out: Path, weights=None) -> dict:
    """One ``kidney segment`` run; its wall time and what its manifest says."""
    from kidney import cohort

    cmd = [sys.executable, "-m", "kidney", "segment", "-i", str(data), "-o", str(out), "--quiet"]
    if weights:
        cmd += ["--weights", str(weights)]
    if engine != "serial":
        cmd += ["--workers", engine, "--dashboard-address", "none"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    rows = [r for r in cohort.read_manifest(out).values() if r["status"] == "done"]
    run = cohort.read_runs(out)[-1]
    k = 1 if engine == "serial" else int(engine)
    busy = run["wall_s"] - run["startup_s"]
    per_worker = {}
    for r in rows:
        per_worker[r["worker"]] = max(per_worker.get(r["worker"], 0.0), r["peak_mb"])
    n = len(rows)
    return dict(engine=engine, workers=k, command=" ".join(cmd[1:]).replace(str(REPO) + "/", ""),
                cases=n, wall_s=wall, run_s=run["wall_s"], startup_s=run["startup_s"],
                cases_per_min=60.0 * n / busy, end_to_end_per_min=60.0 * n / wall,
                case_s_median=float(np.median([r["seconds"] for r in rows])),
                case_s_sum=float(sum(r["seconds"] for r in rows)),
                overhead_per_case_s=(k * busy - sum(r["seconds"] for r in rows)) / n,
                peak_mb_per_worker=per_worker, peak_mb=max(per_worker.values()),
                retried=sum(bool(r.get("retried")) for r in rows))


def same_bits(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.nii.gz"))
    return names == sorted(p.name for p in b.glob("*.nii.gz")) and \
        all((a / x).read_bytes() == (b / x).read_bytes() for x in names)


def markdown(res: dict) -> str:
    one = next((r for r in res["engines"] if r["engine"] == "1"), None)
    lines = ["| engine | processes × threads | cases | wall (s) | cluster start (s) | cases/min | end to end "
             "(cases/min) | s per case (median) | peak MB per worker | scaling efficiency | overhead per case (s) "
             "| labels = serial |", "|" + "---|" * 12]
    for r in res["engines"]:
        threads = res["machine"]["numba_threads"] if r["engine"] == "serial" else 1
        eff = "" if one is None or r["engine"] == "serial" else \
            f"{r['cases_per_min'] / (r['workers'] * one['cases_per_min']):.2f}"
        name = "serial" if r["engine"] == "serial" else f"--workers {r['engine']}"
        lines.append(f"| {name} | {r['workers']} × {threads} | {r['cases']} | {r['wall_s']:.1f} | "
                     f"{r['startup_s']:.1f} | {r['cases_per_min']:.1f} | {r['end_to_end_per_min']:.1f} | "
                     f"{r['case_s_median']:.2f} | {r['peak_mb']:.0f} | {eff} | {r['overhead_per_case_s']:.2f} | "
                     f"{'yes' if r['same_bits_as_serial'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=24, help="phantom scans (default 24)")
    p.add_argument("--sizes", default="kits", choices=("kits", "demo", "tiny"),
                   help="kits: grids drawn from the KiTS23 statistics (default); demo / tiny: phantom presets")
    p.add_argument("--engines", default="serial,1,2", help="comma list of serial and worker counts")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="4 tiny scans (smoke test)")
    p.add_argument("--keep", default=None, help="keep the scans and outputs in this folder")
    p.add_argument("--out", default=str(HERE / "results" / "bench_cohort.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.cases, args.sizes = 4, "tiny"
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "serial" not in engines:
        engines.insert(0, "serial")
    import numba

    machine = dict(platform=platform.platform(), python=platform.python_version(), cpu_model=cpu_model(),
                   cpus=os.cpu_count(), numba_threads=numba.config.NUMBA_NUM_THREADS, numpy=np.__version__,
                   load_average_at_start=[round(x, 2) for x in os.getloadavg()])
    try:
        import dask
        import distributed
        machine.update(dask=dask.__version__, distributed=distributed.__version__)
    except ImportError:
        pass
    print(f"machine: {machine}", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "data"
        t0 = time.perf_counter()
        print(f"writing {args.cases} {args.sizes} phantom scans into {data}", flush=True)
        scans = write_scans(data, args.cases, args.sizes, args.seed)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        warm = work / "warm"  # compile / cache the kernels once, untimed
        (warm / "data").mkdir(parents=True, exist_ok=True)
        shutil.copytree(data / scans[0]["case"], warm / "data" / scans[0]["case"])
        run_engine("serial", warm / "data", warm / "out", args.weights)
        results = dict(machine=machine, sizes=args.sizes, seed=args.seed, scans=scans,
                       weights=args.weights or "shipped", engines=[])
        for engine in engines:
            out = work / f"out_{engine}"
            r = run_engine(engine, data, out, args.weights)
            r["same_bits_as_serial"] = same_bits(out, work / "out_serial")
            results["engines"].append(r)
            print(f"  {engine:>6}: {r['cases']} cases, wall {r['wall_s']:.1f} s, {r['cases_per_min']:.1f} cases/min, "
                  f"peak {r['peak_mb']:.0f} MB/worker, overhead {r['overhead_per_case_s']:.2f} s/case, "
                  f"same bits {r['same_bits_as_serial']}", flush=True)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_report(results, args.out, markdown(results))
    return results


if __name__ == "__main__":
    main()
