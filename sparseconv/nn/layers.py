"""Layers with the names and arguments people know from spconv / PyTorch.

All take a :class:`~sparseconv.SparseTensor` and return one. Pointwise layers (Linear, norms,
activations, Dropout) also accept a plain ``(N, C)`` Tensor or array.

Weights: conv ``(K, in_channels, out_channels)``, depthwise ``(K, channels)``, Linear PyTorch's
``(out_features, in_features)``. Initial values come from :mod:`sparseconv.init` (seeded); pass
``init="trunc_normal"`` for the ConvNeXt scheme (std 0.02, biases 0).
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import init as I
from ..backends import get_backend
from ..coords import as_triple
from .module import Module, Parameter


def _param(array, dtype):
    return Parameter(get_backend().xp.asarray(array, dtype=dtype))


def _init_weight_bias(shape, fan_in, bias, init, dtype, rng, bias_shape):
    if init == "trunc_normal":
        w = I.trunc_normal(shape, 0.02, rng=rng, dtype=dtype)
        b = np.zeros(bias_shape, dtype) if bias else None
    elif init == "default":
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        w = I.uniform(shape, bound, rng=rng, dtype=dtype)
        b = I.uniform(bias_shape, bound, rng=rng, dtype=dtype) if bias else None
    else:
        raise ValueError(f"init must be 'default' or 'trunc_normal', got {init!r}")
    return _param(w, dtype), (None if b is None else _param(b, dtype))


class _ConvBase(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, init,
                 dtype, rng, depthwise=False):
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = as_triple(kernel_size, "kernel_size")
        self.stride = as_triple(stride, "stride")
        self.padding = as_triple(padding, "padding")
        self.dilation = as_triple(dilation, "dilation")
        K = int(np.prod(self.kernel_size))
        if depthwise:
            shape, fan_in = (K, self.in_channels), K
        else:
            shape, fan_in = (K, self.in_channels, self.out_channels), K * self.in_channels
        self.weight, self.bias = _init_weight_bias(shape, fan_in, bias, init, dtype, rng, (self.out_channels,))

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            s += f", stride={self.stride}"
        if self.padding != (0, 0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias is not None else ", bias=False")


class SubMConv3d(_ConvBase):
    """Submanifold convolution: output sites = input sites (odd ``kernel_size``).

    ``groups=in_channels=out_channels`` makes it depthwise (weight ``(K, C)``); other groupings
    are not supported. ``stride`` and ``padding`` exist for spconv compatibility and must be 1, 0
    (a submanifold conv pads implicitly: missing neighbours count as zero).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, init="default", dtype=np.float32, rng=None, indice_key=None):
        if as_triple(stride, "stride") != (1, 1, 1):
            raise ValueError("SubMConv3d: stride must be 1 (use SparseConv3d to downsample)")
        self.groups = int(groups)
        depthwise = self.groups != 1
        if depthwise and not (self.groups == in_channels == out_channels):
            raise ValueError(f"SubMConv3d: groups must be 1 or in_channels == out_channels, got groups={groups}, "
                             f"in_channels={in_channels}, out_channels={out_channels}")
        super().__init__(in_channels, out_channels, kernel_size, 1, padding, dilation, bias, init, dtype, rng,
                         depthwise)

    def forward(self, x):
        fn = F.depthwise_subm_conv3d if self.groups != 1 else F.subm_conv3d
        return fn(x, self.weight, self.bias, self.kernel_size, self.dilation)

    def extra_repr(self):
        return super().extra_repr() + (f", groups={self.groups}" if self.groups != 1 else "")


class DepthwiseSubMConv3d(SubMConv3d):
    """Depthwise submanifold convolution: ``SubMConv3d(channels, channels, k, groups=channels)``."""

    def __init__(self, channels, kernel_size=3, dilation=1, bias=True, init="default", dtype=np.float32,
                 rng=None):
        super().__init__(channels, channels, kernel_size, 1, 0, dilation, channels, bias, init, dtype, rng)


class SparseConv3d(_ConvBase):
    """Strided ("down") / regular sparse convolution with dense-convolution output sites."""

    def __init__(self, in_channels, out_channels, kernel_size=2, stride=2, padding=0, dilation=1, bias=True,
                 init="default", dtype=np.float32, rng=None, indice_key=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, init, dtype, rng)

    def forward(self, x):
        return F.sparse_conv3d(x, self.weight, self.bias, self.kernel_size, self.stride, self.padding,
                               self.dilation)


