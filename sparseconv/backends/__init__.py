"""The kernel interface: the few things that differ per device, and the backend registry.

Everything above this package (kernel-map builders, convolutions, autograd, modules) is written
once against :class:`Backend`; a backend only supplies the array module and these kernels.

Shapes and dtypes (N = rows, K = kernel offsets, C = channels):

* ``build_index(keys)``: keys ``(N,) int64`` (packed coords) → an opaque index object.
* ``lookup(index, queries)``: ``(M,) int64`` → ``(M,) int32`` row of each query, -1 if absent.
* ``neighbor_table(index, coords, spatial_shape, offsets)``: coords ``(N, 4) int32`` in canonical
  order (the index built from their keys), offsets ``(J, 3) int32`` row-major → ``(N, J) int32``
  row of ``coords[i] + offsets[j]`` (-1 if absent or outside the grid).
* ``mirror_table(lower, K)``: lower half ``(N, K//2)`` of a submanifold table → full ``(N, K)``
  (centre = identity, column ``K-1-j`` = the transpose of column ``j``).
* ``transpose_table(neighbors, n_in)``: ``(n_out, K)`` → ``(n_in, K)`` with outputs and inputs swapped.
* ``down_table(coords, offsets, stride, padding, out_shape)``: the map of a strided ("down") conv.
  coords ``(N, 4) int32`` (unique; any row order), offsets ``(K, 3) int32`` window positions,
  stride / padding / out_shape three ints each → ``(out_coords (M, 4) int32, table (M, K) int32)``.
  Input i feeds output o through offset k iff ``coords[i, 1:] + padding - offsets[k] == o * stride``
  (component-wise, exact division), ``0 <= o < out_shape`` and the batch is the same; ``table[o, k]``
  is that i, -1 if none. Output sites are every o fed by at least one input, in canonical order
  (sorted by packed key). ``out_coords`` and ``table`` are ``xp`` arrays.
* ``conv_forward(feats, weight, kmap)``: ``(n_in, Cin)``, ``(K, Cin, Cout)`` → ``(n_out, Cout)``,
  ``out[o] = Σ_k feats[nbr[o, k]] @ weight[k]``.
* ``conv_weight_grad(feats, grad_out, kmap)``: → ``(K, Cin, Cout)``, ``Σ_pairs feats[i]ᵀ grad_out[o]``.
* ``depthwise_forward(feats, weight, kmap)``: ``(n_in, C)``, ``(K, C)`` → ``(n_out, C)``.
* ``depthwise_weight_grad(feats, grad_out, kmap)``: → ``(K, C)``.
* ``segment_sum(values, seg_ptr)``: ``(N, C)``, ``(S+1,) int64`` row boundaries → ``(S, C)``.
* ``gelu(x)`` / ``gelu_grad(x, grad)``: exact (erf) GELU of ``(N, C)`` and its backward, to the
  dtype's precision.
* ``layer_norm(x, weight, bias, eps)``: each row over its channels → ``(y, xhat, rstd (N, 1))``.
* ``layer_norm_grad(grad, xhat, rstd, weight)``: its backward → ``(gx (N, C), gw (C,), gb (C,))``,
  ``gw = Σ_rows grad·xhat``, ``gb = Σ_rows grad`` (``weight`` may be ``None``: ones).
* ``grn(x, gamma, beta, seg_ptr, eps)``: ConvNeXt-V2 GRN of ``(N, C)`` rows split into samples by
  ``seg_ptr (S+1,) int64`` (``seg_ptr[0] = 0``, ``seg_ptr[-1] = N``) → ``(y (N, C), G (S, C))``,
  ``G`` the per-sample channel L2 norms, ``y = x·(γ·G/(mean_c G + eps) + 1) + β``.
* ``grn_grad(grad, x, gamma, G, seg_ptr, eps)``: its backward → ``(dx (N, C), dγ (C,), dβ (C,))``.

Input gradients need no kernel of their own: ``dX = conv_forward(dY, Wᵀ, kmap.transposed())``.

Optional members, used where a backend has them (the array module's expression otherwise):
``submanifold_table`` (the whole table of a centred kernel in one call, see
:func:`sparseconv.kmap.submanifold_map`); ``add(a, b)``: two ``(N, C)`` arrays of one dtype →
``a + b``; ``column_sum(x)``: ``(N, C)`` → ``x.sum(axis=0)`` (bias gradients). The last two must
give NumPy's bits; a backend defines them to run faster than NumPy's expressions (``add`` on all
its threads, ``column_sum`` in one pass over the rows).
``conv_forward_bias(feats, weight, kmap, bias)`` and ``depthwise_forward_bias(...)``: the forward
kernels with ``bias (Cout,)`` (or None) added to each output row before it is stored — the bits of
``conv_forward(...) + bias``, without a second pass over the output.
"""
from __future__ import annotations

