"""Integer coordinates: validation, key packing, canonical order.

A voxel is a row ``[batch, z, y, x]`` of an ``(N, 4) int32`` array. To look voxels up in a hash
table or sort them, each row is *packed* into one non-negative ``int64`` key::

    key = batch << 48 | z << 32 | y << 16 | x

so every spatial axis gets 16 bits (0 … 65535) and the batch 15 bits (0 … 32767); the sign bit
stays clear, so keys sort in (batch, z, y, x) order — the *canonical order* of every tensor.
Anything larger is refused with a clear error rather than silently wrapping around.
"""
from __future__ import annotations

import numpy as np

AXIS_BITS = 16
BATCH_BITS = 15
MAX_AXIS = 1 << AXIS_BITS  # exclusive bound of z, y, x
MAX_BATCH = 1 << BATCH_BITS  # exclusive bound of batch

_FLOAT_DTYPES = (np.float32, np.float64)


def as_shape3(spatial_shape) -> tuple[int, int, int]:
    """Validate a spatial shape ``(D, H, W)``: three ints in ``[1, 65536]``."""
    try:
        shape = tuple(int(s) for s in spatial_shape)
    except TypeError:
        raise ValueError(f"spatial_shape must be three integers (D, H, W), got {spatial_shape!r}") from None
    if len(shape) != 3:
        raise ValueError(f"spatial_shape must have 3 entries (D, H, W), got {len(shape)}: {shape}")
    for axis, s in zip("DHW", shape):
        if not 1 <= s <= MAX_AXIS:
            raise ValueError(f"spatial_shape {axis}={s} is outside [1, {MAX_AXIS}] (16-bit key packing)")
    return shape


def as_triple(value, name: str) -> tuple[int, int, int]:
    """An int or a 3-sequence of ints → a 3-tuple (kernel size, stride, dilation, padding)."""
    if np.isscalar(value):
        value = (value,) * 3
    triple = tuple(int(v) for v in value)
    if len(triple) != 3:
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}")
    return triple


def validate_coords(coords, spatial_shape, batch_size: int | None = None) -> np.ndarray:
    """Check and convert coordinates; return them as a C-contiguous ``(N, 4) int32`` array.

    Raises ``ValueError`` naming the first offending row for: a non-integer dtype, a wrong shape,
    a negative or out-of-range coordinate, or a batch index ``>= batch_size``.
    """
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must have shape (N, 4) [batch, z, y, x], got {coords.shape}")
    if coords.dtype.kind not in "iu":
        raise ValueError(f"coords must be an integer array, got dtype {coords.dtype}")
    shape = as_shape3(spatial_shape)
    upper = np.array([MAX_BATCH if batch_size is None else batch_size, *shape], dtype=np.int64)
    c64 = coords.astype(np.int64, copy=False)
    bad = (c64 < 0) | (c64 >= upper)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = "batch z y x".split()[col]
        raise ValueError(
            f"coords row {row} = {c64[row].tolist()}: {name}={c64[row, col]} is outside "
            f"[0, {upper[col]}) (spatial_shape={shape}, batch_size={batch_size})")
    return np.ascontiguousarray(coords, dtype=np.int32)


def validate_feats(feats, n_rows: int) -> None:
    """Check a ``(N, C)`` float32/float64 feature array with N = ``n_rows`` and finite values."""
    if feats.ndim != 2 or feats.shape[0] != n_rows:
        raise ValueError(f"feats must have shape (N={n_rows}, C), got {feats.shape}")
    if feats.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"feats must be float32 or float64, got dtype {feats.dtype}")
    finite = np.isfinite(feats)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(f"feats row {row}, channel {col} is not finite: {feats[row, col]}")


def pack_keys(coords: np.ndarray) -> np.ndarray:
    """``(N, 4)`` validated coords → ``(N,) int64`` keys, monotone in (batch, z, y, x)."""
    c = np.asarray(coords, dtype=np.int64)
    return (c[:, 0] << 48) | (c[:, 1] << 32) | (c[:, 2] << 16) | c[:, 3]


def unpack_keys(keys, xp=np):
    """Inverse of :func:`pack_keys`: ``(N,) int64`` → ``(N, 4) int32`` (``xp``: numpy or cupy)."""
    k = xp.asarray(keys, dtype=np.int64)
    mask = np.int64(MAX_AXIS - 1)
    return xp.stack([k >> 48, (k >> 32) & mask, (k >> 16) & mask, k & mask], axis=1).astype(np.int32)


def canonical_order(keys: np.ndarray) -> np.ndarray:
    """Row permutation that sorts packed keys ascending (stable, so ties keep input order)."""
    return np.argsort(keys, kind="stable")


def check_unique(sorted_keys: np.ndarray, original_rows: np.ndarray, coords: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first duplicated voxel (keys sorted, rows = their origin)."""
    if len(sorted_keys) < 2:
        return
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if len(dup):
        a, b = original_rows[dup[0]], original_rows[dup[0] + 1]
        first, second = min(a, b), max(a, b)
        raise ValueError(f"coords row {second} = {coords[second].tolist()} duplicates row {first}")
