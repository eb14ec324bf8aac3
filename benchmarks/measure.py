"""Measurement helpers of the benchmarks: median wall time, peak memory (Linux /proc), the report files."""
import json
import time
from pathlib import Path

import numpy as np


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call (JIT, caches, page faults)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB → MB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak` (or process start)."""
    return _status_mb("VmHWM")


def write_report(results: dict, out, markdown_text: str) -> None:
    """Write ``results`` as JSON to ``out`` and the table beside it (``.md``), then print both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown_text)
    print("\n" + markdown_text + f"\nwrote {out}, {out.with_suffix('.md')}")
