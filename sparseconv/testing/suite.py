"""The one conformance suite of a backend: its case list and the function that runs a case.

:func:`cases` lists every case, quick or full: first the convolution cases of
:func:`~sparseconv.testing.conformance.standard_cases` (each op through the kernel-map builders and
``sparseconv.functional``), then the kernel-level checks of :mod:`sparseconv.testing.kernel_checks`,
then, when asked for, the scale tier of :mod:`sparseconv.testing.scale`. :func:`run_case` runs one
on a backend and returns a :class:`Result`: its errors against each oracle and, in words, every
tolerance of :mod:`sparseconv.testing.compare` it exceeds. The backend is seen through
:class:`~sparseconv.testing.calls.KernelCalls`, so every kernel call is repeated (bitwise equal) and,
for the thread-invariance check, recorded at two thread counts.

The tests (every backend of the ``backend`` fixture), ``python -m sparseconv.verify`` and
``benchmarks/gpu_check.py`` all run this list through :func:`run_case`. A case's ``op`` is the row
``verify`` reports it in: an op of :data:`~sparseconv.testing.conformance.OPS`, or a kernel group of
:data:`KERNEL_OPS`.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..backends import load_backend, use_backend
from . import kernel_checks as K
from . import scale as S
from .calls import KernelCalls, first_difference
from .compare import max_relative_error, relative_norm_error, tolerance
from .conformance import Case, run_dense, run_sparse, standard_cases
from .threads import control_for

QUANTITIES = ("out", "dx", "dw", "db")
LABEL = {"out": "out", "dx": "dX", "dw": "dW", "db": "db"}
# The kernel that computes each quantity of a convolution case (db is a column sum above the interface).
KERNEL_OF = {"conv": {"out": "conv_forward", "dx": "conv_forward on the transposed map", "dw": "conv_weight_grad"},
             "depthwise": {"out": "depthwise_forward", "dx": "depthwise_forward on the transposed map",
                           "dw": "depthwise_weight_grad"}}
# What a case is compared with (all but "threads" by default): "dense" (float64 vs the dense twins),
# "reference" (float32 vs the reference backend), "repeat" (every kernel call twice, bitwise equal),
# "threads" (the float32 run at 1 and at N threads, bitwise equal; see threads.py).
AGAINST = ("dense", "reference", "repeat")
CHECKS = AGAINST + ("threads",)
# Kernel groups, in report order. "conv_kernels" (the convolution kernels called directly, on maps of
# every kind and channel counts that leave partial tiles) is for the tests and gpu_check; "scale"
# (float32 at 10^5-10^6 rows against float64 ground truth, sparseconv.testing.scale) only runs when asked.
KERNEL_OPS = ("index", "kernel_maps", "segment_sum", "pointwise", "empty_inputs", "conv_kernels", "scale")


@dataclass(frozen=True)
class Sizes:
    """How much of each kernel group a run covers."""
    sites: tuple  # site sets (kernel_checks.SITES) of the table checks
    kernels: tuple  # submanifold kernel sizes of neighbor_table
    dilations: tuple
    down: tuple  # strided geometries (kernel_checks.DOWN_GEOMETRIES) of down_table
    conv_sites: tuple  # site sets of the kernel-level convolutions
    segments: tuple  # (rows, segments, channels) of segment_sum
    pointwise: tuple  # (rows, channels) of gelu, layer_norm, grn and their gradients


FULL = Sizes(sites=tuple(K.SITES), kernels=(1, 3, 5), dilations=(1, 2), down=tuple(K.DOWN_GEOMETRIES),
             conv_sites=("b2_odd", "b1_dense", "b3_sparse", "single"),
             segments=((0, 0, 3), (0, 4, 2), (1, 1, 1), (50, 5, 3), (3000, 7, 5), (2500, 1, 33)),
             pointwise=((0, 3), (1, 1), (257, 7), (5000, 32)))
QUICK = Sizes(sites=("b2_odd", "empty", "single"), kernels=(3,), dilations=(1,), down=("k2s2", "k3s2p1"),
              conv_sites=("b2_odd",), segments=((0, 0, 3), (1, 1, 1), (50, 5, 3), (3000, 7, 5)),
              pointwise=((0, 3), (257, 7), (5000, 32)))
HASH_SIZES = (0, 1, 7, 300, 3000)
CONV_CHANNELS = ((1, 1), (3, 5), (16, 32), (33, 17))
CONV_MAPS = ("subm_k1_d1", "subm_k3_d1", "subm_k3_d2", "subm_k5_d1", "down_k2s2", "inverse_k2s2", "down_k3s2p1")


@dataclass(frozen=True)
class KernelCase:
    """One kernel-level check: ``check(backend, **kwargs)``, reported in row ``op``."""
    op: str
    name: str  # an identifier, unique in the suite (the test id)
    label: str  # the words a report names it by
    check: Callable
    kwargs: dict


@dataclass
class Result:
    """What one case measured on a backend (errors are relative, see :mod:`~sparseconv.testing.compare`).

    An error is NaN when the result held NaN, and None when its shape was wrong (``shapes`` says how).
    """
    dense: dict = field(default_factory=dict)  # quantity -> float64 error vs the dense twin
    reference: dict = field(default_factory=dict)  # quantity -> float32 error vs the reference backend
    shapes: dict = field(default_factory=dict)  # quantity -> "shape (a) != (b)" where the shape was wrong
    bitwise: bool | None = None  # every kernel call repeated bitwise equal (None: not compared)
    threads: bool | None = None  # the float32 run bitwise equal at 1 and N threads (None: not compared)
    scale: dict = field(default_factory=dict)  # scale tier: kernel output -> (error, budget)
    problems: list = field(default_factory=list)  # every tolerance exceeded, in words
    failed: set = field(default_factory=set)  # the checks that failed: CHECKS, "dtype", "kernel", "scale"

    @property
    def passed(self) -> bool:
        return not self.problems

    def problem(self, check: str, text: str):
        self.failed.add(check)
        self.problems.append(text)


# --- running a case ---------------------------------------------------------------------------------

def run_case(backend, case, against=AGAINST, threads=None) -> Result:
    """Run ``case`` (a convolution :class:`Case` or a :class:`KernelCase`) on ``backend`` (an object or
    a name), compared with what ``against`` names (see :data:`AGAINST`; a float32 result must also
    stay float32). A kernel case always runs its whole check against the reference, repeated kernel by
    kernel if ``"repeat"`` is asked for. ``"threads"`` reruns the float32 cases at the two thread counts
    of ``threads`` (a :class:`~sparseconv.testing.threads.ThreadControl`; default: the backend's).
    Errors the backend raises (other than a failed comparison) propagate."""
    be = load_backend(backend) if isinstance(backend, str) else backend
    if "threads" in against and threads is None:
        threads = control_for(be)
    if "threads" not in against or not threads.runs:
        threads = None
    if isinstance(case, KernelCase):
        return _run_kernel_case(be, case, against, threads)
    return _run_conv_case(be, case, against, threads)


def _run_kernel_case(be, case: KernelCase, against, threads) -> Result:
    result = Result()
    if case.op == "scale":  # accuracy only: each kernel once, at full size
        return _run_check(be, case, result, be)
    calls = KernelCalls(be, repeat="repeat" in against)
    checked = _run_check(be, case, Result(), calls)
    if "repeat" in against:
        result.bitwise = not calls.mismatches
    for mismatch in calls.mismatches:  # first: a value check after a differing repeat may fail because of it
        result.problem("repeat", str(mismatch))
    for problem in checked.problems:
        result.problem("kernel", problem)
    if threads is not None and case.kwargs.get("dtype") is np.float32:
        records = []
        for n in threads.counts:
            records.append([])
            with threads.threads(n):
                _run_check(be, case, Result(), KernelCalls(be, record=records[-1]))
        _judge_threads(result, records, threads)
    return result


def _run_check(be, case: KernelCase, result: Result, calls) -> Result:
    with use_backend(calls) as selected:
        try:
            result.scale = case.check(selected, **case.kwargs) or {}
        except AssertionError as err:
            if kernel_that_raised(err, be) is not None:  # the backend's own assert: a crash, not a comparison
                raise
            result.scale = getattr(err, "errors", {})  # a scale check's measurements (OverBudget)
            result.problem("scale" if case.op == "scale" else "kernel", str(err))
    return result


def _judge_threads(result: Result, records, threads, prefix=""):
    n1, n2 = threads.counts
    mismatch = first_difference(records[0], records[1], (f"{n1} thread", f"{n2} threads"))
    result.threads = mismatch is None
    if mismatch is not None:
        result.problem("threads", f"{prefix}{mismatch}")


def kernel_that_raised(err: BaseException, backend):
    """The name of the backend method (kernel) ``err`` came out of, or None if it was raised elsewhere."""
    frame = kernel_frame(err, backend)
    return None if frame is None else frame.tb_frame.f_code.co_name


def kernel_frame(err: BaseException, backend):
    """The traceback entry of the outermost backend method ``err`` passed through, or None."""
    tb = err.__traceback__
    while tb is not None:  # the outermost frame of a backend method: the kernel called
        if tb.tb_frame.f_locals.get("self") is backend:
            return tb
        tb = tb.tb_next
    return None


def where_raised(err: BaseException, backend) -> str:
    """``file:line`` of the line of the backend's own code that raised ``err`` (or called what raised
    it): the innermost frame, below the kernel, in a module that defines the backend's class or one of
    its bases; else the innermost frame of all. "" when there is no traceback."""
    tb = kernel_frame(err, backend) or err.__traceback__
    if tb is None:
        return ""
    files = {_source_file(cls) for cls in type(backend).__mro__ if cls is not object}
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    mine = [f for f in frames if _same_file(f[0], files)]
    filename, line = (mine or frames)[-1]
    return f"{_short_path(filename)}:{line}"


def _source_file(cls):
    try:
        return os.path.realpath(inspect.getfile(cls))
    except (TypeError, OSError):
        return None


def _same_file(filename, files) -> bool:
    return os.path.realpath(filename) in files


def _short_path(filename: str) -> str:
    """``filename`` relative to the working directory when it lies below it."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if rel.startswith(os.pardir) else rel


