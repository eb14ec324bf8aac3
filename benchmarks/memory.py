"""Peak-memory measurement for the benchmark subprocesses (Linux /proc)."""


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
