"""Optimisers (SGD with momentum, AdamW), a warm-up + cosine schedule, gradient accumulation and
clipping — with the update rules of PyTorch, and ``state_dict``s complete enough to resume exactly.

Typical loop (the paper's: AdamW, 8-step accumulation, warm-up then cosine)::

    groups = param_groups(model, weight_decay=1e-5)          # no decay on biases, norms, GRN
    opt = AdamW(groups, lr=5e-4, betas=(0.9, 0.95), eps=1e-12)
    sched = WarmupCosine(opt, warmup_steps=100, total_steps=5000)
    acc = GradientAccumulator(opt, every=8, clip_norm=None)
    for sample in data:
        acc.backward(loss_fn(model(sample)))                 # scales the loss by 1/8
        if acc.step():                                       # every 8th call: clip, step, zero
            sched.step()
"""
from __future__ import annotations

import math

import numpy as np

from .autograd import no_grad
from .device import to_host


def _xp(a):
    return np if isinstance(a, np.ndarray) else __import__("cupy")


def _np(a):
    """A host copy of ``a`` (copied even on the host, so a state dict never aliases live state)."""
    return np.array(to_host(a), copy=True)


class Optimizer:
    """Param groups (lists of dicts) and per-parameter state, indexed by the parameter's position."""

    defaults: dict = {}

    def __init__(self, params, **defaults):
        self.defaults = {**type(self).defaults, **defaults}
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        seen = set()
        for group in params:
            group = {**self.defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one param group")
                seen.add(id(p))
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        self.state = {}  # param index -> dict of arrays / numbers

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self._params():
            p.grad = None

    def step(self):
        i = 0
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, p.grad, group, self.state.setdefault(i, {}))
                    i += 1

    def _update(self, p, grad, group, state):
        raise NotImplementedError

    # --- exact resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array}}, "param_groups": [hyper-parameters]}`` (copies)."""
        groups = [{k: v for k, v in g.items() if k != "params"} | {"n_params": len(g["params"])}
                  for g in self.param_groups]
        state = {i: {k: (_np(v) if hasattr(v, "shape") else v) for k, v in s.items()}
                 for i, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        groups = state_dict["param_groups"]
        if [g["n_params"] for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state has param groups of sizes "
                             f"{[g['n_params'] for g in groups]}, this optimizer "
                             f"{[len(g['params']) for g in self.param_groups]}")
        params = self._params()
        new_state = {}
        for i, s in state_dict["state"].items():
            i = int(i)
            like = params[i].data
            new_state[i] = {k: (_xp(like).array(v, dtype=like.dtype) if np.ndim(v) else _scalar(v))
                            for k, v in s.items()}
        for group, saved in zip(self.param_groups, groups):
            group.update({k: _scalar(v) for k, v in saved.items() if k != "n_params"})
        self.state = new_state


def _scalar(v):
    """Saved hyper-parameters back to Python numbers / tuples (they may come back from an .npz)."""
    if isinstance(v, np.ndarray):
        return tuple(v.tolist()) if v.ndim else v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


class SGD(Optimizer):
    """PyTorch's SGD: ``d = g + wd·p``; ``buf = μ·buf + (1−dampening)·d`` (``buf = d`` at first);
    ``p −= lr · (d + μ·buf if nesterov else buf)``."""

    defaults = dict(lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)

    def __init__(self, params, lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)

    def _update(self, p, grad, group, state):
        d = grad + group["weight_decay"] * p.data if group["weight_decay"] else grad
        mu = group["momentum"]
        if mu:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d.copy()
            else:
                state["momentum_buffer"] = mu * state["momentum_buffer"] + (1 - group["dampening"]) * d
            buf = state["momentum_buffer"]
            d = d + mu * buf if group["nesterov"] else buf
        p.data -= (group["lr"] * d).astype(p.data.dtype, copy=False)


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's ``AdamW``)::

        p ← p · (1 − lr·wd)
        m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²
        p ← p − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + eps)
    """

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def _update(self, p, grad, group, state):
        xp = _xp(p.data)
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        if wd:
            p.data *= 1.0 - lr * wd
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1.0 - b1) * grad
        v *= b2
        v += (1.0 - b2) * grad * grad
        denom = xp.sqrt(v / (1.0 - b2 ** t)) + eps
        p.data -= ((lr / (1.0 - b1 ** t)) * m / denom).astype(p.data.dtype, copy=False)


def param_groups(model, weight_decay, no_decay_modules=None):
    """Two AdamW groups: ``weight_decay`` on conv/Linear weights, none on biases, norms and GRN.

    A parameter goes to the no-decay group if it is 1-D (biases, norm weights, GRN γ/β) or it
    belongs to a LayerNorm / BatchNorm / GRN module (or one of ``no_decay_modules``).
    """
    from .nn import GRN, BatchNorm, LayerNorm

    kinds = (LayerNorm, BatchNorm, GRN) + tuple(no_decay_modules or ())
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, kinds):
            no_decay_ids.update(id(v) for v in vars(module).values() if hasattr(v, "requires_grad"))
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or id(p) in no_decay_ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def warmup_cosine(step, base_lr, warmup_steps, total_steps, decay_steps=None, min_lr=0.0):
    """Learning rate at (0-based) ``step``.

    * ``step < warmup_steps``: linear warm-up ``base_lr · (step + 1) / warmup_steps``;
    * then constant ``base_lr`` until the cosine phase begins at ``total_steps − decay_steps``
      (``decay_steps`` defaults to everything after the warm-up);
    * cosine phase: ``min_lr + (base_lr − min_lr) · ½(1 + cos(π·τ))``, ``τ`` going 0 → 1 at ``total_steps``;
    * ``min_lr`` from ``total_steps`` on.

    The paper: 1 epoch warm-up; cosine to 0 over the last 400 of 500 epochs
    (``warmup_steps=E, total_steps=500E, decay_steps=400E`` with ``E`` steps per epoch).
    """
    decay_steps = total_steps - warmup_steps if decay_steps is None else decay_steps
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    start = total_steps - decay_steps
    if step < start:
        return base_lr
    if step >= total_steps or decay_steps <= 0:
        return min_lr
    tau = (step - start) / decay_steps
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * tau))


class WarmupCosine:
    """Sets every group's ``lr`` to ``warmup_cosine(step, group's initial lr, ...)``.

    The lr for step 0 is set on construction; call :meth:`step` after each ``optimizer.step()``.
    """

    def __init__(self, optimizer, warmup_steps, total_steps, decay_steps=None, min_lr=0.0):
        self.optimizer = optimizer
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.decay_steps, self.min_lr = decay_steps, min_lr
        self.last_step = 0
        self._apply()

    def lr_at(self, step, base_lr):
        return warmup_cosine(step, base_lr, self.warmup_steps, self.total_steps, self.decay_steps, self.min_lr)

    def _apply(self):
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.last_step, g["initial_lr"])

    def step(self):
        self.last_step += 1
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step}

    def load_state_dict(self, state):
        self.last_step = int(state["last_step"])
        self._apply()


def clip_grad_norm_(params, max_norm, eps=1e-6):
    """Scale all gradients (in place) so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (PyTorch's ``clip_grad_norm_``).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    scale = max_norm / (total + eps)
    if scale < 1.0:
        for g in grads:
            g *= scale
    return total


def clip_grad_value_(params, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    for p in params:
        if p.grad is not None:
            _xp(p.grad).clip(p.grad, -clip_value, clip_value, out=p.grad)


class GradientAccumulator:
    """Accumulate gradients over ``every`` backward calls, then clip, step and zero.

    ``backward(loss)`` back-propagates ``loss / every``, so the update equals one step on the mean
    loss of the ``every`` micro-batches. ``step()`` returns True when it stepped the optimiser.
    """

    def __init__(self, optimizer, every=1, clip_norm=None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.optimizer, self.every, self.clip_norm = optimizer, int(every), clip_norm
        self.count = 0
        self.last_grad_norm = None

    def backward(self, loss):
        (loss * (1.0 / self.every)).backward() if self.every > 1 else loss.backward()

    def step(self) -> bool:
        self.count += 1
        if self.count % self.every:
            return False
        if self.clip_norm is not None:
            self.last_grad_norm = clip_grad_norm_(self.optimizer._params(), self.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return True

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = int(state["count"])
