"""One training step of the kidney network — forward, deep-supervised loss, backward, AdamW step —
sparse vs its PyTorch dense twin, where the sparse step's time goes, and how it scales with threads.

    python benchmarks/bench_train.py                                # compact + paper, stage1 + stage2-median
    python benchmarks/bench_train.py --configs compact --inputs stage1
    python benchmarks/bench_train.py --inputs stage1@3              # a coarser grid, where the twin fits
    python benchmarks/bench_train.py --quick                        # tiny model, tiny inputs, 1 repeat
    python benchmarks/bench_train.py --twin plain,checkpointed      # the twin also with checkpointing

The default run took 6 minutes on a busy 2-core machine (README), where the paper config's stage-2
step and every dense-twin step on these inputs exceeded the memory budget and stopped early (a row
then cost 1 + 2 × repeats steps; its compact rows took 62 s and 100 s); a row now also runs the
warm-up below.

* **Inputs** are those of ``bench_network.py`` (``make_inputs``: a phantom scan sparsified on the
  stage-1 grid, and a kidney crop zoomed to the KiTS23 median stage-2 box); the HEC targets are drawn
  at random, nested (kidney ⊇ masses ⊇ tumour): a step's work does not depend on their values.
* **The sparse step** is the trainer's (``kidney.train``): a fresh ``SparseTensor`` per step (kernel
  maps are built inside the step, as in training; the tensor itself is made before the clock starts,
  like a sample), ``loss_and_dice`` (soft Dice with deep supervision 1, ½, ¼), ``backward``, AdamW
  (``param_groups``, the paper's lr, betas, eps, weight decay), ``zero_grad``.
* **The dense twin** (``torch_twin.TorchTrainStep``, only where PyTorch is installed — never
  required) runs the same network and weights on the whole grid with the same loss over the active
  voxels and PyTorch's AdamW. ``--twin checkpointed`` (or ``plain,checkpointed``: both, side by
  side) runs its blocks under activation checkpointing, the usual way to fit a dense 3D network's
  training step into memory: it keeps a block's input only and recomputes the rest in the backward.
* **Each (config, input, method) runs in a fresh subprocess** (``sparse_row``, ``torch_row``): the
  config's kernels are compiled on a small input first; then, with the model, optimiser and input
  built, the process's address space may grow by ``--memory-gb`` (default half the memory available
  at the start) — a step that needs more is reported as such instead of pushing the machine, and
  whatever else runs on it, out of memory.
* **Peak memory**: the peak RSS during the first step (so it includes creating AdamW's moment
  buffers) minus the RSS just before it (``kidney.peak_memory``).
* **Warm-up**: that step, and with freed memory kept (the default, as in ``kidney train``) more
  untimed ones, a round of one step per thread count at a time, until a round's steps each take
  fewer than ``SETTLED_FAULTS`` page faults (at most ``--warmup-steps`` steps in all). The C
  library's heap grows over the first steps until the step's arrays fit in what it already holds
  (about 20 steps of either input here); until then each step faults in fresh pages, a cost
  a long training run pays at its start only. With freed memory returned every step faults its
  arrays in again, so one step is the warm-up. ``held MB`` is the RSS after the warm-up minus the
  RSS before the first step: what the process keeps between steps.
* **Times** are wall-clock seconds of ``--repeats`` further steps at each thread count, the thread
  counts interleaved (a change in the machine's load hits each alike); the figures are those of the
  run with the median step time (the lower middle one for an even count), so its per-op times add
  up to at most its step time. The twin: the median of ``--repeats`` steps after the first.
* **Per op** (``op_profile.OpProfile``): the backend's kernels timed through a wrapper backend, plus
  the Linear layers, the kernel-map builders above the backend, the loss and the optimiser;
  the remainder is autograd bookkeeping and array code between the ops.
* **Memory pages**: NumPy advises Linux to back its large arrays with huge pages, and the Numba
  backend allocates its outputs with NumPy for that reason; ``--no-numpy-huge-pages`` measures the
  sparse step with that advice off (README: where it helps and where it costs).
* **Threads**: each thread count is set on every thread pool of the process, Numba's
  (``numba.set_num_threads``; counts above ``NUMBA_NUM_THREADS`` are dropped) and the OpenBLAS that
  NumPy runs on (``sparseconv.testing.threads``), whatever ``OPENBLAS_NUM_THREADS`` said at the start
  (reported). The sparse step's Linear layers run on the backend's convolution kernels, so on the
  Numba backend nothing in it depends on OpenBLAS; the twin runs on PyTorch's default thread count.

A partial report is written after each row, so an interrupted run keeps what it measured.
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
from measure import cpu_model, write_report  # noqa: E402
from op_profile import CATEGORIES, OpProfile  # noqa: E402

DS_WEIGHTS = (1.0, 0.5, 0.25)
TWINS = {"plain": "torch", "checkpointed": "torch_checkpointed"}  # --twin: the key of its columns in a row


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


def minor_faults():
    """Page faults this process has taken so far that needed no disk read: a first touch of a fresh
    page, the cost that freed-and-allocated-again memory brings (``sparseconv.allocator``)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_sparse_step(model, opt, coords, feats, shape, targets):
    """``(step seconds, {op: seconds}, page faults)`` of one profiled step on a fresh SparseTensor."""
    from sparseconv import SparseTensor
    x = SparseTensor(coords, feats, shape)
    prof = OpProfile()
    with prof:
        f0, t0 = minor_faults(), time.perf_counter()
        sparse_step(model, opt, x, targets, prof)
        step_s, faults = time.perf_counter() - t0, minor_faults() - f0
    return step_s, prof.table(), faults


