"""The kidney network run densely in PyTorch — what a user would otherwise run. Benchmarks only:
PyTorch is never needed to use or test sparseconv.

``TorchDenseKidneyNet`` is the inference twin (``benchmarks/bench_network.py``); ``TorchTrainStep``
the training step of ``kidney.train`` run densely (``benchmarks/bench_train.py``).

Written as the official ConvNeXt-V2 code is: depthwise conv channels-first, then channels-last for
LayerNorm, the two Linears, GELU and GRN. Same weights (``KidneyNet.state_dict``) as the sparse
network and the NumPy dense twin; ``benchmarks/bench_network.py`` checks it equals the NumPy twin.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class TorchDenseKidneyNet:
    """``checkpoint=True``: every ConvNeXt block under activation checkpointing
    (``torch.utils.checkpoint``: its inner activations are recomputed in the backward instead of kept),
    the usual way to fit a dense 3D network's training step into memory, at the cost of a second
    forward through the blocks."""

    def __init__(self, model, device="cpu", requires_grad=False, checkpoint=False):
        self.config = model.config
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.p = {k: torch.from_numpy(np.array(v, dtype=np.float32)).to(self.device).requires_grad_(requires_grad)
                  for k, v in model.state_dict().items()}

    def _ln(self, prefix, x_last):
        return F.layer_norm(x_last, x_last.shape[-1:], self.p[prefix + ".weight"], self.p[prefix + ".bias"], 1e-6)

    def _block(self, prefix, x):  # x: (1, C, D, H, W)
        if self.checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(self._block_body, prefix, x, use_reentrant=False)
        return self._block_body(prefix, x)

    def _block_body(self, prefix, x):
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
        """``(1, Cin, D, H, W)`` NumPy array → ``n_outputs`` NumPy logits (1, ½, ... resolution)."""
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return [out.cpu().numpy() for out in self.logits(x, n_outputs)]  # (a GPU run waits here)

    __call__ = forward

    def logits(self, x, n_outputs=1):
        """Differentiable forward: a ``(1, Cin, D, H, W)`` tensor → ``n_outputs`` logit tensors."""
        cfg = self.config
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
                outputs[level] = self._head(level, x)
        return [outputs[i] for i in range(n_outputs)]


class TorchTrainStep:
    """One training step of ``kidney.train`` on the dense twin: forward, deep-supervised soft Dice over
    the active voxels, backward, AdamW (PyTorch's).

    The loss is the sparse trainer's (``kidney.train.loss_and_dice``) on the grid: at level l the
    active voxels are the k2 s2 "any child active" pooling of level l−1's (the sparse down conv's
    sites), the targets the mean over active children, and the soft Dice of each channel sums over
    active voxels only. AdamW groups as ``sparseconv.optim.param_groups``: weight decay on conv and
    Linear weights (arrays of 2 or more dimensions), none on biases, norms and GRN.

    Args:
        model: the sparse ``KidneyNet`` whose weights and config to start from.
        coords, feats, shape: the sparse input (``(N, 4)``, ``(N, Cin)``, ``(D, H, W)``), batch 1.
        targets: ``(N, 3)`` float32 HEC targets of the active voxels.
        checkpoint: run the blocks under activation checkpointing (:class:`TorchDenseKidneyNet`).
    """

    def __init__(self, model, coords, feats, shape, targets, ds_weights=(1.0, 0.5, 0.25), lr=5e-4,
                 betas=(0.9, 0.95), eps=1e-12, weight_decay=1e-5, device="cpu", checkpoint=False):
        self.net = TorchDenseKidneyNet(model, device, requires_grad=True, checkpoint=checkpoint)
        params = list(self.net.p.values())
        self.opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                     lr=lr, betas=betas, eps=eps)
        z, y, x = (torch.from_numpy(np.ascontiguousarray(coords[:, i], dtype=np.int64)) for i in (1, 2, 3))
        dev = self.net.device
        self.x = torch.zeros((1, feats.shape[1], *shape), device=dev)
        self.x[0][:, z, y, x] = torch.from_numpy(np.ascontiguousarray(feats.T, dtype=np.float32)).to(dev)
        self.mask = torch.zeros((1, 1, *shape), device=dev)
        self.mask[0, 0, z, y, x] = 1.0
        self.target = torch.zeros((1, targets.shape[1], *shape), device=dev)
        self.target[0][:, z, y, x] = torch.from_numpy(np.ascontiguousarray(targets.T, dtype=np.float32)).to(dev)
        self.ds_weights = ds_weights

    def step(self) -> float:
        """One step; returns the loss."""
        outs = self.net.logits(self.x, self.net.config.n_supervised)
        mask, target, loss = self.mask, self.target, 0.0
        for level, out in enumerate(outs):
            if level:  # the coarser level's sites and the mean target over their active children
                summed = F.avg_pool3d(target * mask, 2, 2, ceil_mode=True)
                count = F.avg_pool3d(mask, 2, 2, ceil_mode=True)
                mask = (count > 0).to(count.dtype)
                target = summed / count.clamp_min(1e-12) * mask
            w = self.ds_weights[level] if level < len(self.ds_weights) else 0.0
            if w:
                p = torch.sigmoid(out) * mask
                inter = (p * target).sum(dim=(0, 2, 3, 4))
                dice = (2.0 * inter + 1e-5) / (p.sum(dim=(0, 2, 3, 4)) + target.sum(dim=(0, 2, 3, 4)) + 1e-5)
                loss = loss + w * (1.0 - dice).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.item())
