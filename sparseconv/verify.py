"""Check a backend against the dense twins and the NumPy reference: ``python -m sparseconv.verify``.

    python -m sparseconv.verify                          # the selected backend (numba by default)
    python -m sparseconv.verify --backend reference      # a named backend; repeat it, or say "all"
    python -m sparseconv.verify --quick                  # a third of the cases: a few seconds
    python -m sparseconv.verify --plugin my_backend.py   # load your module (a file or a dotted name)
                                                         # that calls sparseconv.register_backend(...)
    python -m sparseconv.verify --op depthwise           # only some rows (repeatable)

What runs (the same suite, through the same function, as the tests and ``benchmarks/gpu_check.py``:
:mod:`sparseconv.testing.suite`):

* **subm, depthwise, down, inverse** — every op × layout (random, empty, single voxel, full grid,
  boundary only) × geometry (k 1/3/5, dilation 1/2; the strided k/s/p/d list), batch 1–3, channels
  1–8. Each case computes forward, dX, dW and db in float64 on the backend and compares them with
  the dense NumPy twin read at the active sites (``max|got − want| / max(1, max|want|) ≤ 1e-10``);
  then the same case in float32 against the reference backend (``‖got − ref‖ ≤ 1e-5 ‖ref‖``, the
  result must stay float32), and once more to demand a bitwise-equal repeat (determinism).
* **index, kernel_maps, segment_sum, pointwise, empty_inputs** — the kernel-level checks of
  :mod:`sparseconv.testing.kernel_checks` (integer tables exactly equal to the reference's; floating
  results within 1e-5 (float32) / 1e-12 (float64) of the reference's norm; repeats bitwise equal).

The tolerances are the table of :mod:`sparseconv.testing.compare`.

Prints one row per op with the worst error seen, and exits 0 if every row passes, 1 naming the
failing ops otherwise, 2 if the backend or plugin cannot be loaded.
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

QUANTITIES = suite.QUANTITIES
# The kernel groups of the suite that have a row here. conv_kernels stays with the tests and gpu_check:
# the four convolution rows already run those kernels, through the public path.
KERNEL_ROWS = tuple(op for op in suite.KERNEL_OPS if op != "conv_kernels")


@dataclasses.dataclass
class Row:
    """One line of the report: an op (or kernel group), its worst errors and its verdict."""
    op: str
    cases: int = 0
    worst: dict = dataclasses.field(default_factory=dict)  # quantity -> worst float64 error vs dense
    worst_ref32: float | None = None  # worst float32 error vs the reference (None: not compared)
    bitwise: bool | None = None  # every repeat bitwise equal (None: not checked)
    failures: list = dataclasses.field(default_factory=list)  # human-readable, first few kept
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
            self.worst[q] = max(self.worst.get(q, 0.0), err)
        if result.reference:
            self.worst_ref32 = max([self.worst_ref32 or 0.0, *result.reference.values()])
        if result.bitwise is not None:
            self.bitwise = result.bitwise if self.bitwise is None else (self.bitwise and result.bitwise)
        if result.problems:
            self.fail(f"{case.label}: {'; '.join(result.problems)}")


@dataclasses.dataclass
class Report:
    backend: str
    rows: list
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failed_ops(self) -> list:
        return [r.op for r in self.rows if not r.passed]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def _record_failure(row: Row, label: str, err: Exception, be) -> None:
    """Count a case of ``row`` that raised ``err``, with the text the report prints for it.

    ``NotImplementedError`` (a kernel not written yet) reads ``not implemented: <message>`` and is
    kept once per row however many cases reach it; an ``AssertionError`` of a check (not raised
    inside the backend) reads as its message; anything else as ``raised <type>: <message>``. When
    the exception came out of a kernel (a method of the backend) and the backend's module defines
    ``HINTS = {kernel_name: text}``, the hint for that kernel follows on its own line.
    """
    kernel = suite.kernel_that_raised(err, be)
    if isinstance(err, NotImplementedError):
        text = f"not implemented: {err}"
    elif isinstance(err, AssertionError) and kernel is None:
        text = str(err)
    else:
        text = f"raised {type(err).__name__}: {err}"
    hints = getattr(sys.modules.get(type(be).__module__), "HINTS", None)
    if isinstance(hints, dict) and kernel in hints:
        text += f"\n      hint ({kernel}): {hints[kernel]}"
    repeat = isinstance(err, NotImplementedError) and any(m.endswith(f": {text}") for m in row.failures)
    row.fail(f"{label}: {text}", keep=len(row.failures) if repeat else 3)


ROWS = conf.OPS + KERNEL_ROWS


def verify_backend(backend, quick: bool = False, seed: int = 0, ops=None, progress=None) -> Report:
    """Run the suite on ``backend`` (a name or a backend object); return a :class:`Report`.

    ``ops`` limits the run to some rows of :data:`ROWS` (default: all). ``progress(row)`` is called
    after each row (the command line prints it).
    """
    ops = ROWS if ops is None else tuple(ops)
    unknown = [op for op in ops if op not in ROWS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {list(ROWS)}")
    be = B.load_backend(backend) if isinstance(backend, str) else backend
    # the reference is not compared with itself: its float32 column reads "—"
    against = suite.AGAINST if be.name != "reference" else tuple(a for a in suite.AGAINST if a != "reference")
    t_start = time.perf_counter()
    cases = suite.cases(quick=quick, seed=seed)
    rows = []
    for op in (op for op in ROWS if op in ops):
        row = Row(op)
        t0 = time.perf_counter()
        for case in (c for c in cases if c.op == op):
            try:
                result = suite.run_case(be, case, against)
            except Exception as err:  # noqa: BLE001 - a crash is a failure of this op, keep going
                row.cases += 1
                _record_failure(row, case.label, err, be)
                continue
            row.add(case, result)
        row.seconds = time.perf_counter() - t0
        rows.append(row)
        if progress:
            progress(row)
    return Report(be.name, rows, time.perf_counter() - t_start)


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
    return "—" if err is None else ("inf" if not np.isfinite(err) else f"{err:.1e}")


HEADER = f"{'op':<17}{'cases':>6}{'out':>9}{'dX':>9}{'dW':>9}{'db':>9}{'f32 vs ref':>12}{'bitwise':>9}  result"


def format_row(row: Row) -> str:
    verdict = "PASS" if row.passed else f"FAIL ({row.n_failed} of {row.cases})"
    if row.op in conf.OPS:
        errs = "".join(f"{_fmt(row.worst.get(q)):>9}" for q in QUANTITIES)
        bit = "—" if row.bitwise is None else ("yes" if row.bitwise else "NO")
        return f"{row.op:<17}{row.cases:>6}{errs}{_fmt(row.worst_ref32):>12}{bit:>9}  {verdict}"
    text = "matches the reference" if row.passed else "differs from the reference"
    return f"{row.op:<17}{row.cases:>6}  {text:<56}  {verdict}"


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
    p.add_argument("--op", action="append", choices=ROWS, metavar="OP",
                   help=f"check only this op (repeatable): {', '.join(ROWS)}")
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
        mode = "quick" if args.quick else "full"
        print(f"\nverifying backend {be.name!r} ({type(be).__name__}), {mode} suite, seed {args.seed}")
        print(HEADER)
        report = verify_backend(be, quick=args.quick, seed=args.seed, ops=args.op,
                                progress=lambda row: print(format_row(row), flush=True))
        print(f"errors: worst over the cases; float64 vs dense twin must be <= {tolerance(np.float64, 'conv'):.0e}, "
              f"float32 vs reference <= {tolerance(np.float32, 'conv'):.0e}, repeats bitwise equal")
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
