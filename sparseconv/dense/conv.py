"""Dense 3-D convolutions in plain NumPy — the test oracle and the benchmark baseline.

Layouts and semantics follow ``torch.nn.functional`` (channels first, cross-correlation)::

    x, out                   (B, C, D, H, W)           float32 | float64 (preserved)
    conv3d weight            (Cout, Cin, kz, ky, kx)
    conv_transpose3d weight  (Cin, Cout, kz, ky, kx)   (Cin = channels of *its* input)
    depthwise weight         (C, kz, ky, kx)
    bias                     (Cout,) or None

``stride``, ``padding``, ``dilation`` and ``output_padding`` are an int or a 3-tuple (z, y, x).

How it works: every op loops over the kernel taps ``k = (kz, ky, kx)`` only (row-major, kz
slowest — the order of §2). For one tap, the input voxels read by *all* outputs form one strided
view of the zero-padded input, ``xp[k*d : k*d + s*(n_out-1) + 1 : s]`` per axis, so the tap is a
single matmul over channels. Internally the arrays are channels-last, ``(B, D, H, W, C)``, so that
``np.tensordot(view, W_k, axes=1)`` contracts the channel axis in one GEMM.
"""
from __future__ import annotations

import numpy as np

__all__ = ["conv3d", "conv3d_backward", "depthwise_conv3d", "depthwise_conv3d_backward",
           "conv_transpose3d", "conv_transpose3d_backward", "conv_output_shape"]

_SPATIAL = (0, 1, 2, 3)  # the non-channel axes of a channels-last (B, D, H, W, C) array


# ----------------------------------------------------------------------------- helpers

def _triple(v, name: str) -> tuple:
    """``2 → (2, 2, 2)``; a 3-sequence is checked and returned as a tuple of ints."""
    t = (v, v, v) if np.ndim(v) == 0 else tuple(v)
    if len(t) != 3 or any(int(i) != i or i < 0 for i in t):
        raise ValueError(f"{name} must be a non-negative int or a 3-tuple of them, got {v!r}")
    return tuple(int(i) for i in t)


def _params(stride, padding, dilation):
    s, p, d = _triple(stride, "stride"), _triple(padding, "padding"), _triple(dilation, "dilation")
    if min(s) < 1 or min(d) < 1:
        raise ValueError(f"stride and dilation must be >= 1, got stride={s}, dilation={d}")
    return s, p, d


def conv_output_shape(in_shape, kernel, stride=1, padding=0, dilation=1) -> tuple:
    """Spatial output shape of :func:`conv3d`: ``(n + 2p - d(k-1) - 1) // s + 1`` per axis."""
    s, p, d = _params(stride, padding, dilation)
    out = tuple((n + 2 * pi - di * (k - 1) - 1) // si + 1
                for n, k, si, pi, di in zip(in_shape, kernel, s, p, d))
    if min(out) < 1:
        raise ValueError(f"conv: input {tuple(in_shape)} is too small for kernel {tuple(kernel)}, "
                         f"padding {p}, dilation {d} (output would be {out})")
    return out


def _taps(kernel, stride, dilation, out_shape):
    """Yield ``(k, view)`` for every kernel tap ``k = (kz, ky, kx)`` (row-major).

    ``view`` indexes a channels-last padded input ``(B, Dp, Hp, Wp, C)``; ``xp[view]`` has shape
    ``(B, *out_shape, C)`` and holds, for each output voxel, the input voxel that tap ``k`` reads.
    """
    for k in np.ndindex(*kernel):
        yield k, (slice(None),) + tuple(slice(ki * di, ki * di + si * (ni - 1) + 1, si)
                                        for ki, si, di, ni in zip(k, stride, dilation, out_shape))


