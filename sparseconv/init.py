"""Parameter initialisation, from one seeded random generator.

Layers draw their initial weights from :func:`get_rng` when they are built, so
``sparseconv.init.manual_seed(0)`` before building a model makes it reproducible.

* ``default``: PyTorch's default for conv/linear layers, ``U(-1/√fan_in, 1/√fan_in)`` for
  weights and biases.
* ``trunc_normal``: the ConvNeXt(-V2) scheme the paper uses — weights from a normal with std 0.02
  truncated to ±2 std, biases 0 (:func:`convnext_init` applies it to a whole model).
"""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator that layer initialisation (and Dropout, by default) draws from."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng() -> np.random.Generator:
    return _rng


def trunc_normal(shape, std=0.02, bound=2.0, rng=None, dtype=np.float32) -> np.ndarray:
    """Normal(0, std²) samples truncated to ``[-bound·std, bound·std]`` (resampled, not clipped)."""
    rng = _rng if rng is None else rng
    out = rng.standard_normal(shape)
    bad = np.abs(out) > bound
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > bound
    return (out * std).astype(dtype)


def uniform(shape, bound, rng=None, dtype=np.float32) -> np.ndarray:
    rng = _rng if rng is None else rng
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def trunc_normal_(param, std=0.02, rng=None):
    """Refill a Parameter in place with truncated-normal values."""
    param.data[...] = _to_like(trunc_normal(param.shape, std, rng=rng), param.data)


def zeros_(param):
    param.data[...] = 0


def ones_(param):
    param.data[...] = 1


def _to_like(array, like):
    if isinstance(like, np.ndarray):
        return array.astype(like.dtype)
    import cupy
    return cupy.asarray(array, dtype=like.dtype)


def convnext_init(model, std=0.02, rng=None):
    """ConvNeXt-V2 init for every conv and Linear in ``model``: trunc-normal(std) weights, zero biases.

    Norm and GRN parameters are left as built (norm weight 1, bias 0; GRN γ, β 0).
    """
    from .nn import layers

    for module in model.modules():
        if isinstance(module, (layers._ConvBase, layers.Linear)):
            trunc_normal_(module.weight, std, rng)
            if module.bias is not None:
                zeros_(module.bias)
    return model
