"""Setting a backend's thread count, for the thread-invariance check of the suite.

A backend's results must not depend on how many threads compute them: the same inputs at 1 thread
and at N threads give the same bits (the shipped Numba backend reduces fixed row chunks, never one
chunk per thread). To check that, something has to set the thread count:

* a backend that runs threads of its own (a C++/OpenMP extension, a thread pool) defines
  ``set_num_threads(n)`` — use ``n`` threads from now on, return the count used before — and
  ``max_num_threads`` (an int: the most ``set_num_threads`` accepts);
* any other backend is run on the thread pools of the process that can be set from here: Numba's
  (``numba.set_num_threads``, when Numba is imported; at most ``NUMBA_NUM_THREADS``) and the OpenBLAS
  that NumPy's matrix products run on (at most the number of CPUs, and at least 2). A backend
  written in Numba or NumPy needs no hook.

A backend whose results are documented to depend on the thread count sets ``thread_invariant =
False``; the check is then skipped and the report says "opted out".
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

OPTED_OUT = "opted out"
ONE_THREAD = "1 thread"
NO_CONTROL = "no control"


@dataclass
class Pool:
    """One thread count that can be set: its name, how to set it (returning the old count) and its maximum."""
    name: str
    set: Callable[[int], int]
    max: int


@dataclass
class ThreadControl:
    """How the suite sets a backend's thread count: ``counts`` is the pair compared, ``(1, N)``."""
    pools: list
    status: str = ""  # why the check does not run: OPTED_OUT, ONE_THREAD or NO_CONTROL; "" when it runs

    @property
    def counts(self) -> tuple:
        return (1, max([p.max for p in self.pools], default=1))

    @property
    def runs(self) -> bool:
        return not self.status

    def describe(self) -> str:
        if self.status == OPTED_OUT:
            return "opted out: the backend sets thread_invariant = False"
        if self.status == NO_CONTROL:
            return "no control: the backend has no set_num_threads, and no Numba or OpenBLAS thread pool was found"
        if self.status == ONE_THREAD:
            return f"1 thread: {', '.join(p.name for p in self.pools)} can run only 1 here"
        text = ", ".join(p.name for p in self.pools if p.max > 1)
        fixed = [f"{p.name} has 1 thread" for p in self.pools if p.max < 2]
        return f"1 and {self.counts[1]} threads ({'; '.join([text] + fixed)})"

    @contextlib.contextmanager
    def threads(self, n: int):
        """Every pool at ``min(n, its maximum)`` threads inside the block, as before after it."""
        before = [p.set(min(n, p.max)) for p in self.pools]
        try:
            yield
        finally:
            for p, old in zip(self.pools, before):
                p.set(old)


def control_for(backend) -> ThreadControl:
    """The :class:`ThreadControl` of ``backend`` (see the module docstring for the rules)."""
    if getattr(backend, "thread_invariant", True) is False:
        return ThreadControl([], OPTED_OUT)
    if callable(getattr(backend, "set_num_threads", None)):
        pools = [Pool(f"{backend.name}.set_num_threads", backend.set_num_threads, int(backend.max_num_threads))]
    else:
        pools = [p for p in (_numba_pool(), _openblas_pool()) if p is not None]
    control = ThreadControl(pools)
    if not pools:
        control.status = NO_CONTROL
    elif control.counts[1] < 2:
        control.status = ONE_THREAD
    return control


def _numba_pool():
    numba = sys.modules.get("numba")
    if numba is None:
        return None

    def set_threads(n):
        old = numba.get_num_threads()
        numba.set_num_threads(n)
        return old
    return Pool("Numba", set_threads, int(numba.config.NUMBA_NUM_THREADS))


_OPENBLAS_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                     ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                     ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                     ("openblas_set_num_threads", "openblas_get_num_threads"))


def _openblas_pool():
    """NumPy's OpenBLAS (the one a NumPy wheel bundles, or any OpenBLAS the process has loaded)."""
    lib = _openblas_library()
    if lib is None:
        return None
    setter, getter = lib

    def set_threads(n):
        old = int(getter())
        setter(int(n))
        return old
    return Pool("OpenBLAS", set_threads, max(2, os.cpu_count() or 1))


_OPENBLAS = []  # the (set, get) pair once found, or None


def _openblas_library():
    if not _OPENBLAS:
        _OPENBLAS.append(_find_openblas())
    return _OPENBLAS[0]


def _find_openblas():
    here = os.path.dirname(np.__file__)
    candidates = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*"))
    candidates += glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
    try:
        with open("/proc/self/maps") as maps:  # Linux: whatever OpenBLAS is loaded already
            candidates += sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_SYMBOLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None
