"""``kidney train --distributed`` on 1, 2, … MPI ranks: steps/s, samples/s, scaling efficiency and
the time in the gradient all-reduce per step.

    python benchmarks/bench_train_ranks.py                  # compact model, stage 1, 4 tiny phantoms, ranks 1,2
    python benchmarks/bench_train_ranks.py --ranks 1,2,4 --steps 11
    python benchmarks/bench_train_ranks.py --quick          # tiny model, 2 steps (smoke test)
    python benchmarks/bench_train_ranks.py --estimate       # no run: gradient sizes, all-reduce times

``--estimate`` computes, for the compact and paper configs, the parameter count (from the code), the
float32 gradient per step and the bandwidth-only time to sum it over P ranks at 10 and 100 Gbit/s:
a ring all-reduce (NCCL's, or MPI_Allreduce's for large messages) moves 2(P − 1)/P × size through
every rank's link; this module's fixed-order sum (gather to rank 0, then broadcast) moves
(P − 1) × size into rank 0 and then broadcasts, about 2(P − 1)/P × size more (a scatter + allgather
broadcast), so (P − 1 + 2(P − 1)/P) × size through rank 0's link. Latency is left out.

Every rank count is one run of the command a user types, in fresh processes, into its own output
folder: ``mpiexec -n P python -m kidney train --distributed --threads 1 ...`` with one Numba thread
and one BLAS thread per rank (``NUMBA_NUM_THREADS=OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1``), after
one untimed 1-step run that compiles and caches Numba's kernels (not with ``--quick``). The same
global batch each time (``--accumulate`` samples per optimiser step, split over the ranks): strong
scaling. From rank 0's ``train_log.jsonl``:

* **s per step** — the mean time of steps 2 … N (step 1 also pays one-off set-up);
* **steps/s**, **samples/s** (= steps/s × accumulate);
* **scaling efficiency** — steps/s on P ranks / (P × steps/s on 1 rank);
* **all-reduce s per step** — rank 0's time inside the gradient sum (gather to rank 0, sum in rank
  order, broadcast), *including the wait for the slowest rank to finish its share*: the mean, and the
  smallest (an upper bound on the transfer and the sum themselves);
* **wall** — the whole command (Python start, data loading, all steps, writing the weights).

Writes ``benchmarks/results/bench_train_ranks.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(REPO))  # this checkout's kidney, as the timed `python -m kidney` (run from REPO) uses
sys.path.insert(0, str(HERE))
from measure import cpu_model, write_report  # noqa: E402

ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, in this environment
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if not found:
        raise SystemExit("no mpiexec: pip install sparseconv[mpi]")
    return found


def train_cmd(ranks: int, data: Path, out: Path, args, steps: int) -> list:
    return [mpiexec(), "-n", str(ranks), sys.executable, "-m", "kidney", "train", "--distributed",
            "--data", str(data), "--out", str(out), "--stage", "1", "--model", args.model,
            "--spacing", str(args.spacing), "--steps", str(steps), "--accumulate", str(args.accumulate),
            "--seed", "0", "--threads", "1", "--quiet", "--fresh"]


def run_ranks(ranks: int, data: Path, out: Path, args) -> dict:
    cmd = train_cmd(ranks, data, out, args, args.steps)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    timed = log[1:]
    s_per_step = (log[-1]["seconds"] - log[0]["seconds"]) / len(timed)
    reduce_s = float(np.mean([r["allreduce_seconds"] for r in timed]))
    shown = " ".join(["mpiexec"] + cmd[1:3] + ["python"] + cmd[4:]).replace(str(data), "DATA")
    return dict(ranks=ranks, command=shown.replace(str(out), f"OUT_{ranks}"),
                steps=len(log), timed_steps=len(timed), samples_per_step=args.accumulate,
                s_per_step=s_per_step, steps_per_s=1.0 / s_per_step, samples_per_s=args.accumulate / s_per_step,
                allreduce_s_per_step=reduce_s, allreduce_s_min=min(r["allreduce_seconds"] for r in timed),
                allreduce_share=reduce_s / s_per_step,
                step_seconds=[round(b["seconds"] - a["seconds"], 3) for a, b in zip(log, log[1:])],
                allreduce_seconds=[r["allreduce_seconds"] for r in timed], wall_s=wall,
                final_loss=log[-1]["loss"])


def markdown(res: dict) -> str:
    one = next((r for r in res["runs"] if r["ranks"] == 1), None)
    lines = ["| ranks | processes × threads | samples per step | s per step | steps/s | samples/s | scaling "
             "efficiency | all-reduce s per step, mean (min), waiting included | all-reduce share | wall (s) |",
             "|" + "---|" * 10]
    for r in res["runs"]:
        eff = f"{r['steps_per_s'] / (r['ranks'] * one['steps_per_s']):.2f}" if one else ""
        lines.append(f"| {r['ranks']} | {r['ranks']} × 1 | {r['samples_per_step']} | {r['s_per_step']:.2f} | "
                     f"{r['steps_per_s']:.3f} | {r['samples_per_s']:.2f} | {eff} | "
                     f"{r['allreduce_s_per_step']:.4f} ({r['allreduce_s_min']:.4f}) | "
                     f"{100 * r['allreduce_share']:.1f} % | "
                     f"{r['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def estimate(models=("compact", "paper"), ranks=(2, 8, 32), gbits=(10, 100)) -> str:
    from kidney.model import KidneyNet

    lines = ["| model | parameters | gradient per step (MB, float32) | ranks | link (Gbit/s) | ring all-reduce (s) "
             "| gather + broadcast, fixed order (s) |", "|" + "---|" * 7]
    for name in models:
        n = sum(p.data.size for p in KidneyNet(name, seed=0).parameters())
        size_bits = 32 * n
        for p in ranks:
            for g in gbits:
                ring = 2 * (p - 1) / p * size_bits / (g * 1e9)
                ours = (p - 1 + 2 * (p - 1) / p) * size_bits / (g * 1e9)
                lines.append(f"| {name} | {n:,} | {4 * n / 1e6:.2f} | {p} | {g} | {ring:.4f} | {ours:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2", help="comma list of rank counts (default 1,2)")
    p.add_argument("--model", default="compact", help="model config (default compact)")
    p.add_argument("--spacing", type=float, default=4.0, help="stage-1 grid in mm (default 4)")
    p.add_argument("--cases", type=int, default=4, help="tiny phantoms to train on (default 4)")
    p.add_argument("--accumulate", type=int, default=8, help="samples per optimiser step (default 8, the paper's)")
    p.add_argument("--steps", type=int, default=6, help="optimiser steps per run; the first is not timed (default 6)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    p.add_argument("--quick", action="store_true",
                   help="tiny model, 8 mm, 2 phantoms, 2 steps of 2, no warm-up run (smoke test)")
    p.add_argument("--estimate", action="store_true",
                   help="print gradient sizes and bandwidth-only all-reduce times, run nothing")
    p.add_argument("--keep", default=None, help="keep the phantoms and outputs in this folder")
    p.add_argument("--out", default=str(HERE / "results" / "bench_train_ranks.json"))
    args = p.parse_args(argv)
    if args.estimate:
        print(estimate())
        return None
    if args.quick:
        args.model, args.spacing, args.cases, args.accumulate, args.steps = "tiny", 8.0, 2, 2, 2
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    if args.steps < 2:
        raise SystemExit("--steps must be at least 2 (the first step is not timed)")
    import mpi4py
    import numba

    from kidney.model import KidneyNet

    n_params = sum(p.data.size for p in KidneyNet(args.model, seed=0).parameters())
    machine = dict(platform=platform.platform(), python=platform.python_version(), cpu_model=cpu_model(),
                   cpus=os.cpu_count(), numpy=np.__version__, numba=numba.__version__, mpi4py=mpi4py.__version__,
                   load_average_at_start=[round(x, 2) for x in os.getloadavg()])
    print(f"machine: {machine}", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_train_ranks_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from kidney import phantom
        data = work / "data"
        phantom.write_dataset(data, args.cases, args.seed, overwrite=True, preset="tiny")
        if not args.quick:  # compile and cache the kernels, untimed
            warm = subprocess.run(train_cmd(1, data, work / "warm", args, 1), cwd=REPO,
                                  env={**os.environ, **ONE_THREAD}, capture_output=True, text=True)
            if warm.returncode != 0:
                raise RuntimeError(f"warm-up run failed:\n{warm.stderr[-3000:]}")
        results = dict(machine=machine, model=args.model, parameters=int(n_params),
                       gradient_mb=round(4 * n_params / 1e6, 3), stage=1, spacing_mm=args.spacing,
                       phantoms=f"{args.cases} x kidney phantom --preset tiny (seed {args.seed})",
                       accumulate=args.accumulate, runs=[])
        for r in ranks:
            res = run_ranks(r, data, work / f"out_{r}", args)
            results["runs"].append(res)
            print(f"  {r} rank(s): {res['s_per_step']:.2f} s/step, {res['samples_per_s']:.2f} samples/s, "
                  f"all-reduce {res['allreduce_s_per_step']:.4f} s/step, wall {res['wall_s']:.1f} s", flush=True)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_report(results, args.out, markdown(results))
    return results


if __name__ == "__main__":
    main()
