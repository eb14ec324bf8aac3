"""One training step of the kidney network — forward, deep-supervised loss, backward, AdamW step —
sparse vs its PyTorch dense twin, where the sparse step's time goes, and how it scales with threads.

    python benchmarks/bench_train.py                                # compact + paper, stage1 + stage2-median
    python benchmarks/bench_train.py --configs compact --inputs stage1
    python benchmarks/bench_train.py --quick                        # tiny model, tiny inputs, 1 repeat

The default run takes about 25 minutes on 2 shared cores (the paper config's step is ~35 s on the
stage-1 input and ~50 s on the stage-2 median one, each run 1 + 2 × repeats times); ``--configs
compact`` about 4 minutes.

* **Inputs** are those of ``bench_network.py`` (``make_inputs``: a phantom scan sparsified on the
  stage-1 grid, and a kidney crop zoomed to the KiTS23 median stage-2 box); the HEC targets are drawn
  at random, nested (kidney ⊇ masses ⊇ tumour): a step's work does not depend on their values.
* **The sparse step** is the trainer's (``kidney.train``): a fresh ``SparseTensor`` per step (kernel
  maps are built inside the step, as in training; the tensor itself is made before the clock starts,
  like a sample), ``loss_and_dice`` (soft Dice with deep supervision 1, ½, ¼), ``backward``, AdamW
  (``param_groups``, the paper's lr, betas, eps, weight decay), ``zero_grad``.
* **The dense twin** (``torch_twin.TorchTrainStep``, only where PyTorch is installed — never
  required) runs the same network and weights on the whole grid with the same loss over the active
  voxels and PyTorch's AdamW, in a fresh subprocess whose step may grow its address space by a budget
  (``--torch-memory-gb``, default half the memory available at the start): a twin that needs more is
  reported as skipped rather than pushing the machine out of memory.
* **Times** are wall-clock seconds: one warm-up step, then ``--repeats`` steps at each thread count,
  the thread counts interleaved; the figures are those of the run with the median step time (the
  lower middle one for an even count), so its per-op times add up to at most its step time.
* **Per op** (``op_profile.OpProfile``): the backend's kernels timed through a wrapper backend, plus
  the Linear layers (BLAS), the kernel-map builders above the backend, the loss and the optimiser;
  the remainder is autograd bookkeeping and array code between the ops.
* **Threads**: each thread count sets Numba's and OpenBLAS's pools (``sparseconv.testing.threads``);
  counts above ``NUMBA_NUM_THREADS`` are dropped. The twin runs on PyTorch's default thread count.
* **Peak memory**: in a fresh subprocess per (config, input, method), after compiling the kernels on
  a tiny input, with the model, optimiser and input built: the peak RSS during one step (the first,
  so it includes creating AdamW's moment buffers) minus the RSS just before it (``kidney.peak_memory``).

Writes ``benchmarks/results/bench_train.{json,md}``.
"""
from __future__ import annotations

import argparse
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
from bench_network import STATS, _has_torch, make_inputs  # noqa: E402
from measure import write_report  # noqa: E402
from op_profile import CATEGORIES, OpProfile  # noqa: E402

DS_WEIGHTS = (1.0, 0.5, 0.25)


def make_targets(n, seed=0):
    """``(n, 3) float32`` nested random HEC targets (kidney 30 %, masses 10 %, tumour 5 % of voxels)."""
    u = np.random.default_rng(seed).random(n)
    return np.stack([u < 0.3, u < 0.1, u < 0.05], axis=1).astype(np.float32)


def build_sparse(config, seed=0):
    """The sparse network in training mode and the trainer's AdamW (``kidney.train.TrainConfig`` values)."""
    from kidney.model import KidneyNet
    from kidney.train import TrainConfig
    from sparseconv.optim import AdamW, param_groups
    c = TrainConfig()
    model = KidneyNet(config, seed=seed)
    model.train()
    return model, AdamW(param_groups(model, c.weight_decay), lr=c.lr, betas=c.betas, eps=c.eps)


