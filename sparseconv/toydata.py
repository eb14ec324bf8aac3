"""Generated 3D shapes for "does it learn?" checks: hollow spheres vs solid blobs.

Each scene is a ``size³`` grid holding a few non-overlapping shapes. Active voxels are the shapes'
voxels (feature 1.0 everywhere: the network must tell the classes apart by geometry alone) and each
voxel is labelled ``0`` (hollow-sphere shell) or ``1`` (solid blob, a rotated ellipsoid).
"""
from __future__ import annotations

import numpy as np

from .tensor import SparseTensor


def _rotation(rng):
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a + b*b - c*c - d*d, 2*(b*c - a*d), 2*(b*d + a*c)],
                     [2*(b*c + a*d), a*a - b*b + c*c - d*d, 2*(c*d - a*b)],
                     [2*(b*d - a*c), 2*(c*d + a*b), a*a - b*b - c*c + d*d]])


def make_scene(rng: np.random.Generator, size=32, n_shapes=(2, 4)):
    """One scene (shape sizes scale with ``size``; at least 16 is sensible) → ``(coords (N, 3) int32 z,y,x, labels (N,) int64)`` in row-major order."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).astype(np.float64)
    label = np.full((size,) * 3, -1, np.int64)
    placed = []  # (centre, bounding radius)
    scale = size / 32.0  # radii below are for a 32³ grid
    count = rng.integers(n_shapes[0], n_shapes[1] + 1)
    kinds = np.r_[0, 1, rng.integers(0, 2, max(count - 2, 0))][:count]  # both kinds when count ≥ 2
    for kind in rng.permutation(kinds):
        for _ in range(50):
            if kind == 0:
                radius = rng.uniform(5.0, 9.0) * scale
                thickness = max(rng.uniform(1.3, 2.3) * scale, 1.0)
            else:
                radii = rng.uniform(3.5, 7.5, 3) * scale
                radius = radii.max()
            centre = rng.uniform(radius + 0.5, size - radius - 1.5, 3)
            if all(np.linalg.norm(centre - c) > radius + r + 1.5 for c, r in placed):
                break
        else:
            continue
        placed.append((centre, radius))
        rel = grid - centre
        if kind == 0:
            d = np.linalg.norm(rel, axis=-1)
            inside = (d <= radius) & (d > radius - thickness)
        else:
            local = rel @ _rotation(rng)
            inside = ((local / radii) ** 2).sum(axis=-1) <= 1.0
        label[inside] = kind
    coords = np.argwhere(label >= 0).astype(np.int32)
    return coords, label[label >= 0]


def make_batch(rng: np.random.Generator, batch_size=2, size=32, dtype=np.float32):
    """A batch of scenes → ``(x, target)``: ``x`` a SparseTensor with one feature (1.0), ``target``
    ``(N, 2)`` one-hot ``[shell, blob]`` row-aligned with ``x``."""
    coords, labels = [], []
    for b in range(batch_size):
        c, lab = make_scene(rng, size)
        coords.append(np.c_[np.full(len(c), b, np.int32), c])
        labels.append(lab)
    coords, labels = np.concatenate(coords), np.concatenate(labels)
    x = SparseTensor(coords, np.ones((len(coords), 1), dtype), (size,) * 3, batch_size=batch_size)
    target = np.eye(2, dtype=dtype)[labels]  # rows already canonical: batch-major, then z, y, x
    return x, target
