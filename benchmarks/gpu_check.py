"""Verify and time the CUDA backend on a real GPU, in one short run.

    python benchmarks/gpu_check.py                 # checks + timings on the 15 % CT-like set, C = 16/32/64
    python benchmarks/gpu_check.py --full          # also the 5 % set of 96×512×512
    python benchmarks/gpu_check.py --sanitize      # also compute-sanitizer memcheck + racecheck on a small case
    python benchmarks/gpu_check.py --small-case    # (what --sanitize runs under the sanitizer)
    python benchmarks/gpu_check.py --checks none --no-bench --train   # training steps only
    SPARSECONV_FAKE_CUPY=1 python benchmarks/gpu_check.py --tiny --checks quick   # dry run on a CPU

1. **Conformance**: every case of ``sparseconv.testing.suite`` (the list the tests run on every
   backend, the CPU emulation included) on the CuPy backend, through the same function: the
   convolution cases (every op × layout × geometry, through the kernel-map builders and
   ``sparseconv.functional``, float64 vs the dense twins, float32 vs the reference, repeats bitwise
   equal) with the case's arrays on the device, and the kernel-level checks; the kernel-level checks
   again with shrunk reduction chunks.
2. **Timings** on the CT-like active sets of ``benchmarks/ct_like.py``: kernel-map build
   (coordinate index + half neighbour table + mirror, M voxels/s), submanifold conv k=3 forward and
   backward (dX + dW) in fp32, ms and effective GFLOP/s = 2·pairs·Cin·Cout / t; the same on the Numba
   backend (CPU, the baseline), a cuBLAS gather-GEMM-scatter forward (CuPy matmul per offset: the
   alternative design, measured for the record) and, where PyTorch with CUDA is importable, dense
   ``torch.nn.functional.conv3d`` on the full grid. GPU results are compared with the CPU backend's.
3. **Training step** (``--train``): one step of ``kidney train`` (forward, deep-supervised soft
   Dice, backward, AdamW) of the configs in ``--train-configs`` on the inputs of
   ``benchmarks/bench_train.py`` (stage 1 and the stage-2 median crop), model and batch on the GPU,
   median of 5 after a warm-up step; the same step of the PyTorch dense twin on the GPU where
   PyTorch with CUDA is importable, and of the sparse network on the CPU backend for one config.
4. Prints one table and writes JSON to ``benchmarks/results/gpu_check_<card>_<date>.json``.

Without CuPy or a GPU it says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sparseconv  # noqa: E402
from sparseconv import kmap as KM  # noqa: E402
from sparseconv.device import to_device  # noqa: E402
from sparseconv.testing import suite  # noqa: E402
from sparseconv.testing.compare import relative_norm_error  # noqa: E402
from measure import median_time  # noqa: E402  (benchmarks/measure.py)


def load_gpu():
    if os.environ.get("SPARSECONV_FAKE_CUPY") == "1":  # dry run on a CPU: NumPy + the CUDA emulation
        from sparseconv.backends.cuda_emulation import fake_cupy
        fake_cupy.install()
    try:
        from sparseconv.backends import cupy_gpu
    except ImportError as err:
        print(f"gpu_check: the CUDA backend cannot run here: {err}", file=sys.stderr)
        sys.exit(2)
    return cupy_gpu


def cpu_backend():
    for name in ("numba", "reference"):
        try:
            return sparseconv.backends.load_backend(name)
        except ImportError:
            continue
    raise RuntimeError("no CPU backend")


# --- 1. conformance --------------------------------------------------------------------------------

def run_conformance(gpu_mod, quick=False):
    small = gpu_mod.CupyBackend()
    small.WGRAD_TARGET_BLOCKS, small.WGRAD_MIN_CHUNK_ROWS = 64, 16
    small.DW_WGRAD_TARGET_THREADS, small.DW_WGRAD_MIN_CHUNK_ROWS = 4096, 5
    small.SEGMENT_CHUNK_ROWS, small.MAX_BLOCKS_1D = 7, 3
    results = {"passed": 0, "failed": []}
    t0 = time.perf_counter()
    cases = suite.cases(quick=quick)
    runs = [("default", gpu_mod.backend, case) for case in cases]
    runs += [("small-chunks", small, case) for case in cases if isinstance(case, suite.KernelCase)]
    for label, be, case in runs:
        try:
            problems = suite.run_case(be, case).problems
        except Exception as err:  # noqa: BLE001 - report every failure, keep going
            problems = [f"{type(err).__name__}: {err}"]
        if problems:
            results["failed"].append(f"{label}/{case.label}: {'; '.join(problems)}")
        else:
            results["passed"] += 1
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


# --- 2. timings ------------------------------------------------------------------------------------

def synced(fn, synchronize):
    """``fn`` followed by ``synchronize()``: a timing of it includes the device work it queued."""
    def run():
        out = fn()
        synchronize()
        return out
    return run


def gpu_time(fn, repeat=5):
    """Median wall time (s) of ``fn()`` with the device synchronised after each call (one warm-up)."""
    import cupy
    return median_time(synced(fn, cupy.cuda.Device().synchronize), repeat)


def cpu_time(fn, repeat=1):
    """Median wall time (s) of ``fn()`` after one warm-up call (the Numba compile)."""
    return median_time(fn, repeat)


def build_map(be, keys, coords, shape):
    offsets = KM.centred_offsets(3)
    index = be.build_index(keys)
    lower = be.neighbor_table(index, coords, shape, offsets[:13])
    return be.mirror_table(lower, 27)


def gather_gemm_scatter(cupy, feats, weight, nbr):
    """The alternative design: per offset, gather rows, cuBLAS matmul, scatter-add (no atomics needed)."""
    out = cupy.zeros((nbr.shape[0], weight.shape[2]), dtype=feats.dtype)
    for k in range(nbr.shape[1]):
        rows = cupy.flatnonzero(nbr[:, k] >= 0)
        out[rows] += feats[nbr[rows, k]] @ weight[k]
    return out


def time_set(gpu_mod, set_name, shape, density, channels, cpu, cpu_channels, with_torch):
    import cupy
    from ct_like import ct_like_coords

    gpu = gpu_mod.backend
    rows = []
    t = time.perf_counter()
    coords = ct_like_coords(shape, density)
    print(f"  {set_name}: {len(coords):,} active voxels in {shape} (made in {time.perf_counter() - t:.1f} s)", flush=True)
    keys = sparseconv.coords.pack_keys(coords)
    n = len(coords)
    coords_d, keys_d = cupy.asarray(coords), cupy.asarray(keys)

    table_d = build_map(gpu, keys_d, coords_d, shape)
    t_map = gpu_time(lambda: build_map(gpu, keys_d, coords_d, shape))
    table = cupy.asnumpy(table_d)
    pairs = int((table >= 0).sum())
    row = dict(set=set_name, op="kernel map k3", backend="cupy", n=n, pairs=pairs, ms=t_map * 1e3,
               mvox_s=n / t_map / 1e6)
    t_cpu = cpu_time(lambda: build_map(cpu, keys, coords, shape))
    table_cpu = build_map(cpu, keys, coords, shape)
    row["equal_to_cpu"] = bool(np.array_equal(table, to_device(table_cpu, "cpu")))
    rows.append(row)
    rows.append(dict(set=set_name, op="kernel map k3", backend=cpu.name, n=n, pairs=pairs, ms=t_cpu * 1e3,
                     mvox_s=n / t_cpu / 1e6))

    kmap_d = KM.KernelMap(table_d, n, KM.centred_offsets(3), "submanifold", mirror_symmetric=True)
    kmap_h = KM.KernelMap(table, n, KM.centred_offsets(3), "submanifold", mirror_symmetric=True)
    rng = np.random.default_rng(0)
    for c in channels:
        flops = 2.0 * pairs * c * c
        f = rng.standard_normal((n, c)).astype(np.float32)
        w = (rng.standard_normal((27, c, c)) / np.sqrt(27 * c)).astype(np.float32)
        g = rng.standard_normal((n, c)).astype(np.float32)
        f_d, w_d, g_d = cupy.asarray(f), cupy.asarray(w), cupy.asarray(g)
        wt_d = cupy.ascontiguousarray(w_d.transpose(0, 2, 1))
        kt_d = kmap_d.transposed()

        def fwd():
            return gpu.conv_forward(f_d, w_d, kmap_d)

        def bwd():
            return gpu.conv_forward(g_d, wt_d, kt_d), gpu.conv_weight_grad(f_d, g_d, kmap_d)

        cupy.get_default_memory_pool().free_all_blocks()
        t_f, t_b = gpu_time(fwd), gpu_time(bwd)
        peak = cupy.get_default_memory_pool().total_bytes()
        r_f = dict(set=set_name, op="subm conv fwd", backend="cupy", C=c, pairs=pairs, ms=t_f * 1e3,
                   gflops=flops / t_f / 1e9, pool_mib=peak / 2**20)
        r_b = dict(set=set_name, op="subm conv bwd (dX+dW)", backend="cupy", C=c, pairs=pairs, ms=t_b * 1e3,
                   gflops=2 * flops / t_b / 1e9)
        r_f["deterministic"] = bool(cupy.array_equal(fwd(), fwd()))
        dx1, dw1 = bwd()
        dx2, dw2 = bwd()
        r_b["deterministic"] = bool(cupy.array_equal(dx1, dx2) and cupy.array_equal(dw1, dw2))
        nbr_d = kmap_d.neighbors
        t_g = gpu_time(lambda: gather_gemm_scatter(cupy, f_d, w_d, nbr_d))
        r_g = dict(set=set_name, op="subm conv fwd", backend="cupy gather-GEMM-scatter", C=c, pairs=pairs,
                   ms=t_g * 1e3, gflops=flops / t_g / 1e9, rel_err_vs_kernel=relative_norm_error(gather_gemm_scatter(cupy, f_d, w_d, nbr_d), fwd()))
        rows += [r_f, r_b, r_g]
        if c in cpu_channels:
            out_cpu = cpu.conv_forward(f, w, kmap_h)
            r_f["rel_err_vs_cpu"] = relative_norm_error(fwd(), out_cpu)
            dw_cpu = cpu.conv_weight_grad(f, g, kmap_h)
            r_b["rel_err_dW_vs_cpu"] = relative_norm_error(bwd()[1], dw_cpu)
            t_cf = cpu_time(lambda: cpu.conv_forward(f, w, kmap_h))
            wt = np.ascontiguousarray(w.transpose(0, 2, 1))
            kt = kmap_h.transposed()
            t_cb = cpu_time(lambda: (cpu.conv_forward(g, wt, kt), cpu.conv_weight_grad(f, g, kmap_h)))
            rows.append(dict(set=set_name, op="subm conv fwd", backend=cpu.name, C=c, pairs=pairs, ms=t_cf * 1e3,
                             gflops=flops / t_cf / 1e9))
            rows.append(dict(set=set_name, op="subm conv bwd (dX+dW)", backend=cpu.name, C=c, pairs=pairs,
                             ms=t_cb * 1e3, gflops=2 * flops / t_cb / 1e9))
        if with_torch:
            rows += torch_rows(set_name, shape, c)
        del f_d, w_d, g_d, wt_d
        cupy.get_default_memory_pool().free_all_blocks()
    return rows


def torch_available():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any import problem means "no torch here"
        return False


def torch_rows(set_name, shape, c):
    import torch

    rows = []
    try:
        x = torch.randn((1, c, *shape), device="cuda", dtype=torch.float32, requires_grad=True)
        w = torch.randn((c, c, 3, 3, 3), device="cuda", dtype=torch.float32, requires_grad=True)
        dense_flops = 2.0 * np.prod(shape) * 27 * c * c

        def tt(fn, repeat=5):
            return median_time(synced(fn, torch.cuda.synchronize), repeat)

        with torch.no_grad():
            t_f = tt(lambda: torch.nn.functional.conv3d(x, w, padding=1))
        y = torch.nn.functional.conv3d(x, w, padding=1)
        gy = torch.randn_like(y)
        t_b = tt(lambda: torch.autograd.grad(torch.nn.functional.conv3d(x, w, padding=1), (x, w), gy))
        tf32 = torch.backends.cudnn.allow_tf32
        rows.append(dict(set=set_name, op="subm conv fwd", backend=f"torch dense conv3d (cudnn, tf32={tf32})", C=c,
                         ms=t_f * 1e3, gflops_dense=dense_flops / t_f / 1e9))
        rows.append(dict(set=set_name, op="subm conv bwd (dX+dW)", backend=f"torch dense conv3d (fwd+bwd)", C=c,
                         ms=t_b * 1e3))
        del x, w, y, gy
        torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - e.g. out of memory on a small card
        rows.append(dict(set=set_name, op="torch dense conv3d", backend="torch", C=c, error=str(err)[:200]))
    return rows


# --- 2b. training step -----------------------------------------------------------------------------

def time_train_steps(configs, inputs, cpu, quick=False, repeat=5):
    """Rows of the training-step table: per input and config, the sparse step on the GPU (and on
    ``cpu`` for the first config), and the PyTorch dense twin's step on the GPU where it runs."""
    import cupy
    from bench_network import make_inputs
    from bench_train import DS_WEIGHTS, build_sparse, make_targets, sparse_step
    from sparseconv import SparseTensor

    rows = []
    data = make_inputs(inputs, quick=quick)
    for name in inputs:
        coords, feats, shape = data[name]
        targets = make_targets(len(coords))
        for i, config in enumerate(configs):
            with sparseconv.use_backend("cupy"):
                model, opt = build_sparse(config)  # parameters made on the device
                targets_d = cupy.asarray(targets)
                cupy.get_default_memory_pool().free_all_blocks()
                t = gpu_time(lambda: sparse_step(model, opt, SparseTensor(coords, feats, shape).to("cuda"),
                                                 targets_d), repeat)
                pool_mib = cupy.get_default_memory_pool().total_bytes() / 2**20
            rows.append(dict(set=name, op=f"training step, {config}", backend="cupy", n=len(coords), ms=t * 1e3,
                             pool_mib=pool_mib))
            if i == 0:
                with sparseconv.use_backend(cpu.name):
                    model_c, opt_c = build_sparse(config)
                    t_c = cpu_time(lambda: sparse_step(model_c, opt_c, SparseTensor(coords, feats, shape), targets))
                rows.append(dict(set=name, op=f"training step, {config}", backend=cpu.name, n=len(coords),
                                 ms=t_c * 1e3))
            if torch_available():
                rows.append(torch_train_row(model, name, config, coords, feats, shape, targets, DS_WEIGHTS, repeat))
            del model, opt
            cupy.get_default_memory_pool().free_all_blocks()
    return rows


