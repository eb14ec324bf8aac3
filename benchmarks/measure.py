"""Measurement helpers of the benchmarks: median wall time, peak memory (Linux /proc, from
:mod:`kidney.peak_memory`), the CPU's name, the report files."""
import json
import platform
import time
from pathlib import Path

import numpy as np

# The segmenter's own peak-memory probe. Its reset_peak raises where the kernel cannot reset the
# peak, which a benchmark wants: its figure would otherwise include everything that ran before.
from kidney.peak_memory import PeakRSS, peak_rss_mb, reset_peak, rss_mb  # noqa: F401  (re-exported)


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call (JIT, caches, page faults)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cpu_model() -> str:
    """The CPU's name as the operating system gives it (Linux: ``model name`` of /proc/cpuinfo), for
    the report: two machines of one architecture can differ several-fold in a benchmark's times."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(results: dict, out, markdown_text: str, quiet: bool = False) -> None:
    """Write ``results`` as JSON to ``out`` and the table beside it (``.md``), then print both (unless
    ``quiet``: a partial report written while the run goes on)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown_text)
    if not quiet:
        print("\n" + markdown_text + f"\nwrote {out}, {out.with_suffix('.md')}")
