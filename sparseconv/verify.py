"""Check a backend against the dense twins and the NumPy reference: ``python -m sparseconv.verify``.

    python -m sparseconv.verify                          # the selected backend (numba by default)
    python -m sparseconv.verify --backend reference      # a named backend; repeat it, or say "all"
    python -m sparseconv.verify --quick                  # a third of the cases: a few seconds
    python -m sparseconv.verify --plugin my_backend.py   # load your module (a file or a dotted name)
                                                         # that calls sparseconv.register_backend(...)
    python -m sparseconv.verify --op depthwise           # only some rows (repeatable)
    python -m sparseconv.verify --scale                  # add the scale tier (a minute or more)
    python -m sparseconv.verify --no-threads             # skip the thread-count rerun

What runs (the same suite, through the same function, as the tests and ``benchmarks/gpu_check.py``:
:mod:`sparseconv.testing.suite`):

* **subm, depthwise, down, inverse** — every op × layout (random, empty, single voxel, full grid,
  boundary only) × geometry (k 1/3/5, dilation 1/2; the strided k/s/p/d list), batch 1–3, channels
  1–8. Each case computes forward, dX, dW and db in float64 on the backend and compares them with
  the dense NumPy twin read at the active sites (``max|got − want| / max(1, max|want|) ≤ 1e-10``);
  then the same case in float32 against the reference backend (``‖got − ref‖ ≤ 1e-5 ‖ref‖``, the
  result must stay float32).
* **index, kernel_maps, segment_sum, pointwise, empty_inputs** — the kernel-level checks of
  :mod:`sparseconv.testing.kernel_checks` (integer tables exactly equal to the reference's; floating
  results within 1e-5 (float32) / 1e-12 (float64) of the reference's norm).
* **bitwise** — in every case each kernel is called twice with the same inputs: the two results
  must have the same bits, and the first call must leave its inputs unchanged
  (:mod:`sparseconv.testing.calls`).
* **threads** — the float32 cases rerun at 1 and at N threads, bitwise equal
  (:mod:`sparseconv.testing.threads`: a backend's ``set_num_threads`` hook, else Numba's and
  OpenBLAS's thread counts; ``thread_invariant = False`` opts out, visibly).
* **scale** (``--scale``) — float32 at 10^5–10^6 rows and up to 64 channels against float64 ground
  truth, each kernel output within its error budget (:mod:`sparseconv.testing.scale`).

The tolerances are the table of :mod:`sparseconv.testing.compare`.

Prints one row per op with the worst error seen (NaN when a result held NaN, "shape" when its shape
was wrong), and exits 0 if every row passes, 1 naming the failing ops otherwise, 2 if the backend or
plugin cannot be loaded. A failure names the kernel; an exception raised in a kernel is printed with
the kernel's name and the ``file:line`` of the backend's code that raised it.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from . import backends as B
from .testing import conformance as conf
from .testing import suite
from .testing.compare import tolerance
from .testing.threads import control_for

QUANTITIES = suite.QUANTITIES
# The kernel groups of the suite that have a row here. conv_kernels stays with the tests and gpu_check:
# the four convolution rows already run those kernels, through the public path. The scale tier has a
# row of its own, SCALE_ROW, when asked for (--scale).
KERNEL_ROWS = tuple(op for op in suite.KERNEL_OPS if op not in ("conv_kernels", "scale"))
SCALE_ROW = "scale"
# rows with float32 cases, which the thread-invariance check reruns
THREAD_ROWS = conf.OPS + ("segment_sum", "pointwise", "empty_inputs")


def _worse(a, b):
    """The larger of two errors, NaN if either is NaN (a NaN result must stay visible); None = none yet."""
    if a is None or b is None:
        return b if a is None else a
    return float("nan") if np.isnan(a) or np.isnan(b) else max(a, b)


@dataclasses.dataclass
class Row:
    """One line of the report: an op (or kernel group), its worst errors and its verdict."""
    op: str
    cases: int = 0
    worst: dict = dataclasses.field(default_factory=dict)  # quantity -> worst float64 error vs dense
    worst_ref32: float | None = None  # worst float32 error vs the reference (None: not compared)
    shapes: set = dataclasses.field(default_factory=set)  # quantities whose shape was wrong in some case
    bitwise: bool | None = None  # every repeated kernel call bitwise equal (None: not checked)
    threads: bool | None = None  # every float32 rerun at 1 and N threads bitwise equal (None: not checked)
    thread_status: str = ""  # why the thread check did not run on this row's float32 cases ("" if it did)
    scale: dict = dataclasses.field(default_factory=dict)  # scale tier: kernel output -> (worst error, budget)
    failures: list = dataclasses.field(default_factory=list)  # human-readable, first few kept
    failed: set = dataclasses.field(default_factory=set)  # the checks that failed (suite.Result.failed)
    n_failed: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.n_failed == 0

    def fail(self, message: str, keep: int = 3):
        self.n_failed += 1
        if len(self.failures) < keep:
            self.failures.append(message)

    def add(self, case, result: suite.Result):
        """Count one case: keep its worst errors, and its problems as a failure."""
        self.cases += 1
        for q, err in result.dense.items():
            self.worst[q] = _worse(self.worst.get(q), err)
        for err in result.reference.values():
            self.worst_ref32 = _worse(self.worst_ref32, err)
        self.shapes |= set(result.shapes)
        for flag in ("bitwise", "threads"):
            value = getattr(result, flag)
            if value is not None:
                setattr(self, flag, value and getattr(self, flag) is not False)
        for name, (err, budget) in result.scale.items():
            old = self.scale.get(name, (None, budget))[0]
            self.scale[name] = (_worse(old, err), budget)
        self.failed |= result.failed
        if result.problems:
            self.fail(f"{case.label}: {'; '.join(result.problems)}")


@dataclasses.dataclass
class Report:
    backend: str
    rows: list
    seconds: float
    threads: str = ""  # what the thread-invariance check compared (ThreadControl.describe()), "" if not asked
    threads_checked: bool = False  # False: not asked, or it could not run (``threads`` says why)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failed_ops(self) -> list:
        return [r.op for r in self.rows if not r.passed]

    def row(self, op: str) -> Row:
        return next(r for r in self.rows if r.op == op)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def _record_failure(row: Row, label: str, err: Exception, be) -> None:
    """Count a case of ``row`` that raised ``err``, with the text the report prints for it.

    ``NotImplementedError`` (a kernel not written yet) reads ``not implemented: <message>`` and is
    kept once per row however many cases reach it; an ``AssertionError`` of a check (not raised
    inside the backend) reads as its message; anything else as ``<kernel> raised <type>: <message>
    (at <file>:<line>)`` — the kernel it came out of (when it came out of one) and the line of the
    backend's code that raised it (see :func:`sparseconv.testing.suite.where_raised`). When the
    exception came out of a kernel and the backend's module defines ``HINTS = {kernel_name: text}``,
    the hint for that kernel follows on its own line.
    """
    kernel = suite.kernel_that_raised(err, be)
    if isinstance(err, NotImplementedError):
        text = f"not implemented: {err}"
    elif isinstance(err, AssertionError) and kernel is None:
        text = str(err)
    else:
        where = suite.where_raised(err, be)
        text = (f"{kernel} raised" if kernel else "raised") + f" {type(err).__name__}: {str(err).strip()}"
        text += f" (at {where})" if where else ""
    hints = getattr(sys.modules.get(type(be).__module__), "HINTS", None)
    if isinstance(hints, dict) and kernel in hints:
        text += f"\n      hint ({kernel}): {hints[kernel]}"
    repeat = isinstance(err, NotImplementedError) and any(m.endswith(f": {text}") for m in row.failures)
    row.failed.add("raised")
    row.fail(f"{label}: {text}", keep=len(row.failures) if repeat else 3)


ROWS = conf.OPS + KERNEL_ROWS  # the rows of a run without --scale


def verify_backend(backend, quick: bool = False, seed: int = 0, ops=None, progress=None,
                   scale: bool = False, threads: bool = True, cases=None) -> Report:
    """Run the suite on ``backend`` (a name or a backend object); return a :class:`Report`.

    ``ops`` limits the run to some rows of :data:`ROWS` and :data:`SCALE_ROW` (default: :data:`ROWS`).
    ``scale`` adds the scale tier (row "scale"; naming it in ``ops`` does too). ``threads`` reruns the
    float32 cases at 1 and N threads (see :mod:`sparseconv.testing.threads`). ``cases`` replaces the
    case list (default ``suite.cases(quick, seed, scale)``; e.g. a few cases of it). ``progress(row)``
    is called after each row (the command line prints it).
    """
    ops = ROWS if ops is None else tuple(ops)
    if scale and SCALE_ROW not in ops:
        ops += (SCALE_ROW,)
    unknown = [op for op in ops if op not in ROWS + (SCALE_ROW,)]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {list(ROWS + (SCALE_ROW,))}")
    be = B.load_backend(backend) if isinstance(backend, str) else backend
    # the reference is not compared with itself: its float32 column reads "—"
    against = suite.AGAINST if be.name != "reference" else tuple(a for a in suite.AGAINST if a != "reference")
    control = None
    if threads:
        against += ("threads",)
        control = control_for(be)
    t_start = time.perf_counter()
    if cases is None:
        cases = suite.cases(quick=quick, seed=seed, scale=SCALE_ROW in ops)
    rows = []
    for op in (op for op in ROWS + (SCALE_ROW,) if op in ops):
        row = Row(op, thread_status=control.status if control is not None and op in THREAD_ROWS else "")
        t0 = time.perf_counter()
        for case in (c for c in cases if c.op == op):
            try:
                result = suite.run_case(be, case, against, threads=control)
            except Exception as err:  # noqa: BLE001 - a crash is a failure of this op, keep going
                row.cases += 1
                _record_failure(row, case.label, err, be)
                continue
            row.add(case, result)
        row.seconds = time.perf_counter() - t0
        rows.append(row)
        if progress:
            progress(row)
    return Report(be.name, rows, time.perf_counter() - t_start, control.describe() if control is not None else "",
                  control is not None and control.runs)


# --------------------------------------------------------------------------------------------
# Plugins and the command line
# --------------------------------------------------------------------------------------------

def load_plugin(spec: str) -> list:
    """Import a user's backend module — a ``.py`` file path or a dotted module name — and return
    the names of the backends it registered with :func:`sparseconv.register_backend`.

    A module that registers nothing but defines a module-level ``backend`` object (with a ``name``)
    gets that object registered under its name.
    """
    before = set(B._registered)
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no such file {str(path.resolve())!r}")
        mod_name = "sparseconv_plugin_" + re.sub(r"\W", "_", path.stem)
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
    else:
        module = importlib.import_module(spec)
    new = [n for n in B._registered if n not in before]
    if not new and hasattr(module, "backend") and hasattr(module.backend, "name"):
        B.register_backend(module.backend.name, module.backend)
        new = [module.backend.name]
    if not new:
        raise ImportError(f"plugin {spec!r} registered no backend: call sparseconv.register_backend(name, obj) "
                          "when it is imported, or define a module-level `backend` object with a `name`")
    return new


def _plugin_error(err: BaseException, spec: str) -> str:
    """One line saying why a plugin did not load: the exception, and where in the plugin it was raised."""
    if isinstance(err, FileNotFoundError) and str(err).startswith("no such file"):
        return str(err)
    text = f"{type(err).__name__}: {err}"
    path = Path(spec).resolve() if spec.endswith(".py") or Path(spec).is_file() else None
    frames = traceback.extract_tb(err.__traceback__)
    mine = [f for f in frames if path is not None and Path(f.filename).resolve() == path]
    if mine:
        text += f" (at {spec} line {mine[-1].lineno})"
    return " ".join(text.split())  # one line, whatever the message held


def _fmt(err):
    if err is None:
        return "—"
    return "nan" if np.isnan(err) else ("inf" if np.isinf(err) else f"{err:.1e}")


HEADER = (f"{'op':<17}{'cases':>6}{'out':>9}{'dX':>9}{'dW':>9}{'db':>9}{'f32 vs ref':>12}{'bitwise':>9}"
          f"{'threads':>11}  result")


def _flag(value, status=""):
    if value is None:
        return status or "—"
    return "yes" if value else "NO"


def format_row(row: Row) -> str:
    verdict = "PASS" if row.passed else f"FAIL ({row.n_failed} of {row.cases})"
    flags = f"{_flag(row.bitwise):>9}{_flag(row.threads, row.thread_status):>11}"
    if row.op in conf.OPS:
        errs = "".join(f"{'shape' if q in row.shapes else _fmt(row.worst.get(q)):>9}" for q in QUANTITIES)
        return f"{row.op:<17}{row.cases:>6}{errs}{_fmt(row.worst_ref32):>12}{flags}  {verdict}"
    if row.op == SCALE_ROW:
        ratios = {name: err / budget for name, (err, budget) in row.scale.items()}
        if not ratios:
            text = "no case ran"
        else:
            name = max(ratios, key=lambda n: np.inf if np.isnan(ratios[n]) else ratios[n])
            text = f"worst {_fmt(row.scale[name][0])}, {ratios[name]:.2f} of budget ({name})"
        return f"{row.op:<17}{row.cases:>6}  {text:<46}{flags}  {verdict}"
    if "kernel" in row.failed:
        text = "differs from the reference"
    elif "raised" in row.failed:
        text = "a kernel raised an exception"
    else:  # (a failure shows in the bitwise or threads column)
        text = "matches the reference"
    return f"{row.op:<17}{row.cases:>6}  {text:<46}{flags}  {verdict}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparseconv.verify",
                                description="Check a sparseconv backend against the dense twins and the reference.")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="backend to verify (repeatable; 'all' = every available one). Default: the one a "
                        "--plugin registered, else the selected backend ($SPARSECONV_BACKEND or numba)")
    p.add_argument("--quick", action="store_true", help="about a third of the conformance cases (a few seconds)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import this module or .py file first; it should call sparseconv.register_backend()")
    p.add_argument("--seed", type=int, default=0, help="seed of the case list (default 0)")
    p.add_argument("--op", action="append", choices=ROWS + (SCALE_ROW,), metavar="OP",
                   help=f"check only this op (repeatable): {', '.join(ROWS + (SCALE_ROW,))}")
    p.add_argument("--scale", action="store_true",
                   help="add the scale tier: float32 at 10^5-10^6 rows and up to 64 channels against float64 "
                        "ground truth, each kernel within its error budget (a minute or more)")
    p.add_argument("--no-threads", dest="threads", action="store_false",
                   help="skip the thread-invariance check (the float32 cases rerun at 1 and N threads)")
    args = p.parse_args(argv)

    plugged = []
    for spec in args.plugin:
        try:
            names = load_plugin(spec)
        except Exception as err:  # noqa: BLE001 - whatever the user's module raised
            print(f"verify: cannot load plugin {spec!r}: {_plugin_error(err, spec)}", file=sys.stderr)
            return 2
        print(f"plugin {spec}: registered {', '.join(repr(n) for n in names)}")
        plugged += names
    wanted = args.backend or plugged or [B.get_backend().name]
    if "all" in wanted:
        wanted = B.available_backends()
    try:
        targets = [B.load_backend(name) for name in dict.fromkeys(wanted)]
    except (ImportError, ValueError) as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2

    failed = []
    for be in targets:
        mode = ("quick" if args.quick else "full") + (" + scale" if args.scale else "")
        print(f"\nverifying backend {be.name!r} ({type(be).__name__}), {mode} suite, seed {args.seed}")
        print(HEADER)
        report = verify_backend(be, quick=args.quick, seed=args.seed, ops=args.op, scale=args.scale,
                                threads=args.threads, progress=lambda row: print(format_row(row), flush=True))
        print(f"errors: worst over the cases; float64 vs dense twin must be <= {tolerance(np.float64, 'conv'):.0e}, "
              f"float32 vs reference <= {tolerance(np.float32, 'conv'):.0e}; bitwise: every kernel called twice "
              "gives the same bits")
        if report.threads_checked:
            print(f"threads: the float32 cases at {report.threads}, bitwise equal")
        elif report.threads:
            print(f"threads: not checked ({report.threads})")
        if any(row.op == SCALE_ROW for row in report.rows):
            print("scale: float32 vs float64 ground truth, each kernel output within its budget (docs/backends.md)")
        for row in report.rows:
            for message in row.failures:
                print(f"  {row.op}: {message}")
            if row.n_failed > len(row.failures):
                print(f"  {row.op}: ... and {row.n_failed - len(row.failures)} more failing case(s)")
        if report.passed:
            print(f"PASS: backend {be.name!r} passes every op ({report.seconds:.1f} s)")
        else:
            print(f"FAIL: backend {be.name!r} fails {', '.join(report.failed_ops)} ({report.seconds:.1f} s)")
            failed.append((be.name, report.failed_ops))
    if failed:
        summary = "; ".join(f"{name!r}: {', '.join(ops)}" for name, ops in failed)
        print(f"\nverify: FAILED — {summary}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
