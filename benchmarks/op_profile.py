"""Where the time of a training step goes: wall time per op, by wrapping the backend's kernels.

    prof = OpProfile()
    with prof:                                   # a timing wrapper of the current backend is selected
        loss, _ = loss_and_dice(model, x, targets, ds_weights)
        with prof.phase("backward"):
            loss.backward()
        with prof.region("optimiser"):
            opt.step()
            opt.zero_grad()
    prof.seconds                                 # {op category: seconds}

* **Backend kernels** (the 17 of ``sparseconv.backends`` and the optional ``submanifold_table``,
  ``add``, ``column_sum`` and the two ``*_forward_bias``) go
  through a wrapper backend, selected with ``sparseconv.use_backend`` for the block — the library is
  not touched. ``conv_forward`` and ``depthwise_forward`` count as *forward* in the forward phase and
  as *dX* in the ``backward`` phase (an input gradient is a forward pass over the transposed map).
* **Ops that are not backend kernels** are timed by wrapping them for the block only (restored on
  exit): the per-voxel Linear (``LinearFn``, itself on the conv kernels), the kernel-map builders above the backend
  (``kmap.submanifold_map``, ``down_map``, ``inverse_map``, ``KernelMap.transposed``) and the loss
  (soft Dice, BCE and the target pooling, forward and backward).
* A timed call made inside another timed call counts once, in the outer one's category (the
  pooling's depthwise kernel inside the loss is loss time), so the categories never overlap and
  their sum is at most the step's wall time; the rest is autograd bookkeeping and array code
  between the ops (residual adds, the Dice metric, ...).
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict

MAP = "kernel-map build"
# Display order; the per-kernel categories below, then the wrapped non-kernel ops.
CATEGORIES = (MAP, "conv forward", "conv dX", "conv dW", "depthwise forward", "depthwise dX", "depthwise dW",
              "pointwise/linear", "LayerNorm forward", "LayerNorm backward", "GRN forward", "GRN backward",
              "GELU forward", "GELU backward", "loss", "optimiser", "other kernels")
KERNEL_CATEGORY = {
    "build_index": MAP, "lookup": MAP, "neighbor_table": MAP, "mirror_table": MAP, "transpose_table": MAP,
    "down_table": MAP, "submanifold_table": MAP,
    "conv_forward": ("conv forward", "conv dX"), "conv_weight_grad": "conv dW",
    "depthwise_forward": ("depthwise forward", "depthwise dX"), "depthwise_weight_grad": "depthwise dW",
    "conv_forward_bias": ("conv forward", "conv dX"), "depthwise_forward_bias": ("depthwise forward", "depthwise dX"),
    "layer_norm": "LayerNorm forward", "layer_norm_grad": "LayerNorm backward",
    "grn": "GRN forward", "grn_grad": "GRN backward", "gelu": "GELU forward", "gelu_grad": "GELU backward",
    "segment_sum": "other kernels", "add": "other kernels", "column_sum": "other kernels",
}


class OpProfile:
    """Per-category wall time (``seconds``) and call counts (``calls``) of the ops run in ``with self``."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = Counter()
        self._phase = "forward"
        self._depth = 0  # > 0 while a timed call runs: calls inside it are not timed again
        self._undo = []

    # --- timing --------------------------------------------------------------------------------
    def _category(self, category):
        if isinstance(category, tuple):  # (forward, backward) pair
            return category[self._phase == "backward"]
        return category

    @contextlib.contextmanager
    def region(self, category):
        """Count the block's wall time as ``category`` (unless it runs inside another timed call)."""
        if self._depth:
            yield
            return
        self._depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[self._category(category)] += time.perf_counter() - t0
            self.calls[self._category(category)] += 1
            self._depth -= 1

    @contextlib.contextmanager
    def phase(self, name):
        """``"forward"`` (default) or ``"backward"``: which of a kernel's two categories it counts in."""
        before, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = before

    def timed(self, category, fn):
        """``fn`` with each call counted as ``category``."""
        def wrapper(*args, **kwargs):
            with self.region(category):
                return fn(*args, **kwargs)
        return wrapper

    # --- the block ---------------------------------------------------------------------------------
    def __enter__(self):
        import sparseconv
        from sparseconv import functional as F
        from sparseconv import kmap
        from sparseconv.functional.activation import LinearFn
        from sparseconv.functional.losses import BCEWithLogitsFn, SoftDiceFn
        from sparseconv.functional.pooling import AvgPoolFn

        self._backend = sparseconv.use_backend(_TimedBackend(sparseconv.get_backend(), self))
        self._backend.__enter__()
        for owner, name, category in [(kmap, "submanifold_map", MAP), (kmap, "down_map", MAP),
                                      (kmap, "inverse_map", MAP), (kmap.KernelMap, "transposed", MAP),
                                      (F, "soft_dice_loss", "loss"), (F, "bce_with_logits", "loss"),
                                      (F, "avg_pool", "loss")]:
            self._patch(owner, name, self.timed(category, getattr(owner, name)))
        for fn, category in [(LinearFn, "pointwise/linear"), (SoftDiceFn, "loss"), (BCEWithLogitsFn, "loss"),
                             (AvgPoolFn, "loss")]:
            for name in ("forward", "backward"):
                self._patch(fn, name, staticmethod(self.timed(category, getattr(fn, name))))
        return self

    def _patch(self, owner, name, value):
        self._undo.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, value)

    def __exit__(self, *exc):
        for owner, name, value in reversed(self._undo):
            setattr(owner, name, value)
        self._undo.clear()
        self._backend.__exit__(*exc)

    def table(self):
        """``{category: seconds}`` in display order, every category present (0.0 if never called)."""
        return {c: float(self.seconds.get(c, 0.0)) for c in CATEGORIES}


class _TimedBackend:
    """A backend whose kernels are timed into an :class:`OpProfile`; everything else is the backend's
    own (an optional kernel it lacks stays absent, so the library takes the same path)."""

    def __init__(self, backend, profile):
        self._backend, self._profile = backend, profile
        self.name = backend.name

    def __getattr__(self, name):
        attr = getattr(self._backend, name)
        category = KERNEL_CATEGORY.get(name)
        return attr if category is None else self._profile.timed(category, attr)
