"""Where a Numba kernel's output array comes from: allocated inside the kernel, or by NumPy outside.

    python benchmarks/bench_alloc.py                      # (1,094,272, 64) float32, 1 and 2 threads
    python benchmarks/bench_alloc.py --rows 200000 --channels 16 --repeats 3

The same parallel fill kernel writes every element of a fresh ``(rows, channels)`` float32 array
three ways: an array it allocates itself (``np.empty`` inside Numba: ``malloc``, 4 KiB pages), an
array NumPy allocated just before the call (NumPy asks Linux for huge pages for large arrays), and
the same NumPy array written a second time (no page to fault in: the fill alone). Each figure is
the median of ``--repeats`` calls after a warm-up, a fresh array per call for the first two. The
Numba backend allocates its kernels' outputs with NumPy for this reason
(``sparseconv/backends/numba_cpu.py``). The default size is the stage-2 median crop's active voxels
at four times 16 channels (a ConvNeXt block's expanded width at level 0).

Writes ``benchmarks/results/bench_alloc.{json,md}``.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numba as nb
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import cpu_model, median_time, write_report  # noqa: E402


@nb.njit(parallel=True)
def _fill(out):
    for i in nb.prange(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = 1.0
    return out


@nb.njit(parallel=True)
def _allocate_and_fill(rows, channels):
    return _fill(np.empty((rows, channels), dtype=np.float32))


def measure(rows: int, channels: int, threads, repeats: int) -> dict:
    """``{threads: {way: seconds}}`` for the three ways of the module docstring."""
    out = {}
    reused = np.empty((rows, channels), np.float32)
    for n in threads:
        nb.set_num_threads(n)
        out[n] = {
            "allocated inside Numba": median_time(lambda: _allocate_and_fill(rows, channels), repeats),
            "allocated by NumPy": median_time(lambda: _fill(np.empty((rows, channels), np.float32)), repeats),
            "written again (no allocation)": median_time(lambda: _fill(reused), repeats),
        }
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_094_272)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--threads", default="1,2", help="thread counts (those above NUMBA_NUM_THREADS dropped)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(HERE / "results" / "bench_alloc.json"))
    args = p.parse_args(argv)
    threads = [n for n in (int(t) for t in args.threads.split(",")) if 1 <= n <= nb.config.NUMBA_NUM_THREADS]
    seconds = measure(args.rows, args.channels, threads, args.repeats)
    mb = args.rows * args.channels * 4 / 2**20
    lines = [f"A ({args.rows:,}, {args.channels}) float32 array ({mb:.0f} MiB) filled by one parallel Numba "
             f"kernel; median of {args.repeats} calls (ms). {cpu_model()} ({platform.machine()}), numba {nb.__version__}, "
             f"numpy {np.__version__}.", "",
             "| threads | " + " | ".join(next(iter(seconds.values()))) + " |",
             "|---|---|---|---|"]
    for n, ways in seconds.items():
        lines.append(f"| {n} | " + " | ".join(f"{1e3 * s:.1f}" for s in ways.values()) + " |")
    results = {"rows": args.rows, "channels": args.channels, "repeats": args.repeats, "cpu_model": cpu_model(),
               "seconds": {str(n): ways for n, ways in seconds.items()}}
    write_report(results, args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
