"""sparseconv.allocator: freed memory stays in the process, so writing a freed array's size again
faults in no fresh pages. Each case runs in its own process: the setting is for the process's life."""
import platform
import subprocess
import sys

import pytest

from sparseconv.allocator import _mallopt

# Allocate and write a 256 MiB array, free it, then count the page faults of doing it again.
# NumPy's huge-page advice is off here so that a fresh page is a 4 KiB fault (65,536 of them).
PROBE = """
import resource, sys
import numpy as np
try:
    from numpy._core import multiarray as ma
except ImportError:
    from numpy.core import multiarray as ma
getattr(ma, "_set_madvise_hugepage", lambda on: None)(False)
from sparseconv.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**26, np.float32); del a
before = faults()
b = np.ones(2**26, np.float32)
print(kept, faults() - before, float(b.sum()))
"""


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True).stdout
    kept, faults, total = out.split()
    assert float(total) == 2**26  # the second array holds what was written, in either mode
    return kept, int(faults)


@pytest.mark.skipif(_mallopt() is None, reason="glibc only: this C library has no mallopt")
def test_kept_memory_is_reused_without_page_faults_and_the_default_faults_it_in_again():
    kept, faults_kept = _probe("keep")
    assert kept == "True" and faults_kept < 1_000
    _, faults_default = _probe("default")
    assert faults_default > 60_000  # 256 MiB of fresh 4 KiB pages


def test_keep_freed_memory_answers_whether_the_c_library_took_it():
    out = subprocess.run([sys.executable, "-c", "from sparseconv.allocator import keep_freed_memory;"
                          "print(keep_freed_memory())"], check=True, capture_output=True, text=True).stdout
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out.split() == ["True"] if glibc else out.split() == ["False"]