def torch_train_row(model, name, config, coords, feats, shape, targets, ds_weights, repeat):
    """The PyTorch dense twin's training step on the GPU (``benchmarks/torch_twin.py``)."""
    import torch
    from torch_twin import TorchTrainStep

    row = dict(set=name, op=f"training step, {config}", backend="torch dense twin (cuda)")
    try:
        step = TorchTrainStep(model, coords, feats, shape, targets, ds_weights, device="cuda")
        t = median_time(synced(step.step, torch.cuda.synchronize), repeat)
        row.update(ms=t * 1e3, tf32=torch.backends.cudnn.allow_tf32)
        del step
        torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: say so in the row
        row["error"] = str(err)[:200]
    return row


# --- 3. sanitizer ----------------------------------------------------------------------------------

# Every kernel once, on small inputs: the cases of the suite that the sanitizer runs.
SMALL_CASE = ("hash_n300", "neighbor_table_b2_odd_k3_d1", "transpose_table_b2_odd", "down_table_b2_odd_k3s2p1") + tuple(
    f"{name}_{dtype}" for dtype in ("float32", "float64")
    for name in ("conv_b2_odd_subm_k3_d1_33x17", "conv_b2_odd_down_k2s2_3x5", "depthwise_b2_odd_subm_k3_d1_c7",
                 "segment_sum_n3000_s7_c5", "pointwise_n5000_c32", "zero_rows"))