SETTLED_FAULTS = 100  # page faults of a step below which the heap counts as settled (a settled one takes a few)


def warm_up(step, counts, max_steps):
    """Untimed steps after the first (which the caller ran), a round of one per thread count at a time,
    until every step of a round took fewer than ``SETTLED_FAULTS`` page faults or ``max_steps`` steps
    ran in all; returns the steps run, the first included."""
    done = 1
    while done + len(counts) <= max_steps:
        faults = []
        for n in counts:
            with compute_threads(n):
                f0 = minor_faults()
                step()
                faults.append(minor_faults() - f0)
        done += len(counts)
        if max(faults) < SETTLED_FAULTS:
            break
    return done


def stream_rate(counts, rows=1 << 21, repeats=5):
    """``({threads: GB/s}, MB of one array)`` of the Numba backend's elementwise add (``out = a + b``
    on ``(rows, 32)`` float32: 3 × 256 MB of traffic by default, far beyond the caches), the median
    of ``repeats`` at each thread count: how fast a pass that only streams memory goes, and what a
    second core adds to it."""
    from measure import median_time
    from sparseconv.backends.numba_cpu import _add
    a = np.ones((rows, 32), np.float32)
    b, out = a.copy(), np.zeros_like(a)  # every page written before the clock starts
    rates = {}
    for n in counts:
        with compute_threads(n):
            rates[n] = 3 * a.nbytes / median_time(lambda: _add(a, b, out), repeats) / 1e9
    return rates, a.nbytes / 2**20


def thread_counts(wanted):
    import numba
    return sorted({min(int(n), numba.config.NUMBA_NUM_THREADS) for n in wanted})


def compute_threads(n):
    """A context: every thread pool of the process (Numba's, NumPy's OpenBLAS) at ``n`` threads
    inside it (each at most what it allows), as before after it."""
    import sparseconv
    from sparseconv.testing.threads import control_for
    return control_for(sparseconv.get_backend()).threads(n)


def blas_threads():
    """The thread count of the OpenBLAS NumPy's matrix products run on, as the environment set it
    (None if not found)."""
    from sparseconv.testing.threads import _openblas_library
    lib = _openblas_library()
    return None if lib is None else int(lib[1]())


