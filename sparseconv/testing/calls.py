"""A backend seen through the suite: every kernel call repeated, or recorded, kernel by kernel.

:class:`KernelCalls` wraps a backend and stands in for it (``use_backend(KernelCalls(be))``): its
attributes are the backend's, and each of the 17 kernels of :data:`KERNELS` goes through it (and each
optional kernel of :data:`OPTIONAL_KERNELS` the backend has).

* ``repeat=True`` — each kernel is called twice with the same inputs, and the two results must be
  bitwise equal (determinism); the first call must also leave its array inputs as they were (a
  kernel that writes into its inputs corrupts the caller's arrays, and would make the second call
  differ for the wrong reason). ``build_index`` returns an opaque object that cannot be compared: it
  is built twice, and every kernel that takes an index (``lookup``, ``neighbor_table``) is then
  called once on each of the two, so the two indexes must give the same answers bitwise.
* ``record=[]`` — every result (brought to the host, copied) is appended as ``(kernel, results)``;
  :func:`first_difference` compares two such records (the thread-invariance check).

Each repeat that differs is kept in ``mismatches`` (a :class:`KernelMismatch`, an ``AssertionError``
that names the kernel; the first per kernel) and the run goes on with the first call's result.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..device import to_device
from .compare import bitwise_equal

KERNELS = ("build_index", "lookup", "neighbor_table", "mirror_table", "transpose_table", "down_table",
           "conv_forward", "conv_weight_grad", "depthwise_forward", "depthwise_weight_grad", "segment_sum",
           "gelu", "gelu_grad", "layer_norm", "layer_norm_grad", "grn", "grn_grad")
# used above the interface only where the backend has them
OPTIONAL_KERNELS = ("submanifold_table", "add", "column_sum", "conv_forward_bias", "depthwise_forward_bias")
# names of the parts of a kernel's result, where it returns several arrays
OUTPUTS = {"down_table": ("out_coords", "table"), "layer_norm": ("y", "xhat", "rstd"),
           "layer_norm_grad": ("gx", "gw", "gb"), "grn": ("y", "G"), "grn_grad": ("dx", "dgamma", "dbeta")}


class KernelMismatch(AssertionError):
    """Two results of one kernel that must be bitwise equal are not (or a kernel changed its input)."""

    def __init__(self, kernel: str, message: str):
        super().__init__(f"{kernel}: {message}")
        self.kernel = kernel


class _TwinIndex:
    """The two indexes ``build_index`` returned for the same keys (``repeat`` mode)."""

    def __init__(self, first, second):
        self.pair = (first, second)


class KernelCalls:
    """``backend`` with its kernels repeated (``repeat``) and/or recorded (``record``); see the module."""

    def __init__(self, backend, repeat: bool = False, record: list | None = None):
        self.backend, self.repeat, self.record = backend, repeat, record
        self.mismatches = []  # KernelMismatch of each repeat that differed, the first per kernel

    def _mismatch(self, kernel, message):
        if not any(m.kernel == kernel for m in self.mismatches):
            self.mismatches.append(KernelMismatch(kernel, message))

    def __getattr__(self, name):
        if name in KERNELS or (name in OPTIONAL_KERNELS and hasattr(self.backend, name)):
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        return getattr(self.backend, name)

    def _call(self, kernel, args, kwargs):
        fn = getattr(self.backend, kernel)
        if not self.repeat:
            out = fn(*_pick(args, 0), **_pick(kwargs, 0))
        else:
            inputs = list(enumerate(args)) + list(kwargs.items())
            before = [(key, a, _host_copy(a)) for key, a in inputs if _is_array(a)]
            out = fn(*_pick(args, 0), **_pick(kwargs, 0))
            changed = [(key, a, old) for key, a, old in before if not bitwise_equal(a, old)]
            for key, a, old in changed:
                name = _arg_name(fn, key) if isinstance(key, int) else key
                self._mismatch(kernel, f"changed its input {name!r} in place ({describe_difference(a, old)})")
            if not changed:  # (a second call on changed inputs proves nothing)
                again = fn(*_pick(args, 1), **_pick(kwargs, 1))
                if kernel == "build_index":
                    return _TwinIndex(out, again)
                diff = difference(kernel, out, again)
                if diff:
                    self._mismatch(kernel, f"two calls with the same inputs differ bitwise ({diff})")
            elif kernel == "build_index":
                return _TwinIndex(out, out)
        if self.record is not None and kernel != "build_index":
            self.record.append((kernel, [_host_copy(a) for a in _parts(out)]))
        return out


def _is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype")


def _host_copy(a):
    return np.array(to_device(a, "cpu"), copy=True)


def _pick(args, which):
    """``args`` (a tuple or a dict) with each twin index replaced by its first or second index."""
    if isinstance(args, dict):
        return {k: a.pair[which] if isinstance(a, _TwinIndex) else a for k, a in args.items()}
    return tuple(a.pair[which] if isinstance(a, _TwinIndex) else a for a in args)


def _parts(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _arg_name(fn, pos) -> str:
    try:
        return list(inspect.signature(fn).parameters)[pos]
    except (TypeError, ValueError, IndexError):
        return f"#{pos}"


def describe_difference(a, b) -> str:
    """Where two arrays differ, in words: shape, dtype, or how many rows (of an (N, C) array) or entries."""
    a, b = np.asarray(to_device(a, "cpu")), np.asarray(to_device(b, "cpu"))
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} != {b.dtype}"
    if a.ndim == 0:
        return f"{a} != {b}"
    same = a == b
    if a.dtype.kind in "fc":
        same |= np.isnan(a) & np.isnan(b)
    differ = ~same
    differ = differ.any(axis=1) if a.ndim == 2 else differ.reshape(-1)
    unit = "rows" if a.ndim == 2 else "entries"
    if not differ.any():  # equal values, other bits (0.0 and -0.0, NaN payloads)
        return "equal values, different bits (signed zeros or NaN payloads)"
    return f"{int(differ.sum())} of {len(differ)} {unit} differ"


def difference(kernel: str, first, second) -> str:
    """"" if two results of ``kernel`` are bitwise equal, else which part differs and how."""
    parts1, parts2 = _parts(first), _parts(second)
    if len(parts1) != len(parts2):
        return f"{len(parts1)} results != {len(parts2)}"
    names = OUTPUTS.get(kernel, ("result",) * len(parts1))
    for name, a, b in zip(names, parts1, parts2):
        if not bitwise_equal(a, b):
            return (f"{name}: " if len(parts1) > 1 else "") + describe_difference(a, b)
    return ""


def first_difference(record_a: list, record_b: list, what: tuple) -> KernelMismatch | None:
    """Compare two records of the same computation, call by call: the first kernel whose results
    differ as a :class:`KernelMismatch` (``what`` names the two runs), or None."""
    for call, ((kernel_a, out_a), (kernel_b, out_b)) in enumerate(zip(record_a, record_b)):
        if kernel_a != kernel_b:
            return KernelMismatch(kernel_a, f"call {call + 1} was {kernel_a} at {what[0]}, {kernel_b} at {what[1]}")
        diff = difference(kernel_a, out_a, out_b)
        if diff:
            return KernelMismatch(kernel_a, f"{what[0]} and {what[1]} differ bitwise ({diff})")
    if len(record_a) != len(record_b):
        return KernelMismatch("?", f"{len(record_a)} kernel calls at {what[0]}, {len(record_b)} at {what[1]}")
    return None