def small_case(gpu_mod):
    """Every kernel once on a small input (what the sanitizer runs)."""
    be = gpu_mod.CupyBackend()
    be.WGRAD_TARGET_BLOCKS, be.WGRAD_MIN_CHUNK_ROWS = 64, 16
    be.DW_WGRAD_TARGET_THREADS, be.SEGMENT_CHUNK_ROWS = 4096, 7
    cases = [case for case in suite.cases() if case.name in SMALL_CASE]
    assert len(cases) == len(SMALL_CASE), "a case of SMALL_CASE is no longer in the suite"
    for case in cases:
        result = suite.run_case(be, case)
        assert result.passed, f"{case.label}: {'; '.join(result.problems)}"
    print("small case: all kernels ran and matched the reference")


def run_sanitizer():
    tool = shutil.which("compute-sanitizer") or next(
        (str(p) for p in Path("/usr/local").glob("cuda*/bin/compute-sanitizer") if p.exists()), None)
    if tool is None:
        return {"error": "compute-sanitizer not found"}
    out = {}
    for name in ("memcheck", "racecheck", "synccheck", "initcheck"):
        cmd = [tool, "--tool", name, "--error-exitcode", "3", sys.executable, __file__, "--small-case"]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            out[name] = {"exit": "timeout after 300 s"}
            print(f"  compute-sanitizer {name}: timed out", flush=True)
            continue
        summary = re.findall(r"(?:ERROR|RACECHECK) SUMMARY:.*", proc.stdout + proc.stderr)
        out[name] = {"exit": proc.returncode, "summary": summary[-2:] or (proc.stdout + proc.stderr)[-600:],
                     "seconds": round(time.perf_counter() - t, 1)}
        print(f"  compute-sanitizer {name}: exit {proc.returncode} {summary[-1] if summary else ''}", flush=True)
    return out


