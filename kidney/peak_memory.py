"""Peak resident memory (RSS) of this process, in MB, measurable per block of code.

Linux keeps a high-water mark of each process's resident set (``VmHWM`` in ``/proc/self/status``)
and, from kernel 4.0, lets the process reset it to the current RSS (``/proc/self/clear_refs``). So
the peak of one step is: reset, run the step, read the mark::

    with PeakRSS() as mem:
        labels = segmenter.segment(image)
    print(mem.mb)

Elsewhere (macOS, no ``/proc``) the reading falls back to ``getrusage``'s peak since the process
started, which no reset lowers: an upper bound of the step's peak.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["PeakRSS", "reset_peak", "rss_mb", "peak_rss_mb"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; ``OSError`` where the kernel
    cannot (not Linux, or Linux < 4.0)."""
    _CLEAR_REFS.write_text("5")


def _status_mb(field: str) -> float:
    """A ``kB`` line of ``/proc/self/status`` in MB; ``OSError`` without ``/proc``."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise OSError(f"{_STATUS} has no {field}")


def rss_mb() -> float:
    """Current RSS in MB (``VmRSS``; Linux only, else ``OSError``)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS in MB since the last :func:`reset_peak`, or since the process started."""
    try:
        return _status_mb("VmHWM")
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, kB on Linux
        return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


class PeakRSS:
    """Context manager: ``mb`` is the peak RSS (MB) of the block (see the module docstring)."""

    mb: float

    def __enter__(self) -> "PeakRSS":
        try:
            reset_peak()
        except OSError:
            pass  # the reading is then the process's peak so far: an upper bound of the block's
        return self

    def __exit__(self, *exc) -> None:
        self.mb = peak_rss_mb()