def _run_conv_case(be, case: Case, against, threads) -> Result:
    result = Result()
    kernels = KERNEL_OF["depthwise" if case.op == "depthwise" else "conv"]
    if "dense" in against:
        case64 = dataclasses.replace(case, dtype=np.float64, arrays={})
        got, want = run_sparse(case64, be), run_dense(case64)
        result.dense = _errors(result, got, want, max_relative_error, "float64 vs dense twin", kernels)
        _judge(result, "dense", result.dense, "float64 vs dense twin", tolerance(np.float64, "conv"), kernels)
    if "repeat" in against or "reference" in against or threads is not None:
        case32 = dataclasses.replace(case, dtype=np.float32, arrays={})
        calls = KernelCalls(be, repeat="repeat" in against)
        got = run_sparse(case32, calls)
        if "repeat" in against:
            result.bitwise = not calls.mismatches
            for mismatch in calls.mismatches:
                result.problem("repeat", f"float32: {mismatch}")
        wrong_dtype = [f"{LABEL[q]} is {got[q].dtype}" for q in QUANTITIES if got[q].dtype != np.float32]
        if wrong_dtype:
            result.problem("dtype", f"float32 inputs gave {', '.join(wrong_dtype)}")
        if threads is not None:
            records = []
            for n in threads.counts:
                records.append([])
                with threads.threads(n):
                    run_sparse(case32, KernelCalls(be, record=records[-1]))
            _judge_threads(result, records, threads, "float32: ")
        if "reference" in against:
            want = run_sparse(case32, "reference")
            result.reference = _errors(result, got, want, relative_norm_error, "float32 vs reference", kernels)
            _judge(result, "reference", result.reference, "float32 vs reference", tolerance(np.float32, "conv"),
                   kernels)
    return result