# --- main ------------------------------------------------------------------------------------------

def check_nccl():
    """The NCCL communicator of ``kidney train --distributed`` on this GPU, as one rank (MPI singleton):
    the unique id over MPI, a device all-reduce of float32 and float64 buffers (a sum over one rank
    is the input, bit for bit) and a broadcast. Needs ``pip install -e ".[mpi]"``; more ranks need a
    GPU each (``mpiexec -n P python benchmarks/gpu_check.py --nccl-only``)."""
    from kidney.distributed import NCCLCommunicator, nccl_unavailable

    reason = nccl_unavailable()
    if reason:
        return {"ok": None, "skipped": reason}
    import cupy

    t = time.perf_counter()
    comm = NCCLCommunicator(timeout=120)
    arrays = [cupy.arange(1000, dtype=cupy.float32) * (comm.rank + 1), cupy.ones((3, 4), cupy.float64)]
    want = [sum((r + 1) for r in range(comm.size)) * cupy.arange(1000, dtype=cupy.float32),
            comm.size * cupy.ones((3, 4), cupy.float64)]
    comm.allreduce_sum_(arrays)
    ok = all(bool((a == w).all()) for a, w in zip(arrays, want)) and comm.broadcast("id") == "id"
    return {"ok": ok, "ranks": comm.size, "seconds": round(time.perf_counter() - t, 3)}


