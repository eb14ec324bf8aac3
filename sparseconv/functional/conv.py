"""Convolution maths on a kernel map, forward and backward — backend-agnostic.

These functions work on raw arrays and a :class:`~sparseconv.kmap.KernelMap`; the autograd
``Function`` wrappers and the layers are built on top of them. Shapes:

    feats    (n_in, Cin)        float32|float64
    weight   (K, Cin, Cout)     dense conv: (K, C) depthwise
    bias     (Cout,) or None
    out      (n_out, Cout)

The backward passes need only two kernels per op kind: the forward kernel itself, run on the
transposed map with the transposed weight (that is dX), and a weight-gradient kernel (dW).
"""
from __future__ import annotations

from ..backends import get_backend
from ..device import check_backend_device
from ._util import column_sum, forward_plus_bias


def _check(feats, weight, kmap, depthwise: bool):
    be = get_backend()
    check_backend_device(feats, be, "conv: features")
    check_backend_device(weight, be, "conv: weights")
    if feats.ndim != 2 or feats.shape[0] != kmap.n_in:
        raise ValueError(f"conv: feats must be ({kmap.n_in}, C) for this kernel map, got {feats.shape}")
    if weight.shape[:2] != (kmap.K, feats.shape[1]) or weight.ndim != (2 if depthwise else 3):
        kind = "(K, C)" if depthwise else "(K, Cin, Cout)"
        raise ValueError(f"conv: weight must be {kind} with K={kmap.K}, C(in)={feats.shape[1]}, got {weight.shape}")
    if weight.dtype != feats.dtype:
        raise ValueError(f"conv: weight dtype {weight.dtype} differs from feats dtype {feats.dtype}")


def conv_forward(feats, weight, kmap, bias=None):
    """``out[o] = Σ_k feats[nbr[o, k]] @ weight[k] (+ bias)`` → ``(n_out, Cout)``."""
    _check(feats, weight, kmap, depthwise=False)
    return forward_plus_bias("conv_forward", feats, weight, kmap, bias)


def conv_backward(grad_out, feats, weight, kmap, bias=True, input_grad=True):
    """Gradients ``(d_feats (n_in, Cin), d_weight (K, Cin, Cout), d_bias (Cout,))``; ``d_bias`` is
    None for a convolution without bias (``bias=False``), ``d_feats`` None when the input needs no
    gradient (``input_grad=False``, e.g. the first layer: its pass is skipped)."""
    be = get_backend()
    grad_in = (be.conv_forward(grad_out, weight.transpose(0, 2, 1).copy(), kmap.transposed())
               if input_grad else None)
    grad_w = be.conv_weight_grad(feats, grad_out, kmap)
    return grad_in, grad_w, column_sum(grad_out) if bias else None


def depthwise_forward(feats, weight, kmap, bias=None):
    """``out[o, c] = Σ_k weight[k, c] · feats[nbr[o, k], c] (+ bias)`` → ``(n_out, C)``."""
    _check(feats, weight, kmap, depthwise=True)
    return forward_plus_bias("depthwise_forward", feats, weight, kmap, bias)


def depthwise_backward(grad_out, feats, weight, kmap, bias=True, input_grad=True):
    """Gradients ``(d_feats (n_in, C), d_weight (K, C), d_bias (C,))``; ``d_bias`` / ``d_feats`` are
    None as in :func:`conv_backward`."""
    be = get_backend()
    grad_in = be.depthwise_forward(grad_out, weight, kmap.transposed()) if input_grad else None
    grad_w = be.depthwise_weight_grad(feats, grad_out, kmap)
    return grad_in, grad_w, column_sum(grad_out) if bias else None


# --------------------------------------------------------------------------------------------
# Autograd wrappers and the SparseTensor-level convolutions built on the maths above.
# --------------------------------------------------------------------------------------------

from ..autograd import Function  # noqa: E402
from .. import kmap as _km  # noqa: E402
from ._util import split as _split  # noqa: E402