def _name(q, kernels):
    return f"{LABEL[q]} ({kernels[q]})" if q in kernels else LABEL[q]


def _errors(result: Result, got: dict, want: dict, measure, what: str, kernels) -> dict:
    """``measure(got[q], want[q])`` per quantity; None (and a problem) where the shapes differ."""
    errors = {}
    for q in QUANTITIES:
        g, w = np.shape(got[q]), np.shape(want[q])
        if g != w:
            errors[q] = None
            result.shapes[q] = f"shape {g} != {w}"
            result.problem("shape", f"{what}: {_name(q, kernels)} shape {g} != {w}")
        else:
            errors[q] = measure(got[q], want[q])
    return errors


def _judge(result: Result, check: str, errors: dict, what: str, tol: float, kernels):
    bad = [f"{_name(q, kernels)} {errors[q]:.1e}" for q in QUANTITIES
           if errors[q] is not None and not errors[q] <= tol]  # NaN fails too
    if bad:
        result.problem(check, f"{what} {', '.join(bad)} > {tol:.0e}")


# --- the case list ----------------------------------------------------------------------------------

def cases(quick: bool = False, seed: int = 0, scale: bool = False) -> list:
    """Every case of the suite: the convolution cases (``seed`` draws their volumes; ``quick`` keeps
    about a third), then the kernel-level cases at the :data:`QUICK` or :data:`FULL` sizes, then (if
    ``scale``) the scale tier."""
    sizes = QUICK if quick else FULL
    return (standard_cases(seed=seed, quick=quick) + _index_cases() + _map_cases(sizes)
            + _segment_cases(sizes) + _pointwise_cases(sizes) + _empty_cases() + _conv_kernel_cases(sizes)
            + (scale_cases() if scale else []))


