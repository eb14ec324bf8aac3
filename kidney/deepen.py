"""Start a deeper U-Net (more, coarser levels) from a trained shallower one, computing the same function.

A :class:`~kidney.model.KidneyNet` of ``L`` levels ends its encoder at level ``L - 1`` and starts its
decoder there. The deeper network keeps those ``L`` levels as they are and adds levels ``L, L + 1, ...``
below them; on the way back up, the new levels reach the old ones through one place only::

    x_{L-1} = decoders[L-1]( ups[L-1](x_L) + skip_{L-1} )

(:meth:`KidneyNet.forward`). With ``ups[L-1]``'s transposed convolution at zero (weight and bias) its
output is exactly 0, and with the last Linear of every block of ``decoders[L-1]`` at zero each block
returns its input (``x + 0``), so ``x_{L-1} = skip_{L-1}``: the deeper network computes the shallower
one's logits bit for bit. The new levels' own layers keep their fresh (seeded) initialisation. On the
first step only those zeroed layers receive gradients; once ``ups[L-1]`` has moved away from zero, the
coarse levels do too, and the wider context they see reaches the heads (the zero-initialised residual
branch of Goyal et al., "Accurate, large minibatch SGD", 2017, and of ReZero).

Why deeper: each level halves the grid, so each added level doubles the distance a block can see. On
stage 2's 1.56 mm grid, the coarsest voxel of 4 levels spans 12.5 mm and a 3×3×3 depthwise
convolution there reaches 37.5 mm; with 6 levels, 50 mm and 150 mm — the size of a large renal mass,
whose outline (not its texture) tells it from the kidney around it.
"""
from __future__ import annotations

import numpy as np

from .model import KidneyNet, get_config
from .widen import fields_must_agree

__all__ = ["deepen"]

# Everything but the levels must agree between the shallow and the deep configs.
SAME_FIELDS = ("decoder_depth", "in_channels", "out_channels", "kernel_size", "n_supervised", "head_block",
               "stem_bias")


def _check_configs(shallow, deep):
    fields_must_agree(shallow, deep, SAME_FIELDS, "deepen", "only levels may be added")
    n = len(shallow.dims)
    if len(deep.dims) <= n or deep.dims[:n] != shallow.dims or deep.depths[:n] != shallow.depths:
        raise ValueError(f"cannot deepen {shallow.name!r} to {deep.name!r}: the deep config must keep the "
                         f"shallow one's levels and add more (dims {shallow.dims} -> {deep.dims}, depths "
                         f"{shallow.depths} -> {deep.depths})")


def deepen(shallow: KidneyNet, config, seed: int = 0) -> KidneyNet:
    """A ``config`` network (``shallow``'s levels, then more) computing ``shallow``'s function.

    Args:
        shallow: the trained network.
        config: the deeper :class:`~kidney.model.ModelConfig` or its name.
        seed: initialises the new levels (same seed, same weights).
    """
    config = get_config(config)
    _check_configs(shallow.config, config)  # before building: a refused config costs nothing
    deep = KidneyNet(config, seed=seed)
    state = dict(deep.state_dict())
    state.update(shallow.state_dict())  # load_state_dict below checks every name and shape
    joint = len(shallow.config.dims) - 1  # the level where the new ones join the old
    for key in state:
        # the transposed convolution, not the LayerNorm before it (a zero LayerNorm would block its gradient)
        zero = (key.startswith(f"ups.{joint}.1.")
                or (key.startswith(f"decoders.{joint}.") and ".pwconv2." in key))
        if zero:
            state[key] = np.zeros_like(state[key])
    deep.load_state_dict(state)
    return deep