def sparse_step(model, opt, x, targets, prof=None):
    """One training step on the SparseTensor ``x``; per-op times go to ``prof`` (an ``OpProfile``)."""
    from kidney.train import loss_and_dice
    prof = prof or OpProfile()
    loss, _ = loss_and_dice(model, x, targets, DS_WEIGHTS)
    with prof.phase("backward"):
        loss.backward()
    with prof.region("optimiser"):
        opt.step()
        opt.zero_grad()
    return float(loss.item())


def timed_sparse_step(model, opt, coords, feats, shape, targets):
    """``(step seconds, {op: seconds})`` of one profiled step on a fresh SparseTensor."""
    from sparseconv import SparseTensor
    x = SparseTensor(coords, feats, shape)
    prof = OpProfile()
    with prof:
        t0 = time.perf_counter()
        sparse_step(model, opt, x, targets, prof)
        step_s = time.perf_counter() - t0
    return step_s, prof.table()


def thread_counts(wanted):
    import numba
    return sorted({min(int(n), numba.config.NUMBA_NUM_THREADS) for n in wanted})


def run_sparse(config, coords, feats, shape, targets, counts, repeats):
    """Per thread count: the median run's step time and per-op table, and every run's step time."""
    import sparseconv
    from sparseconv.testing.threads import control_for
    control = control_for(sparseconv.get_backend())
    model, opt = build_sparse(config)
    with control.threads(max(counts)):
        timed_sparse_step(model, opt, coords, feats, shape, targets)  # warm-up (compiles, allocates)
    runs = {n: [] for n in counts}
    for _ in range(repeats):
        for n in counts:  # interleaved, so a change in the machine's load hits every count alike
            with control.threads(n):
                runs[n].append(timed_sparse_step(model, opt, coords, feats, shape, targets))
    out = {}
    for n, rs in runs.items():
        step_s, ops = sorted(rs, key=lambda r: r[0])[(len(rs) - 1) // 2]
        out[str(n)] = dict(step_s=step_s, ops=ops, remainder_s=step_s - sum(ops.values()),
                           runs_s=[r[0] for r in rs])
    return out, model.num_parameters()


# --- subprocesses: peak memory of a sparse step; the PyTorch twin ---------------------------------

_SPARSE_CHILD = r"""
import sys, json, numpy as np
sys.path.insert(0, sys.argv[3])
import bench_train as T
from measure import reset_peak, rss_mb, peak_rss_mb
from sparseconv import SparseTensor
d = np.load(sys.argv[1]); config = sys.argv[2]
coords, feats, shape, targets = d["coords"], d["feats"], tuple(int(s) for s in d["shape"]), d["targets"]
tiny, tiny_opt = T.build_sparse("tiny")  # compile the kernels first, so JIT memory is not counted
T.sparse_step(tiny, tiny_opt, SparseTensor(coords[:64], feats[:64], shape), targets[:64])
model, opt = T.build_sparse(config)
x = SparseTensor(coords, feats, shape)
reset_peak()
base = rss_mb()
T.sparse_step(model, opt, x, targets)
print(json.dumps(dict(peak_mb=peak_rss_mb() - base)))
"""

_TORCH_CHILD = r"""
import sys, json, resource, time, numpy as np
sys.path.insert(0, sys.argv[3])
import bench_train as T
from measure import reset_peak, rss_mb, peak_rss_mb
d = np.load(sys.argv[1]); config, budget_gb, repeats = sys.argv[2], float(sys.argv[4]), int(sys.argv[5])
import torch
from torch_twin import TorchTrainStep
model, _ = T.build_sparse(config)
step = TorchTrainStep(model, d["coords"], d["feats"], tuple(int(s) for s in d["shape"]), d["targets"], T.DS_WEIGHTS)
# From here the address space may grow by budget_gb: a twin that needs more fails with an error
# instead of pushing the machine (and whatever else runs on it) out of memory.
cap = T.address_space_bytes() + int(budget_gb * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    reset_peak()
    base = rss_mb()
    step.step()  # the first step: peak memory (and warm-up)
    peak = peak_rss_mb() - base
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step.step()
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(step_s=sorted(times)[(len(times) - 1) // 2], runs_s=times, peak_mb=peak,
                          threads=torch.get_num_threads(), torch=torch.__version__)))
except (MemoryError, RuntimeError) as err:
    if not isinstance(err, MemoryError) and "memory" not in str(err).lower():
        raise
    print(json.dumps(dict(skipped=f"needs more than {budget_gb:.1f} GB")))
"""


def address_space_bytes():
    """This process's virtual address space (``VmSize``), in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmSize")


def _child(script, *args):
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_gb():
    """MemAvailable of /proc/meminfo in GB (Linux); the total RAM elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


# --- main --------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="compact,paper", help="comma list of compact, paper, tiny")
    p.add_argument("--inputs", default="stage1,stage2-median", help="comma list of stage1, stage2-median, stage2-p95")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="thread counts of the per-op table (default 1,2)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch dense twin even if installed")
    p.add_argument("--torch-memory-gb", type=float, default=None,
                   help="how much the twin's step may grow its address space (default: half of MemAvailable)")
    p.add_argument("--no-memory", action="store_true", help="skip the sparse peak-memory subprocesses")
    p.add_argument("--stats", default=str(STATS), help="KiTS23 statistics CSV (stage-2 crop boxes)")
    p.add_argument("--quick", action="store_true", help="tiny inputs, tiny config, 1 repeat (smoke test)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_train.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.inputs, args.repeats = "tiny", "stage1,stage2-median", 1

    import numba
    import sparseconv
    counts = thread_counts(args.threads.split(","))
    torch_note = None
    if args.no_torch:
        torch_note = "the PyTorch twin was not run (--no-torch)"
    elif not _has_torch():
        torch_note = "PyTorch is not installed: the dense-twin column is empty (pip install torch to fill it)"
    budget_gb = args.torch_memory_gb or round(available_gb() / 2, 1)
    machine = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                   cpus=os.cpu_count(), numba_max_threads=numba.config.NUMBA_NUM_THREADS, thread_counts=counts,
                   threads_asked=sorted({int(n) for n in args.threads.split(",")}),
                   backend=sparseconv.get_backend().name, numpy=np.__version__, numba=numba.__version__,
                   load_avg_at_start=[round(v, 2) for v in os.getloadavg()],
                   mem_available_gb_at_start=round(available_gb(), 1))
    print(f"machine: {machine}\n" + (torch_note or f"PyTorch twin: memory budget {budget_gb} GB"), flush=True)
    inputs = make_inputs(args.inputs.split(","), quick=args.quick, stats_path=args.stats)
    results = dict(machine=machine, torch_note=torch_note, torch_memory_budget_gb=None if torch_note else budget_gb,
                   repeats=args.repeats, rows=[])
    with tempfile.TemporaryDirectory() as tmp:
        for name, (coords, feats, shape) in inputs.items():
            targets = make_targets(len(coords))
            npz = os.path.join(tmp, f"{name}.npz")
            np.savez(npz, coords=coords, feats=feats, shape=np.array(shape), targets=targets)
            print(f"\n== {name}: grid {shape}, {len(coords):,} active", flush=True)
            for config in args.configs.split(","):
                t0 = time.perf_counter()
                threads, n_params = run_sparse(config, coords, feats, shape, targets, counts, args.repeats)
                row = dict(input=name, config=config, grid=list(shape), grid_voxels=int(np.prod(shape)),
                           active=len(coords), parameters=n_params, sparse=dict(threads=threads))
                row["sparse"]["step_s"] = threads[str(max(counts))]["step_s"]
                if not args.no_memory:
                    row["sparse"]["peak_mb"] = _child(_SPARSE_CHILD, npz, config, HERE)["peak_mb"]
                if torch_note is None:
                    row["torch"] = _child(_TORCH_CHILD, npz, config, HERE, budget_gb, args.repeats)
                    if "step_s" in row["torch"]:
                        row["torch_over_sparse"] = row["torch"]["step_s"] / row["sparse"]["step_s"]
                results["rows"].append(row)
                print(f"   {config}: sparse step {row['sparse']['step_s']:.2f} s "
                      f"({time.perf_counter() - t0:.0f} s for this row)", flush=True)
    write_report(results, args.out, markdown(results))
    return results


