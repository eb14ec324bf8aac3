"""Segment a cohort: a folder of scans into a folder of label maps — resumable, one bad case never
stops the run, no input ever touched; in this process, or on a Dask cluster.

    kidney segment -i SCANS -o PREDS                          # this process, case after case
    kidney segment -i SCANS -o PREDS --continue               # finish an earlier or interrupted run
    kidney segment -i SCANS -o PREDS --num-parts 8 --part-id 3   # one shard (job arrays)
    kidney segment -i SCANS -o PREDS --workers 4              # a Dask LocalCluster: 4 worker processes
    kidney segment -i SCANS -o PREDS --scheduler tcp://HOST:8786  # a running Dask cluster

What a run guarantees (both engines):

* **A manifest** ``PREDS/manifest.jsonl`` (``manifest.part<i>-of-<K>.jsonl`` for a shard), one JSON
  object a line, appended and flushed as each case ends: ``case``, ``status`` (``done``, ``failed``
  or ``skipped``), ``input`` with its size and modification time (``input_bytes``,
  ``input_mtime_ns``), ``output``, ``seconds`` (read + segment + write), ``peak_mb`` (the process's
  peak resident memory during the case), ``n_rois``, ``attempts`` and ``retried`` (with Dask: how
  many times the case started, and why earlier attempts ended), ``error`` (a failed case's reason),
  ``model`` (a fingerprint of the weights and settings), ``worker``, ``time``. Lines with a ``run``
  key record the run itself: ``started``, ``finished`` or ``interrupted``, with counts.
  :func:`read_manifest` gives the latest row of each case.
* **Failure isolation**: an unreadable or corrupt scan is recorded as failed with its reason and the
  run goes on; :attr:`Summary.exit_code` is 1 when any case failed.
* **No partial output**: each label map is written to a hidden temporary file in the output folder
  and renamed into place (:func:`kidney.io.save_array`), with the mode the umask gives. Temporary
  files of a killed run are removed when the same cases run again.
* **No input is ever overwritten**: an output that is (or links to) an input, or two inputs that
  would write the same output, stop the run before any work, naming both paths.
* **Resuming** (``resume=True``, ``--continue``): a case is skipped when its output exists, its
  latest manifest row says done, its input has the size and modification time recorded there, and
  the weights and settings are the same; every other case is segmented (again).
* **Shards** (``num_parts=K, part_id=i``): the cases sorted by id, every K-th from the i-th — the
  same list in every job of an array, the K shards disjoint and together the whole folder.
* **Ctrl-C** (or SIGTERM, as a batch system sends at its time limit): finished cases stay finished,
  the manifest records the run as interrupted, ``--continue`` finishes the rest.

The Dask engine (``workers=N`` or ``scheduler=...``; ``pip install sparseconv[cluster]``) submits
one task per case that carries only paths: each worker reads its scan from, and writes its labels to,
storage all workers share; no volume passes through the scheduler. Each worker process loads the
model once (:mod:`kidney.dask_worker`) and runs one case at a time with ``threads_per_worker``
Numba and BLAS threads. Retries are Dask's: ``retries`` re-runs a case whose task raised an
unexpected error (an I/O error of a shared file system, say) — a corrupt scan is a failed case at
once —, and the scheduler's ``allowed-failures`` (set to the same number for a LocalCluster) bounds
how often a case may take its worker down (out of memory, SIGKILL, or its ``timeout``) before Dask
gives it up as a ``KilledWorker``: the case is failed, the run goes on. Results are bitwise those of
the serial run: the same code on the same deterministic CPU kernels.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import io
from .peak_memory import PeakRSS

__all__ = ["Case", "Weights", "Summary", "Manifest", "InputOverwriteError", "CaseTimeout", "plan",
           "select_part", "check_outputs", "read_manifest", "read_runs", "segment_case", "segment_cohort",
           "MANIFEST", "TEST_HOOK_ENV"]

MANIFEST = "manifest.jsonl"
#: Test hook (used by the test suite only): a folder; when it holds a file named after a case, that
#: case's task, after reading its scan, kills its own process (file content ``once``: the first
#: attempt only, the file is removed; ``always``: every attempt) or hangs (``hang``; it first
#: creates ``<case>.hanging`` there).
TEST_HOOK_ENV = "KIDNEY_COHORT_TEST_HOOK"
#: Exceptions that say a case itself is bad (retrying would fail again): failed at once, no retry.
CASE_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, EOFError)


class InputOverwriteError(ValueError):
    """An output path is an input (or two inputs would write one output)."""


class CaseTimeout(Exception):
    """A case ran longer than the per-case timeout."""


# --- what to do -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One scan to segment: its id, its input file and its output file (absolute paths)."""

    case_id: str
    input: str
    output: str