# (sites, Cin, Cout) of the scale-tier convolutions, (sites, C) of the depthwise ones, (rows, segments,
# C) of segment_sum, (rows, C, samples) of the pointwise kernels
SCALE_CONV = ((100_000, 64, 64), (1_000_000, 8, 8))
SCALE_DEPTHWISE = ((1_000_000, 16),)
SCALE_SEGMENTS = ((1_000_000, 1, 16), (1_000_000, 1000, 16))
SCALE_POINTWISE = ((250_000, 64, 8),)


def scale_cases():
    """The scale tier (:mod:`sparseconv.testing.scale`): float32 vs float64 ground truth, row "scale"."""
    out = [KernelCase("scale", f"scale_conv_n{n}_{cin}x{cout}", f"conv_forward+weight_grad {n} sites C={cin}->{cout}",
                      S.check_scale_conv, dict(n_sites=n, cin=cin, cout=cout)) for n, cin, cout in SCALE_CONV]
    out += [KernelCase("scale", f"scale_depthwise_n{n}_c{c}", f"depthwise_forward+weight_grad {n} sites C={c}",
                       S.check_scale_depthwise, dict(n_sites=n, channels=c)) for n, c in SCALE_DEPTHWISE]
    out += [KernelCase("scale", f"scale_segment_sum_n{n}_s{s}_c{c}", f"segment_sum N={n} S={s} C={c}",
                       S.check_scale_segment_sum, dict(n_rows=n, n_segments=s, channels=c))
            for n, s, c in SCALE_SEGMENTS]
    out += [KernelCase("scale", f"scale_pointwise_n{n}_c{c}", f"gelu, layer_norm, grn (+grads) N={n} C={c} S={s}",
                       S.check_scale_pointwise, dict(n_rows=n, channels=c, n_segments=s))
            for n, c, s in SCALE_POINTWISE]
    return out


