"""The dense twin of :class:`kidney.model.KidneyNet`: the same layers and the same weights, run on
the whole dense grid — the baseline the paper's sparse-vs-dense claim is measured against.

Every layer is a ``sparseconv.dense`` op on a ``(1, C, D, H, W)`` array: depthwise 3×3×3 conv,
per-voxel Linear as a GEMM over voxels, LayerNorm and GRN over the grid, k2 s2 conv and transposed
conv. Zeros stand at the inactive sites of the input; the network then fills the grid, exactly as
a dense network would.

``mask=True`` re-zeroes the inactive sites after every layer (the sites of each level are the
k2 s2 "any child active" pooling of the finer level's). With it, the dense twin must equal the
sparse network at the active sites — that is how the tests check that the two are twins.
"""
from __future__ import annotations

import numpy as np

from sparseconv import dense

from .model import KidneyNet


class DenseKidneyNet:
    """Dense forward of a :class:`KidneyNet`'s weights.

    Args:
        model: the sparse network whose ``state_dict`` (and config) to run densely.
    """

    def __init__(self, model: KidneyNet):
        self.config = model.config
        self.p = {name: np.asarray(value) for name, value in model.state_dict().items()}

    # --- the four primitives of KidneyNet.forward, densely -----------------------------------
    def _ln(self, prefix, x):
        return dense.layer_norm_channels(x, self.p[prefix + ".weight"], self.p[prefix + ".bias"], 1e-6)

    def _linear(self, prefix, x):
        return dense.linear(x, self.p[prefix + ".weight"].T, self.p.get(prefix + ".bias"))

    def _block(self, prefix, x, mask):
        k = self.config.kernel_size
        w = self.p[prefix + ".dwconv.weight"]  # (K, C)
        y = dense.depthwise_conv3d(x, w.T.reshape(-1, k, k, k), self.p.get(prefix + ".dwconv.bias"), padding=k // 2)
        y = self._masked(self._ln(prefix + ".norm", self._masked(y, mask)), mask)
        y = dense.gelu(self._linear(prefix + ".pwconv1", y))
        y = dense.grn(self._masked(y, mask), self.p[prefix + ".grn.gamma"], self.p[prefix + ".grn.beta"],
                      mask=mask, eps=1e-6)
        y = self._linear(prefix + ".pwconv2", self._masked(y, mask))
        return self._masked(x + y, mask)

    def _blocks(self, prefix, n, x, mask):
        for i in range(n):
            x = self._block(f"{prefix}.{i}", x, mask)
        return x

    def _down(self, level, x, mask):
        w = self.p[f"downs.{level}.1.weight"]  # (8, Cin, Cout)
        x = self._masked(self._ln(f"downs.{level}.0", x), mask)
        x = np.pad(x, [(0, 0), (0, 0)] + [(0, s % 2) for s in x.shape[2:]])  # ceil(D / 2) grid
        cin, cout = w.shape[1:]
        return dense.conv3d(x, w.reshape(2, 2, 2, cin, cout).transpose(4, 3, 0, 1, 2),
                            self.p.get(f"downs.{level}.1.bias"), stride=2)

    def _up(self, level, x, mask, fine_shape):
        w = self.p[f"ups.{level}.1.weight"]  # (8, Cin, Cout)
        x = self._masked(self._ln(f"ups.{level}.0", x), mask)
        cin, cout = w.shape[1:]
        y = dense.conv_transpose3d(x, w.reshape(2, 2, 2, cin, cout).transpose(3, 4, 0, 1, 2),
                                   self.p.get(f"ups.{level}.1.bias"), stride=2)
        return y[(slice(None), slice(None)) + tuple(slice(0, s) for s in fine_shape)]

    def _head(self, level, x, mask):
        x = self._masked(self._ln(f"heads.{level}.norm", x), mask)
        if self.config.head_block:
            x = self._block(f"heads.{level}.block", x, mask)
        return self._masked(self._linear(f"heads.{level}.out", x), mask)

    @staticmethod
    def _masked(x, mask):
        return x if mask is None else x * mask[:, None]

    # --- forward -------------------------------------------------------------------------------
    def forward(self, x, mask=None, n_outputs=1):
        """Logits ``[(1, 3, D, H, W), …]`` at 1, ½, … resolution, as ``KidneyNet.forward``.

        Args:
            x: ``(1, C_in, D, H, W)`` float32 input, zeros at inactive sites.
            mask: ``None`` (a plain dense network) or ``(1, D, H, W)`` bool active sites, to zero
                the inactive sites after every layer (for comparing with the sparse network).
        """
        cfg = self.config
        masks = _level_masks(mask, len(cfg.dims))
        stem_w = self.p["stem.0.weight"][0]  # (1, Cin, Cout) kernel of a 1×1×1 conv
        x = self._masked(dense.linear(x, stem_w), masks[0])
        x = self._masked(self._ln("stem.1", x), masks[0])
        skips = []
        for level in range(len(cfg.dims)):
            x = self._blocks(f"encoders.{level}", cfg.depths[level], x, masks[level])
            if level < len(cfg.dims) - 1:
                skips.append(x)
                x = self._masked(self._down(level, x, masks[level]), masks[level + 1])
        outputs = {}
        for level in reversed(range(len(cfg.dims) - 1)):
            x = self._up(level, x, masks[level + 1], skips[level].shape[2:]) + skips[level]
            x = self._blocks(f"decoders.{level}", cfg.decoder_depth, self._masked(x, masks[level]), masks[level])
            if level < n_outputs:
                outputs[level] = self._head(level, x, masks[level])
        return [outputs[i] for i in range(n_outputs)]

    __call__ = forward


def _level_masks(mask, levels):
    """Active sites of every level: level l+1 is active where any of its 2×2×2 children is."""
    if mask is None:
        return [None] * levels
    masks = [np.asarray(mask, bool)]
    for _ in range(levels - 1):
        m = masks[-1]
        m = np.pad(m, [(0, 0)] + [(0, s % 2) for s in m.shape[1:]])
        b, d, h, w = m.shape
        masks.append(m.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2).any(axis=(2, 4, 6)))
    return masks