def fmt_table(rows, cols=("set", "op", "backend", "C", "ms", "gflops", "mvox_s", "equal_to_cpu", "rel_err_vs_cpu",
                           "rel_err_dW_vs_cpu", "deterministic")):
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="also the 96×512×512 5 %% set")
    ap.add_argument("--channels", default="16,32,64")
    ap.add_argument("--cpu-channels", default="32", help="channel counts also timed on the CPU backend")
    ap.add_argument("--checks", choices=("full", "quick", "none"), default="full", help="conformance cases to run")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--nccl-only", action="store_true", help="only the NCCL communicator check")
    ap.add_argument("--train", action="store_true", help="also time kidney training steps (section 3)")
    ap.add_argument("--train-configs", default="compact,paper")
    ap.add_argument("--train-inputs", default="stage1,stage2-median")
    ap.add_argument("--sanitize", action="store_true", help="run compute-sanitizer tools on --small-case")
    ap.add_argument("--small-case", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true",
                    help="dry run of this script on a small CT-like grid (with fake_cupy on a CPU, for instance)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.nccl_only:
        res = check_nccl()
        print(f"NCCL communicator: {res}")
        return 0 if res["ok"] is not False else 1

    gpu_mod = load_gpu()
    if args.small_case:
        small_case(gpu_mod)
        return 0
    import cupy

    device = gpu_mod.CupyBackend.device_name()
    report = {"device": device, "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
              "driver": cupy.cuda.runtime.driverGetVersion(), "python": platform.python_version(),
              "host": platform.node(), "cpu_count": os.cpu_count(), "command": " ".join(sys.argv)}
    print(f"gpu_check on {device} (CuPy {cupy.__version__})", flush=True)

    t = time.perf_counter()
    # Compile once, timed separately: CuPy compiles a RawModule at its first get_function, not in
    # the constructor.
    gpu_mod.backend.module.get_function("sc_hash_insert")
    report["nvrtc_compile_s"] = round(time.perf_counter() - t, 2)
    conf = {"passed": 0, "failed": [], "skipped": True}
    if args.checks != "none":
        print("1. conformance ...", flush=True)
        report["conformance"] = conf = run_conformance(gpu_mod, quick=args.checks == "quick")
        print(f"   {conf['passed']} passed, {len(conf['failed'])} failed ({conf['seconds']} s)")
        for line in conf["failed"][:20]:
            print("   FAIL", line[:300])

    print("1b. NCCL communicator ...", flush=True)
    try:
        report["nccl"] = check_nccl()
    except Exception:  # noqa: BLE001 - report it, keep the rest of the check
        report["nccl"] = {"ok": False, "error": traceback.format_exc()[-800:]}
    print(f"   {report['nccl']}")

    rows = []
    if not args.no_bench:
        from ct_like import CT_LIKE_SETS

        cpu = cpu_backend()
        channels = [int(c) for c in args.channels.split(",")]
        cpu_channels = [int(c) for c in args.cpu_channels.split(",") if c]
        with_torch = torch_available()
        print(f"2. timings (CPU baseline: {cpu.name}; torch dense: {with_torch}) ...", flush=True)
        sets = [("tiny", (10, 24, 24), 0.15)] if args.tiny else CT_LIKE_SETS[: 2 if args.full else 1]
        for set_name, shape, density in sets:
            try:
                rows += time_set(gpu_mod, set_name, shape, density, channels, cpu, cpu_channels, with_torch)
            except Exception:  # noqa: BLE001 - keep what was measured
                rows.append(dict(set=set_name, error=traceback.format_exc()[-800:]))
        print(fmt_table(rows))
    report["timings"] = rows
    if args.train:
        configs = ["tiny"] if args.tiny else args.train_configs.split(",")
        print(f"3. training steps ({', '.join(configs)}) ...", flush=True)
        try:
            report["train_steps"] = train_rows = time_train_steps(configs, args.train_inputs.split(","),
                                                                  cpu_backend(), quick=args.tiny)
        except Exception:  # noqa: BLE001 - keep what was measured
            report["train_steps"] = train_rows = [dict(error=traceback.format_exc()[-800:])]
        print(fmt_table(train_rows, ["set", "op", "backend", "n", "ms", "pool_mib", "error"]))
    if args.sanitize:
        print("4. compute-sanitizer ...", flush=True)
        report["sanitizer"] = run_sanitizer()

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    card = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    path = out_dir / f"gpu_check_{card}_{_dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")
    ok = not conf["failed"] and report["nccl"].get("ok") is not False and all(v.get("exit") == 0 for v in report.get("sanitizer", {}).values()
                                    if isinstance(v, dict) and "exit" in v)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
