"""Hypothesis strategies for sparse volumes and convolution cases.

Volumes cover the edge cases that break sparse-conv code: the empty set, a single voxel, a full
grid, voxels only on faces and corners, random sets of any density; batch 1–3, odd and even sides.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .conformance import LAYOUTS, STRIDED, Case, mask_of
from .conformance import fits as _fits


@st.composite
def sparse_sites(draw, max_batch=3, max_side=7, layouts=LAYOUTS):
    """``(coords (N, 4) int32, spatial_shape, batch_size)`` of a random sparse volume."""
    batch = draw(st.integers(1, max_batch))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(3))
    layout = draw(st.sampled_from(layouts))
    density = draw(st.sampled_from([0.05, 0.2, 0.5, 0.9]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    coords = np.argwhere(mask_of(layout, batch, shape, rng, density)).astype(np.int32)
    return coords, shape, batch


@st.composite
def conv_cases(draw, ops=("subm", "depthwise", "down", "inverse"), dtype=np.float64, max_channels=8):
    """A :class:`Case` with a geometry that is valid for its grid."""
    op = draw(st.sampled_from(ops))
    coords, shape, batch = draw(sparse_sites())
    cin, cout = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    seed = draw(st.integers(0, 2**31 - 1))
    if op in ("subm", "depthwise"):
        k, d = draw(st.sampled_from([1, 3, 5])), draw(st.integers(1, 2))
        return Case(op, coords, shape, batch, cin, cout, k, 1, 0, d, dtype, seed)
    valid = [g for g in STRIDED if _fits(shape, *g)]
    k, s, p, d = draw(st.sampled_from(valid))
    return Case(op, coords, shape, batch, cin, cout, k, s, p, d, dtype, seed)