def _last(a):
    """(B, C, D, H, W) → contiguous (B, D, H, W, C) (copied once, so no tap copies it again)."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _first(a):
    """(B, D, H, W, C) → contiguous (B, C, D, H, W)."""
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _pad(a, p):
    """Zero-pad the spatial axes of a channels-last array by ``p = (pz, py, px)`` on both sides."""
    return np.pad(a, ((0, 0),) + tuple((pi, pi) for pi in p) + ((0, 0),))


def _crop(a, p):
    """Inverse of :func:`_pad`: drop ``p`` voxels at both ends of each spatial axis."""
    return a[(slice(None),) + tuple(slice(pi, a.shape[i + 1] - pi) for i, pi in enumerate(p))]


def _check(x, w, ndim_w, what):
    if x.ndim != 5 or w.ndim != ndim_w:
        raise ValueError(f"{what}: x must be (B, C, D, H, W) and the weight {ndim_w}-D, "
                         f"got x {x.shape}, weight {w.shape}")


# ----------------------------------------------------------------------------- conv3d

def conv3d(x, w, bias=None, stride=1, padding=0, dilation=1):
    """Dense 3-D cross-correlation, exactly ``torch.nn.functional.conv3d`` (groups=1).

    x (B, Cin, D, H, W), w (Cout, Cin, kz, ky, kx), bias (Cout,) or None
    → out (B, Cout, Do, Ho, Wo) with ``Do = (D + 2p - d(kz-1) - 1) // s + 1`` (etc.), dtype of x·w.
    ``out[b, o, z] = bias[o] + Σ_{i,k} w[o, i, k] · xpad[b, i, z*s + k*d]`` (per axis).
    """
    _check(x, w, 5, "conv3d")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"conv3d: weight expects Cin={w.shape[1]}, x has {x.shape[1]} channels")
    s, p, d = _params(stride, padding, dilation)
    out_shape = conv_output_shape(x.shape[2:], w.shape[2:], s, p, d)
    xp = _pad(_last(x), p)                                        # (B, Dp, Hp, Wp, Cin)
    out = np.zeros((x.shape[0],) + out_shape + (w.shape[0],), np.result_type(x, w))
    for k, view in _taps(w.shape[2:], s, d, out_shape):
        out += np.tensordot(xp[view], w[(..., *k)].T, axes=1)    # (.., Cin) @ (Cin, Cout)
    if bias is not None:
        out += bias
    return _first(out)


def conv3d_backward(grad_out, x, w, stride=1, padding=0, dilation=1):
    """Gradients of :func:`conv3d` → ``(dx (B,Cin,D,H,W), dw (Cout,Cin,kz,ky,kx), db (Cout,))``.

    grad_out (B, Cout, Do, Ho, Wo) is dL/d(out). Per tap: ``dxpad[view] += g @ W_k`` (scatter back
    through the same strided view) and ``dW_k = Σ_voxels g ⊗ xpad[view]``.
    """
    s, p, d = _params(stride, padding, dilation)
    g = _last(grad_out)                                           # (B, Do, Ho, Wo, Cout)
    xp = _pad(_last(x), p)
    dxp = np.zeros(xp.shape, np.result_type(grad_out, w))
    dw = np.zeros(w.shape, np.result_type(grad_out, x))
    for k, view in _taps(w.shape[2:], s, d, grad_out.shape[2:]):
        dxp[view] += np.tensordot(g, w[(..., *k)], axes=1)       # (.., Cout) @ (Cout, Cin)
        dw[(..., *k)] = np.tensordot(g, xp[view], axes=(_SPATIAL, _SPATIAL))
    return _first(_crop(dxp, p)), dw, g.sum(axis=_SPATIAL)


# ----------------------------------------------------------------------------- depthwise

def depthwise_conv3d(x, w, bias=None, padding=0, dilation=1):
    """Depthwise 3-D conv (``conv3d`` with groups=C, stride 1), each channel its own kernel.

    x (B, C, D, H, W), w (C, kz, ky, kx), bias (C,) or None → out (B, C, Do, Ho, Wo),
    ``Do = D + 2p - d(kz-1)``; ``out[b, c, z] = bias[c] + Σ_k w[c, k] · xpad[b, c, z + k*d]``.
    """
    _check(x, w, 4, "depthwise_conv3d")
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"depthwise_conv3d: weight has C={w.shape[0]}, x has {x.shape[1]} channels")
    _, p, d = _params(1, padding, dilation)
    out_shape = conv_output_shape(x.shape[2:], w.shape[1:], 1, p, d)
    xp = _pad(_last(x), p)                                        # (B, Dp, Hp, Wp, C)
    out = np.zeros((x.shape[0],) + out_shape + (x.shape[1],), np.result_type(x, w))
    for k, view in _taps(w.shape[1:], (1, 1, 1), d, out_shape):
        out += xp[view] * w[(slice(None), *k)]                    # (.., C) * (C,)
    if bias is not None:
        out += bias
    return _first(out)


def depthwise_conv3d_backward(grad_out, x, w, padding=0, dilation=1):
    """Gradients of :func:`depthwise_conv3d` → ``(dx (B,C,D,H,W), dw (C,kz,ky,kx), db (C,))``."""
    _, p, d = _params(1, padding, dilation)
    g = _last(grad_out)                                           # (B, Do, Ho, Wo, C)
    xp = _pad(_last(x), p)
    dxp = np.zeros(xp.shape, np.result_type(grad_out, w))
    dw = np.zeros(w.shape, np.result_type(grad_out, x))
    for k, view in _taps(w.shape[1:], (1, 1, 1), d, grad_out.shape[2:]):
        dxp[view] += g * w[(slice(None), *k)]
        dw[(slice(None), *k)] = (g * xp[view]).sum(axis=_SPATIAL)
    return _first(_crop(dxp, p)), dw, g.sum(axis=_SPATIAL)


# ----------------------------------------------------------------------------- transposed

def _transpose_full_shape(in_shape, kernel, s, d, output_padding):
    """Uncropped transposed-conv extent ``(n-1)s + d(k-1) + 1 + output_padding`` per axis."""
    return tuple((n - 1) * si + di * (k - 1) + 1 + op
                 for n, k, si, di, op in zip(in_shape, kernel, s, d, output_padding))


def conv_transpose3d(x, w, bias=None, stride=1, padding=0, dilation=1, output_padding=0):
    """Dense transposed 3-D conv, exactly ``torch.nn.functional.conv_transpose3d`` (groups=1).

    x (B, Cin, D, H, W), w (Cin, Cout, kz, ky, kx), bias (Cout,) or None → out (B, Cout, Do, Ho, Wo)
    with ``Do = (D-1)s - 2p + d(kz-1) + output_padding + 1``. Each input voxel scatters
    ``x[b, :, z] @ w[:, :, k]`` to output ``z*s + k*d - p``. It is the adjoint of :func:`conv3d`
    in x: ``<conv3d(x, W), y> == <x, conv_transpose3d(y, W)>`` for the *same* array W.
    """
    _check(x, w, 5, "conv_transpose3d")
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"conv_transpose3d: weight expects Cin={w.shape[0]}, x has {x.shape[1]}")
    s, p, d = _params(stride, padding, dilation)
    op = _triple(output_padding, "output_padding")
    if any(o >= max(si, di) for o, si, di in zip(op, s, d)):
        raise ValueError(f"output_padding {op} must be smaller than stride {s} or dilation {d}")
    full = _transpose_full_shape(x.shape[2:], w.shape[2:], s, d, op)
    if any(f - 2 * pi < 1 for f, pi in zip(full, p)):
        raise ValueError(f"conv_transpose3d: padding {p} leaves no output (uncropped extent {full})")
    xl = _last(x)                                                 # (B, D, H, W, Cin)
    buf = np.zeros((x.shape[0],) + full + (w.shape[1],), np.result_type(x, w))
    for k, view in _taps(w.shape[2:], s, d, x.shape[2:]):
        buf[view] += np.tensordot(xl, w[(..., *k)], axes=1)      # (.., Cin) @ (Cin, Cout)
    out = _crop(buf, p)
    if bias is not None:
        out = out + bias
    return _first(out)


def conv_transpose3d_backward(grad_out, x, w, stride=1, padding=0, dilation=1):
    """Gradients of :func:`conv_transpose3d` → ``(dx (B,Cin,D,H,W), dw (Cin,Cout,k..), db (Cout,))``.

    The output padding is implied by ``grad_out``'s shape. Per tap the scatter becomes a gather:
    ``dx += gpad[view] @ W_k.T`` and ``dW_k = Σ_voxels x ⊗ gpad[view]``.
    """
    s, p, d = _params(stride, padding, dilation)
    gp = _pad(_last(grad_out), p)                                 # (B, full.., Cout)
    xl = _last(x)
    dx = np.zeros(xl.shape, np.result_type(grad_out, w))
    dw = np.zeros(w.shape, np.result_type(grad_out, x))
    for k, view in _taps(w.shape[2:], s, d, x.shape[2:]):
        dx += np.tensordot(gp[view], w[(..., *k)].T, axes=1)     # (.., Cout) @ (Cout, Cin)
        dw[(..., *k)] = np.tensordot(xl, gp[view], axes=(_SPATIAL, _SPATIAL))
    return _first(dx), dw, grad_out.sum(axis=(0, 2, 3, 4))