class SparseInverseConv3d(_ConvBase):
    """Inverse of a ``SparseConv3d`` with the same ``kernel_size``/``stride``: back to its finer sites.

    ``stride`` defaults to ``kernel_size`` (the U-Net's k2 s2).
    """

    def __init__(self, in_channels, out_channels, kernel_size=2, stride=None, padding=0, dilation=1, bias=True,
                 init="default", dtype=np.float32, rng=None, indice_key=None):
        super().__init__(in_channels, out_channels, kernel_size, kernel_size if stride is None else stride,
                         padding, dilation, bias, init, dtype, rng)

    def forward(self, x):
        return F.sparse_inverse_conv3d(x, self.weight, self.bias, self.kernel_size, self.stride, self.padding,
                                       self.dilation)


class Linear(Module):
    """Pointwise ``x @ Wᵀ + b`` on every voxel (a 1×1×1 convolution). ``weight (out, in)``."""

    def __init__(self, in_features, out_features, bias=True, init="default", dtype=np.float32, rng=None):
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight, self.bias = _init_weight_bias((self.out_features, self.in_features), self.in_features, bias,
                                                   init, dtype, rng, (self.out_features,))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias is not None else ", bias=False")


class LayerNorm(Module):
    """LayerNorm over each voxel's channels (eps 1e-6 by default, as in ConvNeXt)."""

    def __init__(self, normalized_shape, eps=1e-6, elementwise_affine=True, dtype=np.float32):
        self.normalized_shape, self.eps = int(normalized_shape), eps
        xp = get_backend().xp
        self.weight = Parameter(xp.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(xp.zeros(self.normalized_shape, dtype)) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class BatchNorm(Module):
    """BatchNorm over all active sites (PyTorch's ``BatchNorm1d`` applied to the feature rows)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32):
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        xp = get_backend().xp
        self.weight = Parameter(xp.ones(self.num_features, dtype)) if affine else None
        self.bias = Parameter(xp.zeros(self.num_features, dtype)) if affine else None
        self.track_running_stats = track_running_stats
        if track_running_stats:
            self.register_buffer("running_mean", xp.zeros(self.num_features, dtype))
            self.register_buffer("running_var", xp.ones(self.num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x):
        track = self.track_running_stats
        out = F.batch_norm(x, self.weight, self.bias,
                           self.running_mean if track else None, self.running_var if track else None,
                           training=self.training or not track, momentum=self.momentum, eps=self.eps)
        if self.training and track:
            self.num_batches_tracked = self.num_batches_tracked + 1
        return out

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


BatchNorm1d = BatchNorm


class GRN(Module):
    """ConvNeXt-V2 global response normalisation over each sample's active voxels; γ, β start at 0."""

    def __init__(self, dim, eps=1e-6, dtype=np.float32):
        self.dim, self.eps = int(dim), eps
        xp = get_backend().xp
        self.gamma = Parameter(xp.zeros(self.dim, dtype))
        self.beta = Parameter(xp.zeros(self.dim, dtype))

    def forward(self, x):
        return F.grn(x, self.gamma, self.beta, self.eps)

    def extra_repr(self):
        return f"{self.dim}"


class GELU(Module):
    """Exact (erf) GELU."""

    def forward(self, x):
        return F.gelu(x)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class AvgPool(Module):
    """Average over each window's active inputs (k2 s2 by default); sites as ``SparseConv3d``'s."""

    def __init__(self, kernel_size=2, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.avg_pool(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}"


SparseAvgPool3d = AvgPool


class Dropout(Module):
    """Zero features with probability ``p`` in training (scaled by 1/(1-p)); identity in eval.

    Draws from its own generator, seeded from :mod:`sparseconv.init` when built (or ``seed``).
    """

    def __init__(self, p=0.5, seed=None):
        self.p = p
        self.rng = np.random.default_rng(I.get_rng().integers(2**63) if seed is None else seed)

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self):
        return f"p={self.p}"


class Identity(Module):
    def forward(self, x):
        return x