def _dtype_names():
    return [(dtype, np.dtype(dtype).name) for dtype in K.DTYPES]


def _index_cases():
    return [KernelCase("index", f"hash_n{n}", f"build_index+lookup n={n}", K.check_hash, dict(n=n))
            for n in HASH_SIZES]


def _map_cases(sizes: Sizes):
    out = []
    for sites in sizes.sites:
        for k in sizes.kernels:
            for d in sizes.dilations:
                out.append(KernelCase("kernel_maps", f"neighbor_table_{sites}_k{k}_d{d}",
                                      f"neighbor_table+mirror {sites} k={k} d={d}", K.check_neighbor_table,
                                      dict(sites=sites, kernel_size=k, dilation=d)))
                out.append(KernelCase("kernel_maps", f"submanifold_map_{sites}_k{k}_d{d}",
                                      f"submanifold_map {sites} k={k} d={d}", K.check_submanifold_map,
                                      dict(sites=sites, kernel_size=k, dilation=d)))
        out.append(KernelCase("kernel_maps", f"transpose_table_{sites}", f"transpose_table {sites}",
                              K.check_transpose_table, dict(sites=sites)))
        for g in sizes.down:
            out.append(KernelCase("kernel_maps", f"down_table_{sites}_{g}", f"down_table {sites} {g}",
                                  K.check_down_table, dict(sites=sites, geometry=g)))
    return out


def _segment_cases(sizes: Sizes):
    return [KernelCase("segment_sum", f"segment_sum_n{n}_s{s}_c{c}_{dt}", f"segment_sum N={n} S={s} C={c} {dt}",
                       K.check_segment_sum, dict(n_rows=n, n_segments=s, channels=c, dtype=dtype))
            for dtype, dt in _dtype_names() for n, s, c in sizes.segments]


def _pointwise_cases(sizes: Sizes):
    return [KernelCase("pointwise", f"pointwise_n{n}_c{c}_{dt}", f"gelu, layer_norm, grn (+grads) N={n} C={c} {dt}",
                       K.check_pointwise, dict(n_rows=n, channels=c, dtype=dtype))
            for dtype, dt in _dtype_names() for n, c in sizes.pointwise]


def _empty_cases():
    return [KernelCase("empty_inputs", f"zero_rows_{dt}", f"zero rows {dt}", K.check_zero_rows, dict(dtype=dtype))
            for dtype, dt in _dtype_names()]


def _conv_kernel_cases(sizes: Sizes):
    """conv and depthwise kernels on every map of CONV_MAPS; the b2_odd sites also at channel counts
    that leave a partial tile in every dimension."""
    out = []
    for dtype, dt in _dtype_names():
        for sites in sizes.conv_sites:
            for map_name in CONV_MAPS:
                if sites != "b2_odd":
                    pairs, widths = ((3, 5),), (7,)
                else:
                    pairs = CONV_CHANNELS if map_name == "subm_k3_d1" else ((3, 5), (33, 17))
                    widths = (1, 7, 16, 40)  # 16: the Numba backend's register tiles
                out += [KernelCase("conv_kernels", f"conv_{sites}_{map_name}_{cin}x{cout}_{dt}",
                                   f"conv_forward+weight_grad {map_name} on {sites} C={cin}->{cout} {dt}", K.check_conv,
                                   dict(sites=sites, map_name=map_name, cin=cin, cout=cout, dtype=dtype))
                        for cin, cout in pairs]
                out += [KernelCase("conv_kernels", f"depthwise_{sites}_{map_name}_c{c}_{dt}",
                                   f"depthwise_forward+weight_grad {map_name} on {sites} C={c} {dt}",
                                   K.check_depthwise, dict(sites=sites, map_name=map_name, channels=c, dtype=dtype))
                        for c in widths]
    return out