class Conv(Function):
    """``out = conv(feats, weight, kmap) + bias`` — every dense-weight sparse convolution.

    The same Function serves submanifold, down (strided) and inverse convolutions: only the
    kernel map differs.
    """

    @staticmethod
    def forward(ctx, feats, weight, bias, kmap):
        ctx.save(feats, weight)
        ctx.kmap, ctx.has_bias = kmap, bias is not None
        return conv_forward(feats, weight, kmap, bias)

    @staticmethod
    def backward(ctx, grad):
        feats, weight = ctx.saved
        grads = conv_backward(grad, feats, weight, ctx.kmap, bias=ctx.has_bias,
                              input_grad=ctx.needs_input_grad[0])
        return (*grads, None)  # nothing for the kernel map


class DepthwiseConv(Function):
    """``out[:, c] = Σ_k weight[k, c] · feats[nbr[:, k], c] + bias[c]``."""

    @staticmethod
    def forward(ctx, feats, weight, bias, kmap):
        ctx.save(feats, weight)
        ctx.kmap, ctx.has_bias = kmap, bias is not None
        return depthwise_forward(feats, weight, kmap, bias)

    @staticmethod
    def backward(ctx, grad):
        feats, weight = ctx.saved
        grads = depthwise_backward(grad, feats, weight, ctx.kmap, bias=ctx.has_bias,
                                   input_grad=ctx.needs_input_grad[0])
        return (*grads, None)  # nothing for the kernel map


def _kernel_size(K: int, kernel_size):
    if kernel_size is not None:
        return kernel_size
    k = int(round(K ** (1 / 3)))
    if k ** 3 != K:
        raise ValueError(f"cannot infer a cubic kernel_size from K={K} weight rows; pass kernel_size")
    return k


def subm_conv3d(x, weight, bias=None, kernel_size=None, dilation=1):
    """Submanifold convolution: output sites = ``x``'s sites. ``weight (K, Cin, Cout)``."""
    kmap = _km.submanifold_map(x, _kernel_size(weight.shape[0], kernel_size), dilation)
    return x.replace_feats(Conv.apply(x.feats_tensor, weight, bias, kmap))


def depthwise_subm_conv3d(x, weight, bias=None, kernel_size=None, dilation=1):
    """Depthwise submanifold convolution (``groups = channels``). ``weight (K, C)``."""
    kmap = _km.submanifold_map(x, _kernel_size(weight.shape[0], kernel_size), dilation)
    return x.replace_feats(DepthwiseConv.apply(x.feats_tensor, weight, bias, kmap))


def sparse_conv3d(x, weight, bias=None, kernel_size=None, stride=1, padding=0, dilation=1):
    """Strided ("down") / regular sparse convolution with dense-convolution semantics.

    Output sites: every position whose window holds an active input (k2 s2: ``unique(c // 2)``).
    """
    kmap, coarse = _km.down_map(x, _kernel_size(weight.shape[0], kernel_size), stride, padding, dilation)
    return coarse.replace_feats(Conv.apply(x.feats_tensor, weight, bias, kmap))


def sparse_inverse_conv3d(x, weight, bias=None, kernel_size=None, stride=None, padding=0, dilation=1):
    """Inverse (transposed) convolution back onto the finer sites a ``sparse_conv3d`` came from.

    ``stride`` defaults to ``kernel_size``. Equals dense ``conv_transpose3d`` read at the fine sites,
    with dense weight ``W.reshape(k, k, k, Cin, Cout).transpose(3, 4, 0, 1, 2)``.
    """
    kernel_size = _kernel_size(weight.shape[0], kernel_size)
    kmap, fine = _km.inverse_map(x, kernel_size, kernel_size if stride is None else stride, padding, dilation)
    return fine.replace_feats(Conv.apply(x.feats_tensor, weight, bias, kmap))


def conv_with_map(x, weight, bias, kmap, out_sites=None):
    """Any convolution on a prebuilt kernel map; result on ``out_sites`` (default ``x``'s sites)."""
    sparse, feats = _split(x)
    fn = DepthwiseConv if weight.ndim == 2 else Conv
    out = fn.apply(feats, weight, bias, kmap)
    target = out_sites if out_sites is not None else sparse
    return out if target is None else target.replace_feats(out)