def limit_memory(budget_gb):
    """From now on this process's address space may grow by ``budget_gb`` at most: a step that needs
    more fails with ``MemoryError`` instead of pushing the machine (and whatever else runs on it) out
    of memory. Linux (``/proc/self/status``)."""
    import resource
    size = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmSize:"))
    cap = size + int(budget_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _madvise_switch():
    """NumPy's getter and setter of its huge-page advice for large arrays (``madvise``, Linux; on by
    default; named in NumPy's global-state documentation), or ``(None, None)`` where it has none."""
    try:
        from numpy._core import multiarray as ma  # NumPy 2
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray as ma
    return getattr(ma, "_get_madvise_hugepage", None), getattr(ma, "_set_madvise_hugepage", None)


def numpy_huge_pages():
    """Whether NumPy advises huge pages for the arrays it allocates now (None: no such switch)."""
    get, _ = _madvise_switch()
    return None if get is None else bool(get())


def set_numpy_huge_pages(enabled):
    """Turn NumPy's huge-page advice on or off for this process; it decides where memory comes from,
    never a value. Returns whether it was on (False where NumPy has no switch)."""
    _, switch = _madvise_switch()
    return bool(switch(bool(enabled))) if switch is not None else False


def sparse_row(config, coords, feats, shape, targets, counts, repeats, budget_gb, huge_pages=True,
               keep_memory=True, warmup_steps=1):
    """The sparse columns of one row, measured in this (fresh) process.

    The config's kernels are compiled on the first 512 voxels; then, with the model, AdamW and the
    input built and the memory budget set, the first step (at the most threads) gives the peak
    memory and begins the warm-up (``warm_up``), after which the RSS gives the memory held between
    steps; then ``repeats`` profiled steps per thread count, interleaved so that
    a change in the machine's load hits every count alike. Per count: the run with the median step
    time (its per-op table and remainder) and every run's step time.
    """
    import gc

    from sparseconv import SparseTensor
    from sparseconv.allocator import keep_freed_memory
    from measure import peak_rss_mb, reset_peak, rss_mb
    set_numpy_huge_pages(huge_pages)  # this process is the row's own
    kept = keep_freed_memory() if keep_memory else False  # as kidney train does
    warm, warm_opt = build_sparse(config)
    sparse_step(warm, warm_opt, SparseTensor(coords[:512], feats[:512], shape), targets[:512])
    del warm, warm_opt
    model, opt = build_sparse(config)
    x = SparseTensor(coords, feats, shape)
    gc.collect()
    limit_memory(budget_gb)
    runs = {n: [] for n in counts}
    try:
        with compute_threads(max(counts)):
            reset_peak()
            base = rss_mb()
            sparse_step(model, opt, x, targets)
            peak_mb = peak_rss_mb() - base
        warmed = warm_up(lambda: sparse_step(model, opt, SparseTensor(coords, feats, shape), targets),
                         counts, warmup_steps if kept else 1)
        held_mb = rss_mb() - base
        for _ in range(repeats):
            for n in counts:
                with compute_threads(n):
                    runs[n].append(timed_sparse_step(model, opt, coords, feats, shape, targets))
    except MemoryError:
        return dict(skipped=f"needs more than {budget_gb:.1f} GB", parameters=model.num_parameters())
    threads = {}
    for n, rs in runs.items():
        step_s, ops, faults = sorted(rs, key=lambda r: r[0])[(len(rs) - 1) // 2]
        threads[str(n)] = dict(step_s=step_s, ops=ops, remainder_s=step_s - sum(ops.values()),
                               runs_s=[r[0] for r in rs], faults=faults, runs_faults=[r[2] for r in rs])
    return dict(threads=threads, step_s=threads[str(max(counts))]["step_s"], peak_mb=peak_mb, held_mb=held_mb,
                warmup_steps=warmed,
                parameters=model.num_parameters(), kept_freed_memory=kept)


def torch_row(config, coords, feats, shape, targets, repeats, budget_gb, checkpoint=False):
    """The PyTorch twin's columns, measured in this (fresh) process: the first step gives the peak
    memory (and is the warm-up), then ``repeats`` timed steps, the median one reported.
    ``checkpoint``: the twin's blocks under activation checkpointing."""
    import torch
    from torch_twin import TorchTrainStep
    from measure import peak_rss_mb, reset_peak, rss_mb
    model, _ = build_sparse(config)
    step = TorchTrainStep(model, coords, feats, shape, targets, DS_WEIGHTS, checkpoint=checkpoint)
    limit_memory(budget_gb)
    try:
        reset_peak()
        base = rss_mb()
        step.step()
        peak_mb = peak_rss_mb() - base
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step.step()
            times.append(time.perf_counter() - t0)
    except (MemoryError, RuntimeError) as err:  # PyTorch's allocator raises RuntimeError("... not enough memory")
        if not isinstance(err, MemoryError) and "memory" not in str(err).lower():
            raise
        return dict(skipped=f"needs more than {budget_gb:.1f} GB")
    return dict(step_s=sorted(times)[(len(times) - 1) // 2], runs_s=times, peak_mb=peak_mb,
                threads=torch.get_num_threads(), torch=torch.__version__)


# Each row's measurements run in fresh subprocesses: peak memory is the step's own, and a step that
# needs more memory than the budget fails there without harming this process or the machine.
_CHILD = r"""
import sys, json, numpy as np
sys.path.insert(0, sys.argv[1])
import bench_train as T
d = np.load(sys.argv[3])
args = [sys.argv[4], d["coords"], d["feats"], tuple(int(s) for s in d["shape"]), d["targets"]]
extra = json.loads(sys.argv[5])
print(json.dumps(getattr(T, sys.argv[2])(*args, **extra)))
"""


def _child(fn_name, npz, config, **kwargs):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(HERE), fn_name, npz, config, json.dumps(kwargs)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark subprocess ({fn_name}, {config}) failed:\n{out.stderr[-3000:]}")
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
    p.add_argument("--inputs", default="stage1,stage2-median",
                   help="comma list of stage1, stage1@MM (the scan on an MM mm grid), stage2-median, stage2-p95")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=41,
                   help="at most this many untimed sparse steps before the timed ones (default 41): with freed "
                        "memory kept they run until the heap has settled (see Warm-up above), else one")
    p.add_argument("--twin-repeats", type=int, default=None,
                   help="timed steps of the PyTorch twin (default: --repeats; a dense step on a large grid "
                        "takes minutes)")
    p.add_argument("--threads", default="1,2", help="thread counts of the per-op table (default 1,2)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch dense twin even if installed")
    p.add_argument("--twin", default="plain",
                   help="comma list of how the PyTorch twin runs: plain (every activation kept, default), "
                        "checkpointed (its blocks under activation checkpointing, which fits larger grids "
                        "at the cost of recomputing their forward)")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="how much one step may grow a subprocess's address space (default: half of MemAvailable)")
    p.add_argument("--stats", default=str(STATS), help="KiTS23 statistics CSV (stage-2 crop boxes)")
    p.add_argument("--no-numpy-huge-pages", action="store_true",
                   help="the sparse step with NumPy's huge-page advice for large arrays off (it is on in "
                        "NumPy and in kidney train)")
    p.add_argument("--return-freed-memory", action="store_true",
                   help="the sparse step with the C library's allocator as it starts (large freed blocks go "
                        "back to the system); by default it keeps freed memory for the next steps, as kidney "
                        "train does (sparseconv.allocator)")
    p.add_argument("--quick", action="store_true", help="tiny inputs, tiny config, 1 repeat (smoke test)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_train.json"))
    args = p.parse_args(argv)
    twins = args.twin.split(",")
    if set(twins) - set(TWINS):
        p.error(f"--twin takes a comma list of {', '.join(TWINS)}, got {args.twin!r}")
    if args.quick:
        args.configs, args.inputs, args.repeats = "tiny", "stage1,stage2-median", 1
        args.warmup_steps = min(args.warmup_steps, 3)  # the first step and at most one round
    if args.warmup_steps < 1:
        p.error(f"--warmup-steps must be at least 1 (the step that measures peak memory), got {args.warmup_steps}")
    twin_repeats = args.twin_repeats or args.repeats

    import numba
    import sparseconv
    counts = thread_counts(args.threads.split(","))
    torch_note = None
    if args.no_torch:
        torch_note = "the PyTorch twin was not run (--no-torch)"
    elif not _has_torch():
        torch_note = "PyTorch is not installed: the dense-twin column is empty (pip install torch to fill it)"
    budget_gb = args.memory_gb or round(available_gb() / 2, 1)
    machine = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                   cpu_model=cpu_model(), cpus=os.cpu_count(), numba_max_threads=numba.config.NUMBA_NUM_THREADS, thread_counts=counts,
                   threads_asked=sorted({int(n) for n in args.threads.split(",")}), blas_threads=blas_threads(),
                   backend=sparseconv.get_backend().name, numpy=np.__version__, numba=numba.__version__,
                   load_avg_at_start=[round(v, 2) for v in os.getloadavg()],
                   mem_available_gb_at_start=round(available_gb(), 1))
    rates, machine["stream_array_mb"] = stream_rate(counts, 1 << 12 if args.quick else 1 << 21)
    machine["stream_gb_s"] = {str(n): round(r, 1) for n, r in rates.items()}
    print(f"machine: {machine}\nmemory budget of a step: {budget_gb} GB\n{torch_note or ''}", flush=True)
    inputs = make_inputs(args.inputs.split(","), quick=args.quick, stats_path=args.stats)
    results = dict(machine=machine, torch_note=torch_note, memory_budget_gb=budget_gb,
                   memory_budget_asked=args.memory_gb is not None, repeats=args.repeats,
                   warmup_steps=args.warmup_steps,
                   twin_repeats=twin_repeats, numpy_huge_pages=not args.no_numpy_huge_pages,
                   keep_freed_memory=not args.return_freed_memory, rows=[])
    with tempfile.TemporaryDirectory() as tmp:
        for name, (coords, feats, shape) in inputs.items():
            targets = make_targets(len(coords))
            npz = os.path.join(tmp, f"{name}.npz")
            np.savez(npz, coords=coords, feats=feats, shape=np.array(shape), targets=targets)
            print(f"\n== {name}: grid {shape}, {len(coords):,} active", flush=True)
            for config in args.configs.split(","):
                t0 = time.perf_counter()
                row = dict(input=name, config=config, grid=list(shape), grid_voxels=int(np.prod(shape)),
                           active=len(coords))
                row["sparse"] = _child("sparse_row", npz, config, counts=counts, repeats=args.repeats,
                                       budget_gb=budget_gb, huge_pages=not args.no_numpy_huge_pages,
                                       keep_memory=not args.return_freed_memory,
                                       warmup_steps=args.warmup_steps)
                for twin in twins if torch_note is None else ():
                    key = TWINS[twin]
                    row[key] = _child("torch_row", npz, config, repeats=twin_repeats, budget_gb=budget_gb,
                                      checkpoint=twin == "checkpointed")
                    if "step_s" in row[key] and "step_s" in row["sparse"]:
                        row[key + "_over_sparse"] = row[key]["step_s"] / row["sparse"]["step_s"]
                results["rows"].append(row)
                write_report(results, args.out, markdown(results), quiet=True)  # a partial report, row by row
                step = row["sparse"].get("step_s")
                print(f"   {config}: sparse step " + (f"{step:.2f} s" if step else row["sparse"]["skipped"])
                      + f" ({time.perf_counter() - t0:.0f} s for this row)", flush=True)
    write_report(results, args.out, markdown(results))
    return results


