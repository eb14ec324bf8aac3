"""The kidney network run densely in PyTorch — what a user would otherwise run. Benchmarks only:
PyTorch is never needed to use or test sparseconv.

Written as the official ConvNeXt-V2 code is: depthwise conv channels-first, then channels-last for
LayerNorm, the two Linears, GELU and GRN. Same weights (``KidneyNet.state_dict``) as the sparse
network and the NumPy dense twin; ``benchmarks/bench_network.py`` checks it equals the NumPy twin.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class TorchDenseKidneyNet:
    def __init__(self, model, device="cpu"):
        self.config = model.config
        self.device = torch.device(device)
        self.p = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                  for k, v in model.state_dict().items()}

    def _ln(self, prefix, x_last):
        return F.layer_norm(x_last, x_last.shape[-1:], self.p[prefix + ".weight"], self.p[prefix + ".bias"], 1e-6)

    def _block(self, prefix, x):  # x: (1, C, D, H, W)
        k, c = self.config.kernel_size, x.shape[1]
        w = self.p[prefix + ".dwconv.weight"].T.reshape(c, 1, k, k, k)
        y = F.conv3d(x, w, self.p.get(prefix + ".dwconv.bias"), padding=k // 2, groups=c)
        y = self._ln(prefix + ".norm", y.permute(0, 2, 3, 4, 1))
        y = F.gelu(F.linear(y, self.p[prefix + ".pwconv1.weight"], self.p.get(prefix + ".pwconv1.bias")))
        gx = torch.linalg.vector_norm(y, dim=(1, 2, 3), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        y = self.p[prefix + ".grn.gamma"] * (y * nx) + self.p[prefix + ".grn.beta"] + y
        y = F.linear(y, self.p[prefix + ".pwconv2.weight"], self.p.get(prefix + ".pwconv2.bias"))
        return x + y.permute(0, 4, 1, 2, 3)

    def _blocks(self, prefix, n, x):
        for i in range(n):
            x = self._block(f"{prefix}.{i}", x)
        return x

    def _norm_first(self, prefix, x):
        return self._ln(prefix, x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def _down(self, level, x):
        w = self.p[f"downs.{level}.1.weight"]  # (8, Cin, Cout)
        x = self._norm_first(f"downs.{level}.0", x)
        x = F.pad(x, [p for s in reversed(x.shape[2:]) for p in (0, s % 2)])  # ceil(D / 2) grid
        w = w.reshape(2, 2, 2, *w.shape[1:]).permute(4, 3, 0, 1, 2)
        return F.conv3d(x, w, self.p.get(f"downs.{level}.1.bias"), stride=2)

    def _up(self, level, x, fine_shape):
        w = self.p[f"ups.{level}.1.weight"]
        x = self._norm_first(f"ups.{level}.0", x)
        w = w.reshape(2, 2, 2, *w.shape[1:]).permute(3, 4, 0, 1, 2)
        y = F.conv_transpose3d(x, w, self.p.get(f"ups.{level}.1.bias"), stride=2)
        return y[:, :, :fine_shape[0], :fine_shape[1], :fine_shape[2]]

    def _head(self, level, x):
        x = self._norm_first(f"heads.{level}.norm", x)
        if self.config.head_block:
            x = self._block(f"heads.{level}.block", x)
        return F.linear(x.permute(0, 2, 3, 4, 1), self.p[f"heads.{level}.out.weight"]).permute(0, 4, 1, 2, 3)

    @torch.no_grad()
    def forward(self, x, n_outputs=1):
        cfg = self.config
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        stem = self.p["stem.0.weight"][0]  # (Cin, Cout)
        x = F.linear(x.permute(0, 2, 3, 4, 1), stem.T)
        x = self._ln("stem.1", x).permute(0, 4, 1, 2, 3)
        skips = []
        for level in range(len(cfg.dims)):
            x = self._blocks(f"encoders.{level}", cfg.depths[level], x)
            if level < len(cfg.dims) - 1:
                skips.append(x)
                x = self._down(level, x)
        outputs = {}
        for level in reversed(range(len(cfg.dims) - 1)):
            x = self._up(level, x, skips[level].shape[2:]) + skips[level]
            x = self._blocks(f"decoders.{level}", cfg.decoder_depth, x)
            if level < n_outputs:
                outputs[level] = self._head(level, x).cpu().numpy()  # (a GPU run waits here)
        return [outputs[i] for i in range(n_outputs)]

    __call__ = forward
