"""The one conformance suite of a backend: its case list and the function that runs a case.

:func:`cases` lists every case, quick or full: first the convolution cases of
:func:`~sparseconv.testing.conformance.standard_cases` (each op through the kernel-map builders and
``sparseconv.functional``), then the kernel-level checks of :mod:`sparseconv.testing.kernel_checks`.
:func:`run_case` runs one on a backend and returns a :class:`Result`: its errors against each oracle
and, in words, every tolerance of :mod:`sparseconv.testing.compare` it exceeds.

The tests (every backend of the ``backend`` fixture), ``python -m sparseconv.verify`` and
``benchmarks/gpu_check.py`` all run this list through :func:`run_case`. A case's ``op`` is the row
``verify`` reports it in: an op of :data:`~sparseconv.testing.conformance.OPS`, or a kernel group of
:data:`KERNEL_OPS`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..backends import use_backend
from . import kernel_checks as K
from .compare import bitwise_equal, max_relative_errors, relative_norm_error, tolerance
from .conformance import Case, run_dense, run_sparse, standard_cases

QUANTITIES = ("out", "dx", "dw", "db")
LABEL = {"out": "out", "dx": "dX", "dw": "dW", "db": "db"}
AGAINST = ("dense", "reference", "repeat")  # what a convolution case is compared with (all by default)
# Kernel groups, in report order. The last, "conv_kernels" (the convolution kernels called directly,
# on maps of every kind and channel counts that leave partial tiles), is for the tests and gpu_check.
KERNEL_OPS = ("index", "kernel_maps", "segment_sum", "pointwise", "empty_inputs", "conv_kernels")


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
    """What one case measured on a backend (errors are relative, see :mod:`~sparseconv.testing.compare`)."""
    dense: dict = field(default_factory=dict)  # quantity -> float64 error vs the dense twin
    reference: dict = field(default_factory=dict)  # quantity -> float32 error vs the reference backend
    bitwise: bool | None = None  # two float32 runs bitwise equal (None: not compared)
    problems: list = field(default_factory=list)  # every tolerance exceeded, in words

    @property
    def passed(self) -> bool:
        return not self.problems


# --- running a case ---------------------------------------------------------------------------------

def run_case(backend, case, against=AGAINST) -> Result:
    """Run ``case`` (a convolution :class:`Case` or a :class:`KernelCase`) on ``backend`` (an object or
    a name). A convolution case is compared with what ``against`` names: ``"dense"`` (float64 vs the
    dense twins), ``"reference"`` (float32 vs the reference backend), ``"repeat"`` (two float32 runs
    bitwise equal); a float32 result must stay float32. A kernel case always runs its whole check.
    Errors the backend raises (other than a failed comparison) propagate."""
    if isinstance(case, KernelCase):
        return _run_kernel_case(backend, case)
    return _run_conv_case(backend, case, against)


def _run_kernel_case(be, case: KernelCase) -> Result:
    with use_backend(be) as be:
        try:
            case.check(be, **case.kwargs)
        except AssertionError as err:
            if kernel_that_raised(err, be) is not None:  # the backend's own assert: a crash, not a comparison
                raise
            return Result(problems=[str(err)])
    return Result()


def kernel_that_raised(err: BaseException, backend):
    """The name of the backend method (kernel) ``err`` came out of, or None if it was raised elsewhere."""
    tb = err.__traceback__
    while tb is not None:  # the outermost frame of a backend method: the kernel called
        if tb.tb_frame.f_locals.get("self") is backend:
            return tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return None


def _run_conv_case(be, case: Case, against) -> Result:
    result = Result()
    if "dense" in against:
        case64 = dataclasses.replace(case, dtype=np.float64, arrays={})
        result.dense = max_relative_errors(run_sparse(case64, be), run_dense(case64))
        _judge(result, result.dense, "float64 vs dense twin", tolerance(np.float64, "conv"))
    if "repeat" in against or "reference" in against:
        case32 = dataclasses.replace(case, dtype=np.float32, arrays={})
        got = run_sparse(case32, be)
        if "repeat" in against:
            result.bitwise = all(bitwise_equal(got[q], again) for q, again in run_sparse(case32, be).items())
            if not result.bitwise:
                result.problems.append("two float32 runs differ bitwise (not deterministic)")
        wrong_dtype = [f"{LABEL[q]} is {got[q].dtype}" for q in QUANTITIES if got[q].dtype != np.float32]
        if wrong_dtype:
            result.problems.append(f"float32 inputs gave {', '.join(wrong_dtype)}")
        if "reference" in against:
            want = run_sparse(case32, "reference")
            result.reference = {q: relative_norm_error(got[q], want[q]) for q in QUANTITIES}
            _judge(result, result.reference, "float32 vs reference", tolerance(np.float32, "conv"))
    return result


def _judge(result: Result, errors: dict, what: str, tol: float):
    bad = [f"{LABEL[q]} {errors[q]:.1e}" for q in QUANTITIES if not errors[q] <= tol]  # NaN fails too
    if bad:
        result.problems.append(f"{what} {', '.join(bad)} > {tol:.0e}")


# --- the case list ----------------------------------------------------------------------------------

def cases(quick: bool = False, seed: int = 0) -> list:
    """Every case of the suite: the convolution cases (``seed`` draws their volumes; ``quick`` keeps
    about a third), then the kernel-level cases at the :data:`QUICK` or :data:`FULL` sizes."""
    sizes = QUICK if quick else FULL
    return (standard_cases(seed=seed, quick=quick) + _index_cases() + _map_cases(sizes)
            + _segment_cases(sizes) + _pointwise_cases(sizes) + _empty_cases() + _conv_kernel_cases(sizes))


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
        out.append(KernelCase("kernel_maps", f"transpose_table_{sites}", f"transpose_table {sites}",
                              K.check_transpose_table, dict(sites=sites)))
        out.append(KernelCase("kernel_maps", f"submanifold_map_{sites}_k3", f"submanifold_map {sites} k=3",
                              K.check_submanifold_map, dict(sites=sites, kernel_size=3, dilation=1)))
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
                    widths = (1, 7, 40)
                out += [KernelCase("conv_kernels", f"conv_{sites}_{map_name}_{cin}x{cout}_{dt}",
                                   f"conv_forward+weight_grad {map_name} on {sites} C={cin}->{cout} {dt}", K.check_conv,
                                   dict(sites=sites, map_name=map_name, cin=cin, cout=cout, dtype=dtype))
                        for cin, cout in pairs]
                out += [KernelCase("conv_kernels", f"depthwise_{sites}_{map_name}_c{c}_{dt}",
                                   f"depthwise_forward+weight_grad {map_name} on {sites} C={c} {dt}",
                                   K.check_depthwise, dict(sites=sites, map_name=map_name, channels=c, dtype=dtype))
                        for c in widths]
    return out