# --- report --------------------------------------------------------------------------------------------

def _fmt(v, f=".2f", none=""):
    return none if v is None else format(v, f)


def step_table(results):
    hi = max(results["machine"]["thread_counts"])
    # the plain twin's columns always (empty without PyTorch), the checkpointed twin's where it ran
    keys = ["torch"] + (["torch_checkpointed"] if any("torch_checkpointed" in r for r in results["rows"]) else [])
    names = {"torch": ("PyTorch twin", "twin"), "torch_checkpointed": ("checkpointed twin",) * 2}
    held = any("held_mb" in r["sparse"] for r in results["rows"])  # reports written before it: no column
    head = (f"| input | config | active | sparse step (s), {hi} thread{'s' * (hi > 1)} | "
            + "".join(f"{names[k][0]} step (s) | {names[k][1]} / sparse | " for k in keys)
            + "sparse peak MB | " + "sparse held MB | " * held + "".join(f"{names[k][1]} peak MB | " for k in keys))
    lines = [head.rstrip(), "|" + "---|" * (5 + held + 3 * len(keys))]
    for r in results["rows"]:
        sp = r["sparse"]
        cells, peaks = "", ""
        for k in keys:
            t = r.get(k) or {}
            twin = t.get("skipped") or f"{t['step_s']:.2f} ({t['threads']} threads)" if t else ""
            cells += f"{twin} | {_fmt(r.get(k + '_over_sparse'))} | "
            peaks += f"{_fmt(t.get('peak_mb'), '.0f')} | "
        lines.append(f"| {r['input']} | {r['config']} | {r['active']:,} | {sp.get('skipped') or _fmt(sp['step_s'])} | "
                     f"{cells}{_fmt(sp.get('peak_mb'), '.0f')} | "
                     + f"{_fmt(sp.get('held_mb'), '.0f')} | " * held + peaks.rstrip())
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


