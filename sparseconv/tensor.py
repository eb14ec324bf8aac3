"""SparseTensor: active voxels of a batch of 3D volumes.

``coords: (N, 4) int32 [batch, z, y, x]`` and ``feats: (N, C) float32|float64`` — row ``i`` of
``feats`` belongs to row ``i`` of ``coords`` — on a grid of ``spatial_shape = (D, H, W)``.
Rows are always in canonical order (sorted by batch, z, y, x), so nothing downstream depends on
the order a user happened to list voxels in.

``feats`` is always a plain array (NumPy, or CuPy on the GPU), whether it was passed in or made by
a differentiable op; the autograd side of the same features is ``feats_tensor``, an autograd
``Tensor`` whose ``.data`` *is* ``feats``. Ops read ``feats_tensor`` (so gradients flow); code that
only wants numbers reads ``feats`` and never has to unwrap anything.

Tensors made by an op from another tensor's sites (``replace_feats``) share its coordinates and
its kernel-map cache, so a network builds each kernel map once per level.
"""
from __future__ import annotations

import numpy as np

from . import coords as C
from .autograd import Tensor


class SparseTensor:
    """Sparse voxels with features.

    Args:
        coords: ``(N, 4)`` integer array ``[batch, z, y, x]``, any row order, no duplicates.
        feats: ``(N, C)`` float32 or float64 array, finite; or an autograd ``Tensor`` holding one
            (e.g. ``Tensor(f, requires_grad=True)`` for gradients with respect to the input).
        spatial_shape: ``(D, H, W)`` grid of this tensor (its own level, not the input's).
        batch_size: number of samples; default ``max(batch) + 1`` (1 for an empty tensor).
        stride: total down-sampling factor of this grid relative to the network input.

    Attributes:
        coords: ``(N, 4) int32 [batch, z, y, x]`` NumPy array, canonical row order.
        feats: ``(N, C) float32|float64`` array — always a plain array (NumPy on ``"cpu"``, CuPy on
            ``"cuda"``), never an autograd ``Tensor``.
        feats_tensor: the same features as an autograd ``Tensor`` (``feats_tensor.data is feats``),
            carrying the graph of the op that made them; what differentiable ops and losses take.

    Bad input raises ``ValueError`` naming the first offending row and value.
    """

    def __init__(self, coords, feats, spatial_shape, batch_size=None, stride=1):
        shape = C.as_shape3(spatial_shape)
        if batch_size is not None and not 1 <= int(batch_size) <= C.MAX_BATCH:
            raise ValueError(f"batch_size={batch_size} is outside [1, {C.MAX_BATCH}]")
        coords = C.validate_coords(coords, shape, None if batch_size is None else int(batch_size))
        feats = _as_tensor(feats)
        if feats.ndim != 2 or feats.shape[0] != len(coords):
            raise ValueError(f"feats must have shape (N={len(coords)}, C), got {feats.shape}")
        C.validate_feats(np.asarray(feats.data), len(coords))
        keys = C.pack_keys(coords)
        order = C.canonical_order(keys)
        C.check_unique(keys[order], order, coords)
        if not np.array_equal(order, np.arange(len(order))):
            coords, keys = coords[order], keys[order]
            feats = _take_rows(feats, order)
        if batch_size is None:
            batch_size = int(coords[-1, 0]) + 1 if len(coords) else 1
        self._init(coords, feats, shape, int(batch_size), C.as_triple(stride, "stride"), keys, {})

    def _init(self, coords, feats, shape, batch_size, stride, keys, cache):
        self.coords = coords
        self._feats = _as_tensor(feats)
        self.spatial_shape = shape
        self.batch_size = batch_size
        self.stride = stride
        self._keys = keys
        self._cache = cache  # kernel maps and coarser levels, shared by tensors on these sites

    @classmethod
    def _trusted(cls, coords, feats, spatial_shape, batch_size, stride, keys=None, cache=None):
        """Construct without validation, for ops whose outputs are canonical by construction."""
        self = cls.__new__(cls)
        self._init(coords, feats, tuple(spatial_shape), int(batch_size), tuple(stride),
                   C.pack_keys(coords) if keys is None else keys, {} if cache is None else cache)
        return self

    # --- features ------------------------------------------------------------------------------
    @property
    def feats(self):
        """``(N, C) float32|float64`` array (NumPy or CuPy): the features as plain numbers."""
        return self._feats.data

    @property
    def feats_tensor(self) -> Tensor:
        """The features as an autograd ``Tensor`` (``.data is self.feats``), with the graph that made them."""
        return self._feats

    # --- shape-like properties ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.coords)

    @property
    def num_channels(self) -> int:
        return self.feats.shape[1]

    @property
    def keys(self) -> np.ndarray:
        """``(N,) int64`` packed keys of the coords, ascending."""
        return self._keys

    @property
    def cache(self) -> dict:
        return self._cache

    def __repr__(self) -> str:
        return (f"SparseTensor(N={len(self)}, C={self.num_channels}, spatial_shape={self.spatial_shape}, "
                f"batch_size={self.batch_size}, stride={self.stride}, dtype={self.feats.dtype})")

    # --- derived tensors ---------------------------------------------------------------------
    def replace_feats(self, feats) -> "SparseTensor":
        """Same sites (and kernel-map cache), new ``(N, C')`` features (an array or an autograd
        ``Tensor``) — no re-sorting."""
        feats = _as_tensor(feats)
        if feats.ndim != 2 or feats.shape[0] != len(self):
            raise ValueError(f"replace_feats: need ({len(self)}, C) features, got {feats.shape}")
        return SparseTensor._trusted(self.coords, feats, self.spatial_shape, self.batch_size,
                                     self.stride, self._keys, self._cache)

    def same_sites(self, other: "SparseTensor") -> bool:
        """True if both tensors have identical coordinates and grid (cheap when they share a cache)."""
        if self._cache is other._cache:
            return True
        return (self.spatial_shape == other.spatial_shape and self.batch_size == other.batch_size
                and np.array_equal(self._keys, other._keys))

    # --- devices ------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the features live: ``"cpu"`` or ``"cuda"``; coordinates are always on the host."""
        from .device import device_of
        return device_of(self.feats)

    def to(self, device) -> "SparseTensor":
        """The same sites with features on ``device`` (``"cpu"``/``"cuda"``); ``self`` if already there.

        A moved tensor starts an empty kernel-map cache: maps hold arrays of the backend that built
        them. Features that require grad move through the graph, so gradients reach the original ones.
        """
        from .device import normalize_device
        device = normalize_device(device)
        if device == self.device:
            return self
        moved = self._feats.to(device)  # a graph node when the features require grad
        return SparseTensor._trusted(self.coords, moved, self.spatial_shape, self.batch_size, self.stride,
                                     self._keys, {})

    # --- dense conversion --------------------------------------------------------------------
    def dense(self) -> np.ndarray:
        """``(B, C, D, H, W)`` array, zeros at inactive sites."""
        from .device import to_host
        f = to_host(self.feats)  # a host array, wherever the features are
        out = np.zeros((self.batch_size, f.shape[1], *self.spatial_shape), dtype=f.dtype)
        b, z, y, x = self.coords.T
        out[b, :, z, y, x] = f
        return out

    @classmethod
    def from_dense(cls, array, mask=None, stride=1) -> "SparseTensor":
        """Sparse tensor of a dense ``(B, C, D, H, W)`` array.

        Active sites: where ``mask`` (``(B, D, H, W)`` bool) is true, else where any channel is
        non-zero.
        """
        array = np.asarray(array)
        if array.ndim != 5:
            raise ValueError(f"from_dense needs a (B, C, D, H, W) array, got shape {array.shape}")
        if mask is None:
            mask = (array != 0).any(axis=1)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != array.shape[:1] + array.shape[2:]:
            raise ValueError(f"mask shape {mask.shape} != (B, D, H, W) {array.shape[:1] + array.shape[2:]}")
        coords = np.argwhere(mask).astype(np.int32)  # row-major = canonical order already
        b, z, y, x = coords.T
        feats = np.ascontiguousarray(array[b, :, z, y, x])
        return cls(coords, feats, array.shape[2:], batch_size=array.shape[0], stride=stride)


def _as_tensor(feats) -> Tensor:
    """``feats`` itself if it is an autograd ``Tensor`` (its graph kept), else a ``Tensor`` wrapping
    the array (no copy)."""
    return feats if isinstance(feats, Tensor) else Tensor(feats)


def _take_rows(feats: Tensor, order) -> Tensor:
    """``feats`` with its rows in ``order``."""
    if feats.requires_grad:
        return feats[order]  # through the graph, so gradients flow back to the caller's rows
    rows = feats.data[order]
    return Tensor(np.ascontiguousarray(rows) if isinstance(rows, np.ndarray) else rows)
