"""The worker side of a Dask cohort run (:mod:`kidney.cohort`): imported only where Dask runs.

* :class:`CohortSetup`, a worker plugin: on every worker process that joins (restarted ones too) it
  loads the model once into this process's cache, and on a LocalCluster it leaves Ctrl-C to the
  driver (which closes the cluster in order) instead of killing the workers mid-write.
* :func:`segment_task`, one case: paths in, a manifest row out. It announces each attempt on the
  run's event topic (so the driver can say which cases were retried, and why), uses the cached model,
  and runs a watchdog: past the per-case timeout it kills its own process, which Dask counts as a
  worker death (retried on another worker until the scheduler's ``allowed-failures``, then
  ``KilledWorker``). A corrupt input is returned as a failed row; any other error is raised, for
  Dask's ``retries``.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Dict, Tuple

from distributed import WorkerPlugin, get_worker

from .cohort import CASE_ERRORS, Case, Weights, _case_row, _reason, segment_case, run_test_hook

_CACHE: Dict[tuple, object] = {}
_LOADS: Dict[tuple, int] = {}
_LOCK = threading.Lock()


def _key(weights: Weights) -> tuple:
    stats = tuple((os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in weights.files())
    return (weights, stats)


def cached_segmenter(weights: Weights) -> Tuple[object, int]:
    """``(segmenter, loads)``: this process's model for ``weights`` (loaded on first use), and how
    often this process has loaded it (1, unless the files changed)."""
    key = _key(weights)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = weights.load()
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _CACHE[key], _LOADS[key]


def _set_threads(threads: int) -> None:
    """Numba's threads for the calling thread (the setting is per thread); BLAS's come from the
    worker's environment (OPENBLAS_NUM_THREADS etc., set by the driver for a LocalCluster)."""
    import numba

    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


class CohortSetup(WorkerPlugin):
    def __init__(self, weights: Weights, threads: int = 1, ignore_sigint: bool = False):
        self.weights = weights
        self.threads = threads
        self.ignore_sigint = ignore_sigint

    def setup(self, worker) -> None:
        if self.ignore_sigint and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        cached_segmenter(self.weights)


def _event(worker, topic: str, case_id: str, event: str, **extra) -> None:
    worker.log_event(topic, {"case": case_id, "event": event, "worker": worker.address,
                             "pid": os.getpid(), **extra})


def _timed_out(worker, topic: str, case_id: str, seconds: float) -> None:
    _event(worker, topic, case_id, "timeout", reason=f"timed out after {seconds:g} s")
    time.sleep(1.0)  # let the event leave before the process goes
    os.kill(os.getpid(), signal.SIGKILL)


def segment_task(case: Case, weights: Weights, opts: dict) -> dict:
    """Segment one case on a Dask worker; its manifest row."""
    topic = opts["topic"]
    worker = get_worker()  # in the task's thread: the watchdog's thread has no worker of its own
    _event(worker, topic, case.case_id, "start")
    segmenter, loads = cached_segmenter(weights)
    _set_threads(opts["threads"])
    watchdog = None
    if opts.get("timeout"):
        watchdog = threading.Timer(float(opts["timeout"]), _timed_out, (worker, topic, case.case_id, float(opts["timeout"])))
        watchdog.daemon = True
        watchdog.start()
    t0 = time.perf_counter()
    try:
        fields = segment_case(case, segmenter, overwrite=opts["overwrite"], hook=lambda: run_test_hook(case.case_id))
        row = _case_row(case, "done", opts["model"], **fields)
    except CASE_ERRORS as exc:  # the case itself is bad: failed now, not retried
        row = _case_row(case, "failed", opts["model"], error=_reason(exc), seconds=round(time.perf_counter() - t0, 3))
    except Exception as exc:
        _event(worker, topic, case.case_id, "error", reason=_reason(exc))
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
    row.update(worker=worker.address, host=socket.gethostname(), pid=os.getpid(), model_loads=loads)
    return row