@dataclass(frozen=True)
class Weights:
    """What a worker needs to build the :class:`~kidney.pipeline.Segmenter` (paths, not models, so
    it travels to workers as a few bytes)."""

    stage1: Union[str, Tuple[str, ...]]  # a file, or the files of an ensemble
    stage2: Union[str, Tuple[str, ...]]
    tta: bool = False
    device: str = "cpu"
    backend: Optional[str] = None  # sparseconv backend name; None: the process's default
    keep_components: Union[int, str, None] = None  # None: the stage-2 weights' own setting
    roi_threshold: Optional[float] = None  # None: the stage-1 weights' own ROI rule
    roi_dilation: Optional[int] = None
    blur_tta: Optional[Tuple[float, ...]] = None  # None: the stage-2 weights' own setting

    @classmethod
    def from_dir(cls, weights_dir=None, stage1=None, stage2=None, **kw) -> "Weights":
        from .pipeline import default_weights

        d1, d2 = default_weights(weights_dir)
        return cls(_absolute(stage1 or d1), _absolute(stage2 or d2), **kw)

    def files(self) -> List[str]:
        """Every weights file, stage 1's first."""
        return [p for w in (self.stage1, self.stage2) for p in ((w,) if isinstance(w, str) else w)]

    def load(self):
        from .pipeline import Segmenter

        if self.backend is not None:
            import sparseconv

            if sparseconv.get_backend().name != self.backend:
                sparseconv.set_backend(self.backend)
        return Segmenter(self.stage1, self.stage2, tta=self.tta, device=self.device,
                         keep_components=self.keep_components, roi_threshold=self.roi_threshold,
                         roi_dilation=self.roi_dilation, blur_tta=self.blur_tta)

    def roi_overrides(self) -> dict:
        """The ROI rule's settings this run overrides (``roi_threshold`` / ``roi_dilation``)."""
        from .roi import roi_overrides

        return roi_overrides(self.roi_threshold, self.roi_dilation)

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over both weights files and the settings that change labels."""
        h = hashlib.sha256()
        for path in self.files():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        if not (isinstance(self.stage1, str) and isinstance(self.stage2, str)):  # which file is whose
            h.update(f"members={[1 if isinstance(w, str) else len(w) for w in (self.stage1, self.stage2)]}".encode())
        h.update(f"tta={self.tta}".encode())
        if self.keep_components is not None:  # an override of the setting inside the stage-2 file
            h.update(f"keep_components={self.keep_components}".encode())
        for key, value in self.roi_overrides().items():  # and of the ROI rule inside the stage-1 file
            h.update(f"{key}={value}".encode())
        if self.blur_tta is not None:  # and of the test-time blur inside the stage-2 file
            h.update(f"blur_tta={list(self.blur_tta)}".encode())
        return h.hexdigest()[:16]


def _absolute(weights) -> Union[str, Tuple[str, ...]]:
    """A weights file as an absolute path; several (an ensemble) as a tuple of them (one: the path)."""
    if isinstance(weights, (str, os.PathLike)):
        return os.path.abspath(weights)
    paths = tuple(os.path.abspath(w) for w in weights)
    return paths[0] if len(paths) == 1 else paths


def output_path(out_dir, case_id: str) -> str:
    return os.path.join(os.path.abspath(out_dir), f"{case_id}.nii.gz")


def plan(src, out_dir, *, num_parts: int = 1, part_id: int = 0) -> List[Case]:
    """The cases of ``src`` (a scan or a folder, see :func:`kidney.pipeline.find_inputs`) this run
    owns, with their outputs ``out_dir/<case_id>.nii.gz``; checks every output of the whole folder
    against every input first (:func:`check_outputs`)."""
    from .pipeline import find_inputs

    inputs = [(cid, os.path.abspath(p)) for cid, p in find_inputs(src)]
    cases = [Case(cid, p, output_path(out_dir, cid)) for cid, p in inputs]
    check_outputs(cases)
    return select_part(cases, num_parts, part_id)


def select_part(cases: Sequence[Case], num_parts: int = 1, part_id: int = 0) -> List[Case]:
    """Shard ``part_id`` of ``num_parts``: the cases sorted by id, every ``num_parts``-th from the
    ``part_id``-th (nnU-Net's convention). Deterministic; the shards are disjoint and cover all."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in 0..{num_parts - 1} and --num-parts >= 1, got "
                         f"--num-parts {num_parts} --part-id {part_id}")
    return sorted(cases, key=lambda c: c.case_id)[part_id::num_parts]


