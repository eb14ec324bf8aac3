"""kidney.peak_memory: the peak RSS of a block, reset per block on Linux, an upper bound elsewhere."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kidney import peak_memory
from kidney.peak_memory import PeakRSS, peak_rss_mb, reset_peak, rss_mb

MB = 1024 * 1024


def _can_reset() -> bool:
    try:
        reset_peak()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset(), reason="needs Linux >= 4.0 (/proc/self/clear_refs)")
def test_each_block_sees_its_own_peak():
    with PeakRSS() as big:
        block = np.ones(200 * MB, np.uint8)  # written, so resident
        assert block[-1] == 1
        del block
    with PeakRSS() as small:
        np.ones(MB, np.uint8)
    # the 200 MB of the first block count there, and not in the second (the mark was reset)
    assert big.mb - rss_mb() > 150
    assert small.mb < big.mb - 150
    assert small.mb >= rss_mb() - 1


def test_without_proc_the_lifetime_peak_is_read(monkeypatch):
    monkeypatch.setattr(peak_memory, "_STATUS", Path("/nonexistent/status"))
    monkeypatch.setattr(peak_memory, "_CLEAR_REFS", Path("/nonexistent/clear_refs"))
    with pytest.raises(OSError):
        reset_peak()
    with pytest.raises(OSError):
        rss_mb()
    with PeakRSS() as mem:  # no reset possible: still a reading, the peak since the process started
        pass
    assert mem.mb == peak_rss_mb() > 10