def runs_line(row):
    """Every timed step of a row in the order run, with its page faults (reports without them: times only)."""
    th = row["sparse"]["threads"]
    per = []
    for n in sorted(th, key=int):
        faults = th[n].get("runs_faults") or [None] * len(th[n]["runs_s"])
        per.append(f"{n} thread{'s' * (n != '1')}: " + ", ".join(
            f"{t:.2f}" + ("" if f is None else f" ({f:,})") for t, f in zip(th[n]["runs_s"], faults)))
    return "Every timed step (s), with the page faults it took: " + "; ".join(per) + "."


def _warmup_note(results):
    """The warm-up as run: the steps each row took (reports written before the option: one step)."""
    if "warmup_steps" not in results:
        return "a warm-up step"
    steps = [str(r["sparse"]["warmup_steps"]) for r in results["rows"] if "warmup_steps" in r["sparse"]]
    settle = (f"until a step at each thread count took fewer than {SETTLED_FAULTS} page faults, at most "
              f"{results['warmup_steps']} steps" if results.get("keep_freed_memory") else "one step")
    return f"a warm-up ({settle}; the rows took {', '.join(steps) or 'none'})"


def _freed_memory_note(results):
    """How the sparse step's process treated freed memory (reports written before the switch: returned)."""
    if not results.get("keep_freed_memory", False):
        return "freed memory returned to the system (the C library's default)"
    kept = [r["sparse"].get("kept_freed_memory") for r in results["rows"] if "threads" in r["sparse"]]
    if kept and not all(kept):
        return "freed memory kept for the next steps asked, but this C library has no such setting"
    return "freed memory kept in the process for the next steps (sparseconv.allocator)"