# --- report --------------------------------------------------------------------------------------------

def _fmt(v, f=".2f", none=""):
    return none if v is None else format(v, f)


def step_table(results):
    hi = max(results["machine"]["thread_counts"])
    lines = [f"| input | config | active | sparse step (s), {hi} thread{'s' * (hi > 1)} | PyTorch twin step (s) | "
             "twin / sparse | sparse peak MB | twin peak MB |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        t = r.get("torch") or {}
        twin = t.get("skipped") or f"{t['step_s']:.2f} ({t['threads']} threads)" if t else ""
        lines.append(f"| {r['input']} | {r['config']} | {r['active']:,} | {r['sparse']['step_s']:.2f} | {twin} | "
                     f"{_fmt(r.get('torch_over_sparse'))} | {_fmt(r['sparse'].get('peak_mb'), '.0f')} | "
                     f"{_fmt(t.get('peak_mb'), '.0f')} |")
    return "\n".join(lines)


def ops_table(row):
    """Per-op seconds and share of the step at each thread count, and the speed-up between the extremes."""
    th = row["sparse"]["threads"]
    counts = sorted(th, key=int)
    lo, hi = counts[0], counts[-1]
    head = "| op | " + " | ".join(f"{n} thread{'s' * (n != '1')} (s) | share" for n in counts)
    head += f" | speed-up {hi} vs {lo} |" if lo != hi else " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(counts) + (lo != hi))]
    entries = [(c, {n: th[n]["ops"][c] for n in counts}) for c in CATEGORIES]
    entries.append(("autograd and other Python (remainder)", {n: th[n]["remainder_s"] for n in counts}))
    entries.append(("**step**", {n: th[n]["step_s"] for n in counts}))
    for name, secs in entries:
        if name in CATEGORIES and max(secs.values()) == 0.0:
            continue
        cells = " | ".join(f"{secs[n]:.3f} | {100 * secs[n] / th[n]['step_s']:.0f} %" for n in counts)
        speed = f" | {secs[lo] / secs[hi]:.2f}" if lo != hi and secs[hi] > 0 else (" | " if lo != hi else "")
        lines.append(f"| {name} | {cells}{speed} |")
    return "\n".join(lines)


def markdown(results):
    m = results["machine"]
    parts = [f"Machine: {m['cpus']} CPUs ({m['processor']}), load average at start {m['load_avg_at_start']}, "
             f"backend {m['backend']}, thread counts {m['thread_counts']} (Numba and OpenBLAS"
             f"{'; NUMBA_NUM_THREADS allows no more' if m['thread_counts'] != m['threads_asked'] else ''}); "
             f"{results['repeats']} timed step(s) per thread count after a warm-up, the run with the median "
             "step time shown.", ""]
    if results["torch_note"]:
        parts += [f"Note: {results['torch_note']}.", ""]
    parts += ["### Training step: sparse vs the PyTorch dense twin", "", step_table(results)]
    for r in results["rows"]:
        parts += ["", f"### Where the sparse step's time goes: {r['config']} on {r['input']} "
                      f"({r['active']:,} active of {r['grid_voxels']:,})", "", ops_table(r)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
