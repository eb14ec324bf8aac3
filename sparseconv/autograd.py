"""A tiny reverse-mode autograd, in the spirit of micrograd and early tinygrad.

Everything you need to read is in this file (the core is ~250 lines; a finite-difference
gradcheck closes it):

* :class:`Tensor` holds an array (NumPy or CuPy), ``.grad``, ``.requires_grad``, and — if an op made
  it — the node of the graph that produced it.
* :class:`Function` is an op with a hand-written derivative::

      class Square(Function):
          @staticmethod
          def forward(ctx, x):             # raw arrays in, a raw array out
              ctx.save(x)
              return x * x
          @staticmethod
          def backward(ctx, grad):        # d loss / d out  ->  d loss / d each input
              (x,) = ctx.saved
              return 2 * x * grad

      y = Square.apply(t)                 # Tensors (or arrays, or anything else) in, a Tensor out

  ``forward`` sees raw arrays (Tensors are unwrapped); every other argument (kernel maps, flags)
  passes through untouched. ``backward`` returns one gradient per positional input (``None`` for
  inputs that are not differentiable); a single input may return a bare array.
* :meth:`Tensor.backward` sorts the graph topologically (iteratively — no recursion limit), walks it
  from the output back to the leaves, and *adds* each gradient into the inputs' slots, so a tensor
  used twice (fan-out) gets the sum. Leaves (tensors the user made with ``requires_grad=True``, e.g.
  parameters) accumulate into ``.grad`` across calls until you zero it, as in PyTorch.
* :func:`no_grad` turns graph recording off (inference, optimiser updates).

Sparse tensors take part through their features: ``SparseTensor.feats_tensor`` is a ``Tensor``
(``SparseTensor.feats`` the plain array inside it); coordinates and kernel maps are plain data that
ops carry along and never differentiate.
"""
from __future__ import annotations

import contextlib

import numpy as np

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside ``with no_grad():`` ops record no graph and their outputs never require grad."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def data_of(value):
    """The array inside a ``Tensor``; any other value (an array, a constant) as it is."""
    return value.data if isinstance(value, Tensor) else value


def _xp(array):
    """The array module of ``array`` (numpy, or cupy for a GPU array)."""
    return np if isinstance(array, (np.ndarray, np.generic)) else __import__(type(array).__module__.split(".")[0])