import importlib
import os
from typing import Protocol, runtime_checkable


@runtime_checkable
class Backend(Protocol):
    name: str
    xp: object  # the array module: numpy or cupy

    def build_index(self, keys): ...
    def lookup(self, index, queries): ...
    def neighbor_table(self, index, coords, spatial_shape, offsets): ...
    def mirror_table(self, lower, K): ...
    def transpose_table(self, neighbors, n_in): ...
    def down_table(self, coords, offsets, stride, padding, out_shape): ...
    def conv_forward(self, feats, weight, kmap): ...
    def conv_weight_grad(self, feats, grad_out, kmap): ...
    def depthwise_forward(self, feats, weight, kmap): ...
    def depthwise_weight_grad(self, feats, grad_out, kmap): ...
    def segment_sum(self, values, seg_ptr): ...
    def gelu(self, x): ...
    def gelu_grad(self, x, grad): ...
    def layer_norm(self, x, weight, bias, eps): ...
    def layer_norm_grad(self, grad, xhat, rstd, weight): ...
    def grn(self, x, gamma, beta, seg_ptr, eps): ...
    def grn_grad(self, grad, x, gamma, G, seg_ptr, eps): ...


# name -> "module:attribute" of the backend instance (imported on first use)
_KNOWN = {
    "reference": "sparseconv.backends.reference:backend",
    "numba": "sparseconv.backends.numba_cpu:backend",
    "cupy": "sparseconv.backends.cupy_gpu:backend",
}
_INSTALL_HINT = {"numba": "pip install numba", "cupy": "pip install sparseconv[gpu]"}
_registered: dict[str, Backend] = {}
_current: Backend | None = None


def register_backend(name: str, backend: Backend) -> None:
    """Make a user backend selectable by ``set_backend(name)`` (and by ``python -m sparseconv.verify``)."""
    missing = [m for m in Backend.__annotations__.keys() | _protocol_methods() if not hasattr(backend, m)]
    if missing:
        raise TypeError(f"backend {name!r} lacks {sorted(missing)} of the kernel interface")
    _registered[name] = backend


def _protocol_methods():
    return {m for m in vars(Backend) if not m.startswith("_") and callable(getattr(Backend, m))}


def available_backends() -> list[str]:
    """Names that ``set_backend`` accepts on this machine."""
    names = []
    for name in list(_KNOWN) + list(_registered):
        try:
            load_backend(name)
            names.append(name)
        except ImportError:
            pass
    return list(dict.fromkeys(names))


def load_backend(name: str) -> Backend:
    """The backend called ``name``; ``ImportError`` with an install hint if it cannot load here."""
    if name in _registered:
        return _registered[name]
    if name not in _KNOWN:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(set(_KNOWN) | set(_registered))}")
    module, attr = _KNOWN[name].split(":")
    try:
        backend = getattr(importlib.import_module(module), attr)
    except ImportError as err:
        hint = _INSTALL_HINT.get(name, "")
        hint = "" if hint in str(err) else f" {hint}"
        raise ImportError(f"sparseconv backend {name!r} is not available here ({err}).{hint}") from err
    _registered[name] = backend
    return backend


def set_backend(name: str) -> Backend:
    """Select the backend every op uses from now on: ``"reference"``, ``"numba"``, ``"cupy"``."""
    global _current
    _current = load_backend(name)
    return _current


def get_backend() -> Backend:
    """The selected backend (default: ``$SPARSECONV_BACKEND``, else numba, else the reference)."""
    global _current
    if _current is None:
        wanted = os.environ.get("SPARSECONV_BACKEND")
        if wanted:
            _current = load_backend(wanted)
        else:
            try:
                _current = load_backend("numba")
            except ImportError:
                _current = load_backend("reference")
    return _current


class use_backend:
    """Context manager: ``with use_backend("reference"): ...`` restores the previous backend after."""

    def __init__(self, name_or_backend):
        self.target = name_or_backend

    def __enter__(self):
        global _current
        self.previous = get_backend()
        _current = self.target if not isinstance(self.target, str) else load_backend(self.target)
        return _current

    def __exit__(self, *exc):
        global _current
        _current = self.previous
