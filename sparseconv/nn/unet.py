"""A ConvNeXt-V2 block and a small sparse U-Net built from the layers — the paper's design
(docs/design.md, Network) at any width and depth, small enough to train on a laptop.

Block (ConvNeXt-V2, "channels last" on each voxel's features)::

    x + Linear(4d→d)(GRN(GELU(Linear(d→4d)(LayerNorm(DepthwiseSubMConv3d(x))))))

U-Net: stem (SubMConv3d in→d₀ + LayerNorm) → per level: blocks, then LayerNorm + k2 s2 conv down;
decoder: LayerNorm + k2 s2 inverse conv up → **sum** with the encoder skip → blocks;
head: LayerNorm + Linear(d₀ → out) (the 1×1×1 conv, no bias).
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .layers import GELU, GRN, DepthwiseSubMConv3d, LayerNorm, Linear, SparseConv3d, SparseInverseConv3d, SubMConv3d
from .module import Module, ModuleList, Sequential


class ConvNeXtV2Block(Module):
    def __init__(self, dim, kernel_size=3, expansion=4, dtype=np.float32, init="trunc_normal"):
        self.dwconv = DepthwiseSubMConv3d(dim, kernel_size, dtype=dtype, init=init)
        self.norm = LayerNorm(dim, eps=1e-6, dtype=dtype)
        self.pwconv1 = Linear(dim, expansion * dim, dtype=dtype, init=init)
        self.act = GELU()
        self.grn = GRN(expansion * dim, dtype=dtype)
        self.pwconv2 = Linear(expansion * dim, dim, dtype=dtype, init=init)

    def forward(self, x):
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(self.dwconv(x))))))
        return F.add(x, y)


class SparseUNet(Module):
    """Sparse ConvNeXt-V2 U-Net with ``len(dims)`` levels; returns per-voxel logits on the input sites.

    Args:
        in_channels, out_channels: feature channels in, logits out.
        dims: channels per level, e.g. ``(16, 32, 64)``.
        depths: encoder blocks per level; ``decoder_depth`` blocks per decoder level.
        stem_kernel: kernel of the stem conv (1 = the paper's 1×1×1; 3 sees neighbours at once).
    """

    def __init__(self, in_channels, out_channels, dims=(16, 32, 64), depths=(1, 1, 1), decoder_depth=1,
                 kernel_size=3, stem_kernel=1, dtype=np.float32, init="trunc_normal"):
        if len(dims) != len(depths):
            raise ValueError(f"dims {dims} and depths {depths} must have the same length")
        kw = dict(dtype=dtype, init=init)
        self.stem = Sequential(SubMConv3d(in_channels, dims[0], stem_kernel, bias=False, **kw),
                               LayerNorm(dims[0], dtype=dtype))
        self.encoders = ModuleList(Sequential(*[ConvNeXtV2Block(d, kernel_size, **kw) for _ in range(n)])
                                   for d, n in zip(dims, depths))
        self.downs = ModuleList(Sequential(LayerNorm(a, dtype=dtype), SparseConv3d(a, b, 2, 2, **kw))
                                for a, b in zip(dims[:-1], dims[1:]))
        self.ups = ModuleList(Sequential(LayerNorm(b, dtype=dtype), SparseInverseConv3d(b, a, 2, **kw))
                              for a, b in zip(dims[:-1], dims[1:]))
        self.decoders = ModuleList(Sequential(*[ConvNeXtV2Block(d, kernel_size, **kw) for _ in range(decoder_depth)])
                                   for d in dims[:-1])
        self.head = Sequential(LayerNorm(dims[0], dtype=dtype), Linear(dims[0], out_channels, bias=False, **kw))

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.downs):
                skips.append(x)
                x = self.downs[level](x)
        for level in reversed(range(len(self.ups))):
            x = F.add(self.ups[level](x), skips[level])
            x = self.decoders[level](x)
        return self.head(x)
