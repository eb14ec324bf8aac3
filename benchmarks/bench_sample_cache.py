"""``kidney train --sample-cache``: the time to have a run's samples, and the memory they take.

    python benchmarks/bench_sample_cache.py --data TRAIN --stage1-weights STAGE1.npz --max-cases 24
    python benchmarks/bench_sample_cache.py --quick          # 2 tiny phantoms, stage 1 (smoke test)

Three fresh processes, one after the other, each with one Numba and one BLAS thread, on the same
cases and options (stage 2 with stage-1 crops by default, the ``varied`` set's grids):

* **in memory** — ``load_samples``, what ``kidney train`` does without a cache;
* **cache, first run** — ``cached_samples`` into a new folder: the samples are made as above and
  written case by case;
* **cache, later run** — ``cached_samples`` again: the folder's files memory-mapped.

Each process then reads every byte of every sample once (as a run that has drawn every crop), and
reports its seconds to have the samples, and from ``/proc/self/status`` after the read: ``RssAnon``
(private memory, which only swap could free; this machine has none) and ``RssFile`` (pages of mapped
files: shared between processes mapping the same file, and dropped by the kernel under pressure, to
be read again from disk). Linux only. Writes ``benchmarks/results/bench_sample_cache.{json,md}``.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
from measure import cpu_model, write_report  # noqa: E402

ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODES = {"memory": "in memory", "write": "cache, first run", "map": "cache, later run"}


def child(mode: str, cfg_json: str, data: str, cache: str) -> dict:
    """One mode, in this process: the samples' seconds, bytes and this process's memory after a full read."""
    import time

    import numpy as np

    from kidney.sample_cache import cached_samples
    from kidney.train import TrainConfig, load_samples

    cfg = TrainConfig(**json.loads(cfg_json))
    t0 = time.perf_counter()
    samples = load_samples(data, cfg) if mode == "memory" else cached_samples(data, cfg, cache)
    seconds = time.perf_counter() - t0
    arrays = [a for s in samples for a in (s.hu, s.labels, s.mask) if a is not None]
    checksum = sum(float(np.asarray(a, dtype=np.float64).sum()) for a in arrays)  # touches every byte
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kb = {k: int(status[k].split()[0]) for k in ("RssAnon", "RssFile")}
    return {"mode": mode, "samples": len(samples), "sample_mb": sum(a.nbytes for a in arrays) / 2**20,
            "seconds": seconds, "rss_anon_mb": kb["RssAnon"] / 1024, "rss_file_mb": kb["RssFile"] / 1024,
            "checksum": checksum}


def run(args) -> dict:
    if args.quick:
        from kidney import phantom
        tmp = Path(tempfile.mkdtemp(prefix="bench_sample_cache_data_"))
        phantom.write_dataset(tmp, 2, seed=11, preset="tiny")
        cfg = {"stage": 1, "model": "tiny", "spacing": 8.0}
        data = str(tmp)
    else:
        cfg = {"stage": 2, "spacing": args.spacing, "stage1_spacing": args.stage1_spacing,
               "stage1_weights": str(args.stage1_weights), "gt_crops": False, "max_cases": args.max_cases}
        data = str(args.data)
    cache = Path(tempfile.mkdtemp(prefix="bench_sample_cache_")) / "cache"
    env = {**os.environ, **ONE_THREAD}
    rows = []
    for mode in MODES:
        code = ("import json, sys; sys.path.insert(0, %r); from bench_sample_cache import child; "
                "print(json.dumps(child(*sys.argv[1:])))" % str(HERE))
        proc = subprocess.run([sys.executable, "-c", code, mode, json.dumps(cfg), data, str(cache)],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"{mode}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if len({r["checksum"] for r in rows}) != 1:
        raise SystemExit(f"the modes read different samples: checksums {[r['checksum'] for r in rows]}")
    cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 2**20
    return {"config": cfg, "data": data if args.quick else Path(data).name, "cache_mb_on_disk": cache_mb,
            "rows": rows, "machine": platform.platform(), "cpu_model": cpu_model(), "cpus": os.cpu_count(), "threads": 1}


def markdown(res: dict) -> str:
    lines = [f"Samples: {res['rows'][0]['samples']} ({res['rows'][0]['sample_mb']:.0f} MB of arrays), "
             f"config {json.dumps(res['config'])}; cache on disk {res['cache_mb_on_disk']:.0f} MB.", "",
             "| run | seconds to have the samples | RssAnon MB (private) | RssFile MB (mapped files) |",
             "|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {MODES[r['mode']]} | {r['seconds']:.1f} | {r['rss_anon_mb']:.0f} | {r['rss_file_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="training folder (KiTS23 layout)")
    p.add_argument("--stage1-weights", type=Path, help="stage-1 weights whose crops are the samples")
    p.add_argument("--spacing", type=float, default=1.56)
    p.add_argument("--stage1-spacing", type=float, default=5.97)
    p.add_argument("--max-cases", type=int, default=24)
    p.add_argument("--quick", action="store_true", help="2 tiny phantoms, stage 1")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_sample_cache.json")
    args = p.parse_args()
    if not args.quick and not (args.data and args.stage1_weights):
        p.error("--data and --stage1-weights are needed (or --quick)")
    res = run(args)
    write_report(res, args.out, markdown(res))


if __name__ == "__main__":
    main()