def markdown(results):
    m = results["machine"]
    parts = [f"Machine: {m['cpus']} CPUs ({m['processor']}), load average at start {m['load_avg_at_start']}, "
             f"backend {m['backend']}, thread counts {m['thread_counts']} (Numba and OpenBLAS)"
             f"{' (NUMBA_NUM_THREADS allows no more)' if m['thread_counts'] != m['threads_asked'] else ''}, "
             f"OpenBLAS threads at the start {m['blas_threads']}; "
             f"{results['repeats']} timed step(s) per thread count after {_warmup_note(results)}, "
             "the run with the median step time shown; NumPy's huge-page advice "
             f"{'on' if results.get('numpy_huge_pages', True) else 'off'} in the sparse step; "
             + _freed_memory_note(results)
             + (f"; the PyTorch twin: {results['twin_repeats']} timed step(s) after its first, the median shown"
                if results.get("twin_repeats", results["repeats"]) != results["repeats"] else "") + ".", ""]
    if "stream_gb_s" in m:  # reports written before it: no line
        rates = m["stream_gb_s"]
        lo, hi = min(rates, key=int), max(rates, key=int)
        parts += ["Memory streaming rate of the Numba backend's elementwise add "
                  f"(out = a + b, 3 × {m['stream_array_mb']:g} MB): "
                  + ", ".join(f"{r} GB/s on {n} thread{'s' * (n != '1')}" for n, r in rates.items())
                  + (f" ({rates[hi] / rates[lo]:.2f}× on {hi} threads)" if len(rates) > 1 else "") + ".", ""]
    budget = "as asked" if results.get("memory_budget_asked") else "half the memory available at the start"
    parts += [f"Each step ran in a fresh process whose address space it could grow by {results['memory_budget_gb']} GB "
              f"({budget}); a step that needed more is marked so.", ""]
    if results["torch_note"]:
        parts += [f"Note: {results['torch_note']}.", ""]
    parts += ["### Training step: sparse vs the PyTorch dense twin", "", step_table(results)]
    for r in results["rows"]:
        if "threads" in r["sparse"]:
            parts += ["", f"### Where the sparse step's time goes: {r['config']} on {r['input']} "
                          f"({r['active']:,} active of {r['grid_voxels']:,})", "", ops_table(r), "",
                      runs_line(r)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
