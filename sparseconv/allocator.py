"""Keep the memory a process frees for its own next allocations (glibc's ``malloc``).

A sparse training step allocates and frees gigabytes of short-lived arrays: activations,
gradients, kernel outputs of ``(N, C)`` float32 for every layer. glibc gives each large block
(above its mmap threshold, 128 KiB rising to at most 32 MiB) its own ``mmap`` and returns it to
the kernel on ``free``, and trims the top of its heap as soon as 128 KiB lie free there. So every
step writes into *fresh* pages: each first write is a page fault in the kernel that makes it — and
where NumPy advises huge pages, a 2 MiB page to zero and perhaps to assemble first. Those faults
are a large part of a step's time on a small machine, and they scatter it from one step to the next
(``benchmarks/bench_train.py`` reports every timed step with its page faults).

:func:`keep_freed_memory` asks glibc to serve every block from its heap (``M_MMAP_MAX = 0``) and
never to trim it (``M_TRIM_THRESHOLD`` -1): the heap grows over the first steps until a step's
arrays fit in the free space it already holds, and from then on steps reuse pages that are mapped.
The price is memory: the process keeps all it has grown to until it exits, and because the heap
fragments that can be well above one step's peak — ``benchmarks/bench_train.py`` repeating the
stage-2 median step held 7.5 GB after 23 steps whose peak was 3.4 GB (0.6 GB returned); in the
README's 150 training crops of varied sizes the maximum resident size was the same either way. So
it is meant for a process that runs one workload for long — a training run (``kidney train`` calls
it) or a benchmark — on a machine with room to spare, not for a long-lived server whose memory use
rises and falls. It changes where memory comes from, never a value: every result is bit for bit the
same (README: the 150 crops on two threads took 18 % less time kept than returned, with the same
weights).

Only glibc (Linux) has these settings; elsewhere the function does nothing and says so.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# A trim threshold of -1 turns trimming off altogether (mallopt(3)); the largest positive one a C int
# holds, 2 GiB, is less than a stage-2 step frees at once, so the heap's top would still be trimmed.
NEVER = -1


def _mallopt():
    """glibc's ``mallopt(int, int) -> int`` from the running process, or ``None`` where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """From now on, keep freed memory in this process for its next allocations (see the module).

    Returns True where the C library took both settings (glibc), False where it has no such
    settings (another C library or operating system: nothing changes there).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # mallopt answers 1 on success; musl's stub answers 0 and changes nothing.
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER) == 1