class Tensor:
    """An array with an optional gradient.

    Args:
        data: array-like; kept as is if already an array (no copy), else converted.
        requires_grad: make this a *leaf* whose ``.grad`` is filled by ``backward()``.
    """

    __array_ufunc__ = None  # so ``ndarray + Tensor`` defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        if not isinstance(data, np.ndarray) and not hasattr(data, "__cuda_array_interface__"):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None  # (function, ctx, inputs) for a tensor made by an op

    # --- array-like facts ---------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{flag})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied off the GPU if need be)."""
        from .device import to_host
        return to_host(self.data)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self) -> float:
        return float(self.numpy().reshape(-1)[0]) if self.size == 1 else float("nan")

    def detach(self) -> "Tensor":
        """Same data, cut from the graph."""
        return Tensor(self.data)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"`` (see :mod:`sparseconv.device`)."""
        from .device import device_of
        return device_of(self.data)

    def to(self, device) -> "Tensor":
        """This tensor on ``device`` (itself if already there); gradients flow back across the move."""
        from .device import normalize_device
        return self if self.device == normalize_device(device) else ToDevice.apply(self, device)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    # --- backward -----------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Back-propagate from this tensor; ``grad`` defaults to 1 for a one-element tensor.

        As in PyTorch, each op's saved arrays are released as soon as its gradient is computed
        (so activations do not outlive the step); ``retain_graph=True`` keeps them for another pass.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad (no parameter or input "
                               "with requires_grad=True reaches it, or it was made under no_grad())")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward(): grad can be implied only for one-element outputs, got shape {self.shape}")
            grad = _xp(self.data).ones_like(self.data)
        grads = {id(self): _as_array(grad, self.data)}
        for t in _topological_order(self):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t._node is None:  # a leaf: accumulate into .grad
                t.grad = g.copy() if t.grad is None else t.grad + g
                continue
            if t._node is _FREED:
                raise RuntimeError("backward() through a graph a second time: its saved arrays were freed "
                                   "by the first pass; use backward(retain_graph=True) the first time")
            fn, ctx, inputs = t._node
            in_grads = fn.backward(ctx, g)
            if not retain_graph:
                t._node = _FREED
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(inputs):
                raise RuntimeError(f"{fn.__name__}.backward returned {len(in_grads)} gradients for {len(inputs)} inputs")
            for inp, ig in zip(inputs, in_grads):
                if ig is None or not isinstance(inp, Tensor) or not inp.requires_grad:
                    continue
                if ig.shape != inp.shape:
                    raise RuntimeError(f"{fn.__name__}.backward: gradient shape {ig.shape} != input shape {inp.shape}")
                grads[id(inp)] = ig if id(inp) not in grads else grads[id(inp)] + ig

    # --- the few ops networks and losses need -------------------------------------------------
    def __add__(self, other):
        return Add.apply(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return Add.apply(self, Neg.apply(other))

    def __rsub__(self, other):
        return Add.apply(other, Neg.apply(self))

    def __neg__(self):
        return Neg.apply(self)

    def __mul__(self, other):
        return Mul.apply(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, Tensor):
            raise TypeError("Tensor / Tensor is not supported; divide by a constant")
        return Mul.apply(self, 1.0 / other)

    def __getitem__(self, index):
        return Index.apply(self, index)

    def sum(self, axis=None):
        return Sum.apply(self, axis)

    def mean(self, axis=None):
        n = self.size if axis is None else self.shape[axis]
        return Sum.apply(self, axis) * (1.0 / max(n, 1))

    def reshape(self, *shape):
        return Reshape.apply(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)


_FREED = ("freed",)  # marks a graph node whose saved arrays were released by backward()


def _as_array(value, like):
    xp = _xp(like)
    return xp.asarray(data_of(value), dtype=like.dtype).reshape(like.shape)


def _topological_order(root):
    """Tensors reachable from ``root`` through recorded ops, each after every tensor it feeds."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        t, children_done = stack.pop()
        if children_done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t._node is not None and t._node is not _FREED:
            for inp in t._node[2]:
                if isinstance(inp, Tensor) and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order[::-1]  # root first: every consumer before what it consumes


class Context:
    """Scratch space an op's forward leaves for its backward."""

    def save(self, *arrays):
        self.saved = arrays

    needs_input_grad: tuple = ()


class Function:
    """Base class of differentiable ops; subclasses define static ``forward`` and ``backward``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = Context()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        raw = [data_of(a) for a in args]
        out = Tensor(cls.forward(ctx, *raw, **kwargs))
        if _grad_enabled and any(ctx.needs_input_grad):
            out.requires_grad = True
            out._node = (cls, ctx, args)
        return out


def _unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape`` (undo NumPy broadcasting)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _shape(x):
    return getattr(x, "shape", ())


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return _unbroadcast(grad, ctx.shapes[0]), _unbroadcast(grad, ctx.shapes[1])


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        ga = _unbroadcast(grad * b, _shape(a)) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(grad * a, _shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None):
        ctx.shape, ctx.axis = a.shape, axis
        return a.sum(axis=axis)

    @staticmethod
    def backward(ctx, grad):
        if ctx.axis is not None:
            grad = _xp(grad).expand_dims(grad, ctx.axis)
        return _xp(grad).broadcast_to(grad, ctx.shape).copy(), None


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape), None


class Index(Function):
    """``a[index]`` — rows, slices, masks; the backward scatter-adds (repeated rows accumulate)."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        xp = _xp(grad)
        out = xp.zeros(ctx.shape, dtype=ctx.dtype)
        xp.add.at(out, ctx.index, grad)
        return out, None


class ToDevice(Function):
    """Copy to another device; the backward copies the gradient back to where the input lives."""

    @staticmethod
    def forward(ctx, a, device):
        from .device import device_of, to_device
        ctx.source = device_of(a)
        return to_device(a, device)

    @staticmethod
    def backward(ctx, grad):
        from .device import to_device
        return to_device(grad, ctx.source), None


def gradcheck(fn, tensors, eps=1e-6, rtol=1e-5, atol=1e-6, max_per_tensor=None, seed=0):
    """Compare ``backward()`` with central finite differences (use float64).

    ``fn()`` computes an output (Tensor or SparseTensor) from the leaf ``tensors`` it closes over;
    the check differentiates ``Σ out · R`` for a fixed random ``R``. ``max_per_tensor`` checks only
    that many randomly chosen entries of each tensor. Raises ``AssertionError`` naming the first
    mismatch; returns the largest absolute difference seen.
    """
    rng = np.random.default_rng(seed)

    def scalar():
        out = fn()
        out = getattr(out, "feats_tensor", out)  # a SparseTensor's features
        return out, data_of(out)

    out, data = scalar()
    weights = rng.standard_normal(data.shape).astype(data.dtype)
    for t in tensors:
        t.grad = None
    (out * weights).sum().backward()
    worst = 0.0
    with no_grad():
        for n, t in enumerate(tensors):
            analytic = t.grad if t.grad is not None else np.zeros_like(t.data)
            flat = np.arange(t.size)
            if max_per_tensor is not None and t.size > max_per_tensor:
                flat = rng.choice(t.size, max_per_tensor, replace=False)
            for f in flat:
                idx = np.unravel_index(f, t.shape)
                orig = t.data[idx].copy()
                t.data[idx] = orig + eps
                plus = float((scalar()[1] * weights).sum())
                t.data[idx] = orig - eps
                minus = float((scalar()[1] * weights).sum())
                t.data[idx] = orig
                numeric = (plus - minus) / (2 * eps)
                err = abs(numeric - float(analytic[idx]))
                worst = max(worst, err)
                if err > atol + rtol * abs(numeric):
                    raise AssertionError(f"gradcheck: tensor {n} {tuple(t.shape)} at {tuple(int(i) for i in idx)}: "
                                         f"analytic {float(analytic[idx]):.10g} vs numeric {numeric:.10g}")
    return worst
