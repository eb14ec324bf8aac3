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


def _check(feats, weight, kmap, depthwise: bool):
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
    out = get_backend().conv_forward(feats, weight, kmap)
    return out if bias is None else out + bias


def conv_backward(grad_out, feats, weight, kmap):
    """Gradients ``(d_feats (n_in, Cin), d_weight (K, Cin, Cout), d_bias (Cout,))``."""
    be = get_backend()
    grad_in = be.conv_forward(grad_out, weight.transpose(0, 2, 1).copy(), kmap.transposed())
    grad_w = be.conv_weight_grad(feats, grad_out, kmap)
    return grad_in, grad_w, grad_out.sum(axis=0)


def depthwise_forward(feats, weight, kmap, bias=None):
    """``out[o, c] = Σ_k weight[k, c] · feats[nbr[o, k], c] (+ bias)`` → ``(n_out, C)``."""
    _check(feats, weight, kmap, depthwise=True)
    out = get_backend().depthwise_forward(feats, weight, kmap)
    return out if bias is None else out + bias


def depthwise_backward(grad_out, feats, weight, kmap):
    """Gradients ``(d_feats (n_in, C), d_weight (K, C), d_bias (C,))``."""
    be = get_backend()
    grad_in = be.depthwise_forward(grad_out, weight, kmap.transposed())
    grad_w = be.depthwise_weight_grad(feats, grad_out, kmap)
    return grad_in, grad_w, grad_out.sum(axis=0)
