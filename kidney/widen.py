"""Start a wider network from a trained narrower one, computing the same function (Net2WiderNet).

Chen, Goodfellow and Shlens, "Net2Net: accelerating learning via knowledge transfer" (ICLR 2016):
a layer of ``C`` channels becomes one of ``r·C`` by copying channel ``j`` to ``j, j + C, ...``
(``np.tile``); a layer that *sums over* those channels (a Linear or a convolution, on its input
axis) splits each weight among the copies so that the sum is unchanged. Every part of
:class:`~kidney.model.KidneyNet` keeps the function under copying:

* LayerNorm over ``r`` copies of a vector has the same mean and variance, hence the same output;
* GRN divides each channel's norm by the mean norm over channels — the same mean;
* depthwise convolutions, GELU, residual sums and the skip additions act channel by channel.

The split among copies is random (fractions in [1/2, 3/2] / r, normalised to sum to 1), not
``1/r`` each: with equal shares the copies would receive equal gradients for ever and the wider
network would stay the narrow one. The widened network's outputs equal the narrow one's up to the
rounding of the longer sums; training then uses the new capacity.

The wider network may also add a bias to the stem (``stem_bias``): it starts at 0, so the function is
again the same.
"""
from __future__ import annotations

import numpy as np

from sparseconv.nn import Linear
from sparseconv.nn.layers import _ConvBase

from .model import KidneyNet, get_config

__all__ = ["widen"]

# Structure that must agree between the narrow and the wide configs (only the widths may differ).
SAME_FIELDS = ("depths", "decoder_depth", "in_channels", "out_channels", "kernel_size", "n_supervised",
               "head_block")


def fields_must_agree(old, new, fields, verb, what_may_change):
    """Raise a ValueError naming the first of ``fields`` in which the configs ``old`` and ``new`` differ."""
    for field in fields:
        if getattr(old, field) != getattr(new, field):
            raise ValueError(f"cannot {verb} {old.name!r} to {new.name!r}: {field} differs "
                             f"({getattr(old, field)} vs {getattr(new, field)}); {what_may_change}")


def _check_configs(narrow, wide):
    fields_must_agree(narrow, wide, SAME_FIELDS, "widen", "only dims may change")
    if narrow.stem_bias and not wide.stem_bias:
        raise ValueError(f"cannot widen {narrow.name!r} to {wide.name!r}: it would drop the stem's bias")
    if len(narrow.dims) != len(wide.dims) or any(w % n for n, w in zip(narrow.dims, wide.dims)):
        raise ValueError(f"cannot widen {narrow.name!r} to {wide.name!r}: every wide width must be a multiple "
                         f"of the narrow one, got dims {narrow.dims} -> {wide.dims}")


def _split_among_copies(weight, axis, copies, rng):
    """Divide ``weight`` (already tiled ``copies`` times along ``axis``) among the copies: random
    positive shares that sum to 1 over the copies of each original entry."""
    shape = list(weight.shape)
    grouped = list(shape[:axis]) + [copies, shape[axis] // copies] + list(shape[axis + 1:])
    shares = rng.uniform(0.5, 1.5, size=grouped)
    shares /= shares.sum(axis=axis, keepdims=True)
    return (weight.reshape(grouped) * shares).reshape(shape).astype(weight.dtype)


def widen(narrow: KidneyNet, config, seed: int = 0) -> KidneyNet:
    """A ``config`` network (same design, each width a multiple of ``narrow``'s, perhaps a stem bias
    added) computing ``narrow``'s function; ``seed`` draws the shares that break the copies' symmetry (same seed, same weights)."""
    wide = KidneyNet(get_config(config), seed=None)
    _check_configs(narrow.config, wide.config)
    rng = np.random.default_rng(seed)
    state = narrow.state_dict()
    out = {}
    for mod_name, module in wide.named_modules():
        sums_over_input = isinstance(module, Linear) or (isinstance(module, _ConvBase)
                                                         and module.weight.data.ndim == 3)
        for name, param in module.named_parameters():
            if "." in name:
                continue  # a child's own parameter: handled with the child
            key = f"{mod_name}.{name}" if mod_name else name
            src = state.get(key)
            if src is None:  # only a stem bias can be new (_check_configs): 0 keeps the function
                assert key == "stem.0.bias", key
                src = np.zeros(param.data.shape, param.data.dtype)
            reps = [w // n for n, w in zip(src.shape, param.data.shape)]
            arr = np.tile(src, reps)
            # Linear (out, in) and convolution (K, in, out) weights both sum over axis 1.
            if sums_over_input and name == "weight" and reps[1] > 1:
                arr = _split_among_copies(arr, 1, reps[1], rng)
            out[key] = arr
    wide.load_state_dict(out)
    return wide
