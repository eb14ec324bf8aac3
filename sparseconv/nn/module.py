"""Module, Parameter, Sequential, ModuleList — PyTorch's shapes of these, minus the machinery.

A :class:`Module` finds its parameters, buffers and sub-modules by looking at its attributes (in
the order they were set), so a layer is just a class that sets ``self.weight = Parameter(...)`` in
``__init__`` and defines ``forward``. Names are PyTorch's: ``blocks.0.dwconv.weight``.
"""
from __future__ import annotations

import os

import numpy as np

from ..autograd import Tensor
from ..device import to_host


class Parameter(Tensor):
    """A leaf Tensor that requires grad and belongs to a Module."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # --- structure ----------------------------------------------------------------------------
    def register_buffer(self, name: str, array) -> None:
        """State that is saved but not trained (e.g. BatchNorm's running statistics)."""
        if "_buffer_names" not in self.__dict__:
            self._buffer_names = []
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        setattr(self, name, array)

    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        stack = [(prefix, self)]
        while stack:  # depth-first, children in attribute order
            name, module = stack.pop()
            yield name, module
            kids = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
            stack.extend(reversed(kids))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for mod_name, module in self.named_modules():
            for name in module.__dict__.get("_buffer_names", []):
                yield (f"{mod_name}.{name}" if mod_name else name), getattr(module, name)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # --- modes --------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def astype(self, dtype):
        """Cast every floating parameter and buffer to ``dtype`` in place (e.g. float64 for gradchecks)."""
        for p in self.parameters():
            p.data, p.grad = p.data.astype(dtype), None
        for mod_name, module in self.named_modules():
            for name in module.__dict__.get("_buffer_names", []):
                value = getattr(module, name)
                if value.dtype.kind == "f":
                    setattr(module, name, value.astype(dtype))
        return self

    def to(self, device):
        """Move every parameter and buffer to ``device`` (``"cpu"``/``"cuda"``) in place; returns self.

        Gradients are dropped. Make the optimiser after moving (its state lives with the parameters).
        """
        from ..device import to_device
        for p in self.parameters():
            p.data, p.grad = to_device(p.data, device), None
        for _, module in self.named_modules():
            for name in module.__dict__.get("_buffer_names", []):
                setattr(module, name, to_device(getattr(module, name), device))
        return self

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``name → NumPy array`` copies of every parameter and buffer."""
        state = {name: to_host(p.data).copy() for name, p in self.named_parameters()}
        state.update({name: to_host(b).copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copy ``state`` into the parameters and buffers (cast to their dtypes).

        Every name and shape is checked first; on any mismatch a ``ValueError`` lists the missing,
        unexpected and mis-shaped entries and nothing is changed. With ``strict=False`` missing and
        unexpected names are allowed (shapes must still match). Returns ``(missing, unexpected)``.
        """
        targets = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        own = {**{n: p.data for n, p in targets.items()}, **buffers}
        missing = [n for n in own if n not in state]
        unexpected = [n for n in state if n not in own]
        mis_shaped = [f"{n}: file {tuple(np.shape(state[n]))} vs model {tuple(own[n].shape)}"
                      for n in own if n in state and tuple(np.shape(state[n])) != tuple(own[n].shape)]
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mis_shaped:
            problems.append(f"shape mismatches [{'; '.join(mis_shaped)}]")
        if problems:
            raise ValueError("load_state_dict: " + ", ".join(problems) + " — nothing was loaded")
        for name, value in state.items():
            if name in targets:
                p = targets[name]
                p.data = _like(value, p.data)
            elif name in buffers:
                module, attr = self._owner(name)
                setattr(module, attr, _like(value, buffers[name]))
        return missing, unexpected

    def _owner(self, dotted):
        *path, attr = dotted.split(".")
        module = self
        for part in path:
            module = getattr(module, part)
        return module, attr

    def save(self, path) -> None:
        """Write ``state_dict()`` to an ``.npz`` file (atomically: a temp file, then a rename)."""
        path = os.fspath(path)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **self.state_dict())
        os.replace(tmp, path)

    def load(self, path, strict: bool = True):
        """Load an ``.npz`` written by :meth:`save`; a mismatch raises and changes nothing."""
        with np.load(os.fspath(path), allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
        return self.load_state_dict(state, strict=strict)

    # --- printing -----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        kids = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        body = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in kids)
        return head + "\n" + body + "\n)"


def _like(value, like):
    """``value`` copied into ``like``'s array type and dtype."""
    if isinstance(like, np.ndarray):
        return np.array(value, dtype=like.dtype, copy=True)
    import cupy
    return cupy.array(value, dtype=like.dtype)


class Sequential(Module):
    """Run modules one after another; children are named ``"0"``, ``"1"``, ... as in PyTorch."""

    def __init__(self, *modules):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __len__(self):
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return self.children()

    def __getitem__(self, i):
        return list(self.children())[i]

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are found (names ``"0"``, ``"1"``, ...)."""

    def __init__(self, modules=()):
        self._n = 0
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(self._n), module)
        self._n += 1
        return self

    def __len__(self):
        return self._n

    def __iter__(self):
        return (getattr(self, str(i)) for i in range(self._n))

    def __getitem__(self, i):
        return getattr(self, str(range(self._n)[i]))