def _identity(path: str):
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def check_outputs(cases: Sequence[Case]) -> None:
    """Raise :class:`InputOverwriteError` (naming both paths) when an output is an input — the same
    path, a link to it, or the same file under another name — or when two cases share an output."""
    by_path, by_inode = {}, {}
    for c in cases:
        by_path[os.path.realpath(c.input)] = c.input
        ident = _identity(c.input)
        if ident is not None:
            by_inode[ident] = c.input
    seen: Dict[str, str] = {}
    for c in cases:
        real = os.path.realpath(c.output)
        hit = by_path.get(real)
        if hit is None and os.path.lexists(c.output):
            hit = by_inode.get(_identity(c.output))
        if hit is not None:
            raise InputOverwriteError(f"output {c.output} would overwrite input {hit}; write the labels "
                                      "to another file or folder (-o)")
        if real in seen:
            raise InputOverwriteError(f"inputs {seen[real]} and {c.input} would both be written to "
                                      f"{c.output} (the same case id {c.case_id!r}); rename one")
        seen[real] = c.input


# --- the manifest -----------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def manifest_name(num_parts: int = 1, part_id: int = 0) -> str:
    return MANIFEST if num_parts == 1 else f"manifest.part{part_id}-of-{num_parts}.jsonl"


class Manifest:
    """The run's manifest file: one JSON object a line, appended, flushed and synced per row (a
    shard has its own file, so jobs of an array never write one file together)."""

    def __init__(self, out_dir, num_parts: int = 1, part_id: int = 0):
        self.path = Path(out_dir) / manifest_name(num_parts, part_id)

    def write(self, row: dict) -> None:
        row = dict(row)
        row.setdefault("time", _now())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _rows(out_dir):
    for path in sorted(Path(out_dir).glob("manifest*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    continue
                if isinstance(row, dict):
                    yield row


def read_manifest(out_dir) -> Dict[str, dict]:
    """The latest case row of each case in every manifest of ``out_dir`` (``{}`` if none)."""
    latest: Dict[str, dict] = {}
    for row in _rows(out_dir):
        case = row.get("case")
        if case is not None and row.get("time", "") >= latest.get(case, {}).get("time", ""):
            latest[case] = row
    return latest


def read_runs(out_dir) -> List[dict]:
    """The run rows (``started``, ``finished``, ``interrupted``) of every manifest, oldest first."""
    return sorted((r for r in _rows(out_dir) if "run" in r), key=lambda r: r.get("time", ""))


def _fingerprint(path: str) -> dict:
    st = os.stat(path)
    return {"input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def _still_done(case: Case, row: Optional[dict], model: str) -> Tuple[bool, str]:
    """(skip?, why not) for ``--continue``."""
    if not os.path.exists(case.output):
        return False, "no output"
    if row is None or row.get("status") not in ("done", "skipped"):
        return False, "not done in the manifest"
    try:
        now = _fingerprint(case.input)
    except OSError:
        return False, "input unreadable"
    if any(row.get(k) != v for k, v in now.items()):
        return False, "input changed"
    if row.get("model") != model:
        return False, "other weights or settings"
    return True, ""


# --- one case ---------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def segment_case(case: Case, segmenter, *, overwrite: bool = True, hook: Optional[Callable] = None) -> dict:
    """Read, segment and write one case; the manifest fields it measured (raises on failure).

    ``seconds`` covers reading, segmenting and writing; ``peak_mb`` is the process's peak resident
    memory over those steps.
    """
    from .pipeline import NoKidneyWarning

    fields = _fingerprint(case.input)  # what was read: the manifest compares it on --continue
    t0 = time.perf_counter()
    with PeakRSS() as read_mem:
        vol = io.load_nifti(case.input)
    if hook is not None:
        hook()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", NoKidneyWarning)
        res = segmenter.segment(vol, details=True)
    with PeakRSS() as write_mem:
        io.save_nifti(res.labels, vol, case.output, overwrite=overwrite)
    fields.update(seconds=round(time.perf_counter() - t0, 3),
                  peak_mb=round(max([read_mem.mb, write_mem.mb, *res.peak_mb.values()]), 1),
                  n_rois=len(res.rois), warnings=list(res.warnings))
    return fields


def run_test_hook(case_id: str) -> None:
    """The :data:`TEST_HOOK_ENV` hook (a no-op unless that variable is set)."""
    folder = os.environ.get(TEST_HOOK_ENV)
    if not folder:
        return
    marker = Path(folder) / case_id
    try:
        action = marker.read_text().strip()
    except OSError:
        return
    if action == "hang":
        (Path(folder) / f"{case_id}.hanging").touch()  # lets a test signal the process while it is here
        time.sleep(3600)
        return
    if action == "once":
        try:
            marker.unlink()
        except FileNotFoundError:
            return  # another attempt took it
    time.sleep(0.5)  # mid-case; lets this attempt's start event reach the scheduler
    os.kill(os.getpid(), signal.SIGKILL)


def _case_row(case: Case, status: str, model: str, **fields) -> dict:
    row = {"case": case.case_id, "status": status, "input": case.input, "input_bytes": None,
           "input_mtime_ns": None, "output": case.output if status != "failed" else None,
           "seconds": None, "peak_mb": None, "n_rois": None, "attempts": 1, "retried": False,
           "error": None, "model": model}
    row.update(fields)
    if status == "failed" and row["input_bytes"] is None:
        with contextlib.suppress(OSError):
            row.update(_fingerprint(case.input))
    return row


@contextlib.contextmanager
def _alarm(seconds: Optional[float]):
    """Raise :class:`CaseTimeout` in this (main) thread after ``seconds`` (serial engine)."""
    if not seconds or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a batch system's time limit, ``kill``) interrupts the run as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- progress ---------------------------------------------------------------------------------------

class _Progress:
    """One progress bar for the cohort (done, failed, cases per minute), or a line per case without
    tqdm; failed cases and warnings as they happen (``kidney segment`` lists the failures again at
    the end, also with ``--quiet``)."""

    def __init__(self, total: int, enabled: bool):
        self.counts: Counter = Counter()
        self.t0 = time.perf_counter()
        self.enabled = enabled
        self.bar = None
        if enabled and total > 0:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc="segment", unit="case", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def per_minute(self) -> float:
        n = self.counts["done"] + self.counts["failed"]
        return 60.0 * n / max(time.perf_counter() - self.t0, 1e-9)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def add(self, row: dict) -> None:
        self.counts[row["status"]] += 1
        self.counts["retried"] += bool(row.get("retried"))
        if self.enabled and row["status"] == "failed":
            self.write(f"failed {row['case']}: {row['error']}")
        for w in (row.get("warnings") or ()) if self.enabled else ():
            self.write(f"warning {row['case']}: {w}")
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.counts['done']}, failed {self.counts['failed']}, "
                                     f"{self.per_minute():.1f} cases/min", refresh=False)
            self.bar.update(1)
        elif self.enabled and row["status"] == "done":
            print(f"{row['case']}: {row['n_rois']} ROI(s), {row['seconds']:.1f} s -> {row['output']}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the run ----------------------------------------------------------------------------------------

@dataclass
class Summary:
    """What a cohort run did. ``rows``: the manifest rows it wrote for its cases (skipped ones too)."""

    out_dir: Path
    manifest: Path
    rows: List[dict] = field(default_factory=list)
    left: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    startup_s: float = 0.0
    engine: str = "serial"
    workers: int = 1

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def retried(self) -> int:
        return sum(bool(r.get("retried")) for r in self.rows)

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 some case failed, else 0."""
        return 130 if self.interrupted else (1 if self.count("failed") else 0)

    def line(self) -> str:
        done, failed, skipped = self.count("done"), self.count("failed"), self.count("skipped")
        ran = done + failed
        rate = f", {60.0 * ran / self.wall_s:.1f} cases/min" if ran and self.wall_s > 0 else ""
        retried = f"; {self.retried} retried" if self.retried else ""
        if self.interrupted:
            return (f"interrupted: {done} done, {failed} failed, {skipped} skipped, {self.left} left "
                    f"({self.wall_s:.1f} s); run again with --continue to finish")
        return (f"{len(self.rows)} case(s) into {self.out_dir}: {done} done, {failed} failed, "
                f"{skipped} skipped{retried} ({self.wall_s:.1f} s{rate})")


def segment_cohort(src, out_dir, weights: Weights, *, segmenter=None, resume: bool = False,
                   overwrite: bool = False, num_parts: int = 1, part_id: int = 0,
                   workers: Optional[int] = None, threads_per_worker: int = 1, memory_limit=None,
                   scheduler: Optional[str] = None, scheduler_file=None, retries: int = 2,
                   timeout: Optional[float] = None, dashboard_address: Optional[str] = ":8787",
                   progress: bool = True, say: Callable[[str], None] = print) -> Summary:
    """Segment every case of ``src`` (this run's shard of it) into ``out_dir``; see the module doc.

    Serial in this process unless ``workers`` (a Dask LocalCluster of that many worker processes)
    or ``scheduler`` / ``scheduler_file`` (a running Dask cluster) is given. ``segmenter``: the
    model for the serial engine (default ``weights.load()``). Raises before any case is touched
    when an output would overwrite an input (:class:`InputOverwriteError`), or, unless ``resume``
    or ``overwrite``, when an output exists (:class:`FileExistsError`).
    """
    if resume and overwrite:
        raise ValueError("--continue and --overwrite exclude each other: --continue keeps what an "
                         "earlier run finished, --overwrite segments every case again")
    dask = workers is not None or scheduler is not None or scheduler_file is not None
    if dask:
        require_dask()
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if threads_per_worker < 1:
            raise ValueError(f"--threads-per-worker must be >= 1, got {threads_per_worker}")
    if retries < 0:
        raise ValueError(f"--retries must be >= 0, got {retries}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout}")
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    cases = plan(src, out_dir, num_parts=num_parts, part_id=part_id)
    model = weights.fingerprint()
    pending, skipped = _triage(cases, out_dir, model, resume=resume, overwrite=overwrite, say=say)
    manifest = Manifest(out_dir, num_parts, part_id)
    summary = Summary(out_dir, manifest.path, engine="dask" if dask else "serial",
                      workers=workers or 1)
    for case in pending:  # temporary files a killed run left for these cases
        for tmp in io.stale_temp_files(case.output):
            with contextlib.suppress(OSError):
                tmp.unlink()
    manifest.write({"run": "started", "engine": summary.engine, "cases": len(cases), "pending": len(pending),
                    "skipped": len(skipped), "part": [part_id, num_parts], "model": model,
                    "weights": [weights.stage1, weights.stage2], "tta": weights.tta,
                    "keep_components": weights.keep_components, "blur_tta": weights.blur_tta,
                    **weights.roi_overrides(),
                    "resume": resume, "overwrite": overwrite, "host": socket.gethostname(),
                    "pid": os.getpid()})
    for row in skipped:
        manifest.write(row)
        summary.rows.append(row)
    bar = _Progress(len(pending), progress)

    def finished(row):
        manifest.write(row)
        summary.rows.append(row)
        bar.add(row)

    try:
        with _sigterm_interrupts():
            try:
                if dask:
                    info = _run_dask(pending, weights, model, finished, say=say, workers=workers,
                                     threads=threads_per_worker, memory_limit=memory_limit,
                                     scheduler=scheduler, scheduler_file=scheduler_file, retries=retries,
                                     timeout=timeout, dashboard_address=dashboard_address,
                                     overwrite=overwrite or resume, t_start=t_start)
                    summary.startup_s, summary.workers = info["startup_s"], info["workers"]
                    summary.interrupted = info["interrupted"]
                else:
                    segmenter = segmenter if segmenter is not None else weights.load()
                    _run_serial(pending, segmenter, model, finished, overwrite=overwrite or resume,
                                timeout=timeout)
            except KeyboardInterrupt:
                summary.interrupted = True
    finally:
        bar.close()
    summary.wall_s = time.perf_counter() - t_start
    finished_ids = {r["case"] for r in summary.rows}
    summary.left = sum(c.case_id not in finished_ids for c in pending)
    for case in pending:  # a worker killed mid-write leaves its temporary file behind
        if case.case_id not in finished_ids:
            for tmp in io.stale_temp_files(case.output):
                with contextlib.suppress(OSError):
                    tmp.unlink()
    manifest.write({"run": "interrupted" if summary.interrupted else "finished", "engine": summary.engine,
                    "workers": summary.workers, "cases": len(cases), "done": summary.count("done"),
                    "failed": summary.count("failed"), "skipped": summary.count("skipped"),
                    "retried": summary.retried, "left": summary.left, "wall_s": round(summary.wall_s, 3),
                    "startup_s": round(summary.startup_s, 3)})
    return summary


def _triage(cases, out_dir, model, *, resume, overwrite, say):
    """(cases to segment, skipped rows). Without ``resume`` or ``overwrite`` an existing output stops
    the run here, before any work."""
    if resume:
        rows = read_manifest(out_dir)
        pending, skipped, why = [], [], Counter()
        for case in cases:
            skip, reason = _still_done(case, rows.get(case.case_id), model)
            if skip:
                old = rows[case.case_id]
                skipped.append(_case_row(case, "skipped", model, input_bytes=old["input_bytes"],
                                         input_mtime_ns=old["input_mtime_ns"], note="done in an earlier run"))
            else:
                pending.append(case)
                if os.path.exists(case.output):
                    why[reason] += 1
        for reason, n in why.items():
            say(f"--continue: segmenting {n} case(s) again whose output exists ({reason})")
        return pending, skipped
    if not overwrite:
        existing = [c.output for c in cases if os.path.exists(c.output)]
        if existing:
            more = f" (and {len(existing) - 1} more of the {len(cases)} outputs)" if len(existing) > 1 else ""
            raise FileExistsError(f"{existing[0]} exists{more}; pass --continue to finish an earlier run "
                                  "(cases it finished are skipped) or --overwrite to replace them")
    return list(cases), []


def _run_serial(pending, segmenter, model, finished, *, overwrite, timeout) -> None:
    host, pid = socket.gethostname(), os.getpid()
    for case in pending:
        t0 = time.perf_counter()
        try:
            with _alarm(timeout):
                fields = segment_case(case, segmenter, overwrite=overwrite,
                                      hook=lambda: run_test_hook(case.case_id))
            row = _case_row(case, "done", model, **fields)
        except Exception as exc:  # noqa: BLE001 - one bad case never stops the run
            row = _case_row(case, "failed", model, error=_reason(exc),
                            seconds=round(time.perf_counter() - t0, 3))
        row.update(worker="local", host=host, pid=pid)
        finished(row)


# --- Dask -------------------------------------------------------------------------------------------

def require_dask() -> None:
    """Raise ``ValueError`` (exit status 2) naming the install command when Dask is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ValueError("--workers / --scheduler need Dask distributed: pip install 'sparseconv[cluster]' "
                         f"(or pip install \"dask[distributed]\"); {exc}") from None


def _dashboard(client, local: bool) -> str:
    import importlib.util

    try:
        port = client.scheduler_info().get("services", {}).get("dashboard")
    except Exception:  # noqa: BLE001
        port = None
    if port is None:
        return "no dashboard"
    if local and importlib.util.find_spec("bokeh") is None:
        return f"dashboard needs bokeh (pip install 'sparseconv[cluster]'): {client.dashboard_link}"
    return f"dashboard {client.dashboard_link}"


def _run_dask(pending, weights, model, finished, *, say, workers, threads, memory_limit, scheduler,
              scheduler_file, retries, timeout, dashboard_address, overwrite, t_start) -> dict:
    import logging
    import secrets

    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.client import FutureCancelledError

    from . import dask_worker

    token = secrets.token_hex(4)
    topic = f"kidney-cohort-{token}"
    plugin = f"kidney-cohort-setup-{token}"
    info = {"startup_s": 0.0, "workers": workers or 0, "interrupted": False}
    # allowed-failures: how often a case may take its worker down; worker-saturation 1.0: a worker
    # holds only the case it runs (the others wait at the scheduler), so a dying worker takes no
    # innocent queued case with it. Both are read when the scheduler starts.
    config = {"distributed.scheduler.allowed-failures": retries,
              "distributed.scheduler.worker-saturation": 1.0}
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the progress bar and the manifest say what happened
    cluster = client = None
    futures = []
    with dask.config.set(config):
        try:
            if scheduler is not None or scheduler_file is not None:
                client = Client(scheduler_file=str(scheduler_file)) if scheduler_file else Client(scheduler)
                where = f"joined {client.scheduler.address}"
            else:
                env = {k: str(threads) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
                env["DASK_LOGGING__DISTRIBUTED"] = "error"  # the workers' own log lines
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       memory_limit=memory_limit if memory_limit is not None else "auto",
                                       dashboard_address=dashboard_address, env=env)
                client = Client(cluster)
                where = "LocalCluster"
            try:  # each worker loads the model now (and every restarted worker when it starts)
                client.register_plugin(dask_worker.CohortSetup(weights, threads, ignore_sigint=cluster is not None),
                                       name=plugin)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"the Dask workers cannot load the weights: {_reason(exc)}") from None
            allowed = retries
            if cluster is None:
                with contextlib.suppress(Exception):
                    allowed = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
            nw = len(client.scheduler_info().get("workers", {}))
            info["workers"] = nw
            info["startup_s"] = time.perf_counter() - t_start
            say(f"dask: {where}, {nw} worker process(es), one case at a time with {threads} thread(s) each; "
                f"{_dashboard(client, cluster is not None)}; up to {retries} retries after an error and {allowed} after a "
                "worker died per case")
            attempts: Dict[str, list] = {}
            lock = threading.Lock()

            def on_event(event):
                _, msg = event
                with lock:
                    tries = attempts.setdefault(msg.get("case"), [])
                    if msg.get("event") == "start":
                        tries.append({"worker": msg.get("worker"), "reason": None})
                    elif tries and tries[-1]["reason"] is None:
                        tries[-1]["reason"] = msg.get("reason")

            client.subscribe_topic(topic, on_event)
            opts = {"topic": topic, "threads": threads, "timeout": timeout, "overwrite": overwrite,
                    "model": model}
            by_key = {}
            for i, case in enumerate(pending):  # one task group: Dask queues the cases at the scheduler
                fut = client.submit(dask_worker.segment_task, case, weights, opts,
                                    key=(f"kidney-segment-{token}", i), retries=retries, pure=False)
                futures.append(fut)
                by_key[fut.key] = case
            for fut in as_completed(futures):
                case = by_key[fut.key]
                if fut.status == "finished":
                    row = fut.result()
                    error = None
                else:
                    try:
                        exc = fut.exception()
                    except FutureCancelledError as err:
                        exc = err
                    row = _case_row(case, "failed", model)
                    error = exc
                fut.release()
                with lock:
                    tries = list(attempts.get(case.case_id, []))
                ended = [_attempt_end(t) for t in (tries if error is not None else tries[:-1])]
                if error is not None:
                    if type(error).__name__ == "KilledWorker":
                        row["error"] = (f"its worker died on each of {max(len(tries), 1)} attempt(s): "
                                        + "; ".join(ended or ["worker died"]))
                    else:
                        row["error"] = _reason(error) + (f" (after {len(tries)} attempts)" if len(tries) > 1 else "")
                if tries and not row.get("worker"):
                    row["worker"] = tries[-1]["worker"]
                row["attempts"] = max(len(tries), 1)
                row["retried"] = len(tries) > 1
                if row["retried"]:
                    row["retry_reasons"] = ended[:-1] if error is not None else ended
                finished(row)
        except KeyboardInterrupt:
            info["interrupted"] = True
            with contextlib.suppress(Exception):
                client.cancel([f for f in futures if not f.done()])
        finally:
            with contextlib.suppress(Exception):
                if client is not None:
                    if cluster is None:  # a cluster that outlives this run keeps no trace of it
                        client.unsubscribe_topic(topic)
                        client.unregister_worker_plugin(plugin)
                    client.close()
            with contextlib.suppress(Exception):
                if cluster is not None:
                    cluster.close()
            quiet.setLevel(level)
    return info


def _attempt_end(attempt: dict) -> str:
    return attempt.get("reason") or f"worker {attempt.get('worker')} died (killed, or out of memory)"
