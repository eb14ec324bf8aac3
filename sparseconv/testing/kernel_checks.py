"""Kernel-level checks: one kernel of the backend interface at a time, against the NumPy reference.

Every check builds its inputs with NumPy from a seed, runs a kernel on the backend under test and on
the reference, and raises ``AssertionError`` on any difference: integer tables must match exactly,
floating results within :func:`~sparseconv.testing.compare.tolerance` of the reference (the summation
order differs, see docs/gpu.md). Each check also reruns its kernel and demands bitwise-equal results
(determinism). :mod:`sparseconv.testing.suite` lists them, with their sizes, next to the convolution
cases.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import coords as C
from .. import kmap as KM
from ..backends import use_backend
from ..backends.reference import backend as REF
from ..tensor import SparseTensor
from .compare import assert_bitwise, assert_close, assert_same_ints, bitwise_equal

DTYPES = (np.float32, np.float64)


# --- inputs ----------------------------------------------------------------------------------------

def random_sites(seed, shape=(7, 8, 9), batch=2, density=0.3) -> SparseTensor:
    """A random active set (every batch sample its own), 1-channel zero features, canonical order."""
    rng = np.random.default_rng(seed)
    blocks = []
    for b in range(batch):
        zyx = np.argwhere(rng.random(shape) < density)
        blocks.append(np.concatenate([np.full((len(zyx), 1), b), zyx], axis=1))
    coords = np.concatenate(blocks) if blocks else np.zeros((0, 4), np.int64)
    rng.shuffle(coords)
    return SparseTensor(coords.astype(np.int32), np.zeros((len(coords), 1), np.float32), shape, batch_size=batch)


def reference_maps(x: SparseTensor) -> dict:
    """Kernel maps of ``x`` built by the reference: submanifold k ∈ {1,3,5} × dilation {1,2}, down
    (k2 s2 and k3 s2 p1) and the inverse (a down map transposed). Pair lists and transposes are
    computed here, under the reference backend, so later uses never touch another backend."""
    maps = {}
    with use_backend("reference"):
        for k in (1, 3, 5):
            for d in (1, 2):
                maps[f"subm_k{k}_d{d}"] = KM.submanifold_map(x, k, d)
        down, _ = KM.down_map(x, 2, 2)
        maps["down_k2s2"] = down
        maps["inverse_k2s2"] = down.transposed()
        maps["down_k3s2p1"] = KM.down_map(x, 3, 2, 1)[0]
        for kmap in maps.values():
            for m in (kmap, kmap.transposed()):
                if m.K:
                    m.pairs(0)
    return maps


@lru_cache(maxsize=64)
def sites_and_maps(seed: int, sites: str):
    x = random_sites(seed, **SITES[sites])
    return x, reference_maps(x)


def _feats(rng, n, c, dtype):
    return rng.standard_normal((n, c)).astype(dtype)


def strided(a):
    """The values of the ``(N, C)`` array ``a`` as a view whose rows are not contiguous: the first C
    columns of an ``(N, C + 3)`` array whose other columns hold NaN. The interface does not promise
    contiguous inputs; a kernel that reads its input's memory as if it were ``(N, C)`` C-contiguous
    reads the NaN (and wrong rows) and fails the comparison."""
    wide = np.full((a.shape[0], a.shape[1] + 3), np.nan, dtype=a.dtype)
    wide[:, :a.shape[1]] = a
    return wide[:, :a.shape[1]]


SITES = {  # name -> kwargs of random_sites
    "b2_odd": dict(shape=(7, 8, 9), batch=2, density=0.3),
    "b1_dense": dict(shape=(6, 6, 6), batch=1, density=0.9),
    "b3_sparse": dict(shape=(10, 5, 12), batch=3, density=0.08),
    "empty": dict(shape=(4, 4, 4), batch=1, density=0.0),
    "single": dict(shape=(1, 1, 1), batch=1, density=1.0),
}


# --- checks ----------------------------------------------------------------------------------------

def check_hash(be, n: int, seed: int = 0):
    """build_index + lookup of present keys (shuffled), absent keys and edge values.

    Half the keys are a dense cluster (neighbouring voxels: consecutive packed keys), half spread
    over the whole key space, in batches 0-2.
    """
    rng = np.random.default_rng(seed)
    cluster = np.stack([rng.integers(0, 3, 2 * n + 1), rng.integers(0, 8, 2 * n + 1),
                        rng.integers(0, 16, 2 * n + 1), rng.integers(0, 32, 2 * n + 1)], axis=1)
    spread = np.stack([rng.integers(0, 3, 2 * n + 1)] + [rng.integers(0, C.MAX_AXIS, 2 * n + 1) for _ in range(3)], axis=1)
    keys = np.unique(C.pack_keys(np.concatenate([cluster[: n // 2 + 1], spread])))
    keys = keys[rng.permutation(len(keys))[:n]]
    absent = np.setdiff1d(np.concatenate([keys + 1, keys - 1, keys + (1 << 16), rng.integers(0, 1 << 62, 64)]), keys)
    top = C.pack_keys(np.array([[C.MAX_BATCH - 1] + [C.MAX_AXIS - 1] * 3]))
    edge = np.array([0, 1, (1 << 63) - 1, -1, -(1 << 63)], dtype=np.int64)  # -1 is the empty-slot bit pattern
    queries = np.concatenate([keys[rng.permutation(len(keys))], absent, top, edge]).astype(np.int64)
    index = be.build_index(keys)
    got = be.lookup(index, queries)
    want = REF.lookup(REF.build_index(keys), queries)
    assert_same_ints(got, want, f"lookup after build_index of {len(keys)} keys")
    assert_same_ints(be.lookup(index, queries[:0]), want[:0], "lookup of 0 queries")


def check_neighbor_table(be, sites: str, kernel_size: int, dilation: int, seed: int = 0):
    """neighbor_table of centred offsets (full and lower half) and of window offsets, then mirror."""
    x = random_sites(seed, **SITES[sites])
    index, ref_index = be.build_index(x.keys), REF.build_index(x.keys)
    offsets = KM.centred_offsets(kernel_size, dilation)
    K, half = len(offsets), len(offsets) // 2
    want = REF.neighbor_table(ref_index, x.coords, x.spatial_shape, offsets)
    got = be.neighbor_table(index, x.coords, x.spatial_shape, offsets)
    assert_same_ints(got, want, f"neighbor_table k={kernel_size} d={dilation} on {sites}")
    lower = REF.neighbor_table(ref_index, x.coords, x.spatial_shape, offsets[:half])
    assert_same_ints(be.neighbor_table(index, x.coords, x.spatial_shape, offsets[:half]), lower, "lower half")
    assert_same_ints(be.mirror_table(lower, K), REF.mirror_table(lower, K), f"mirror_table K={K} on {sites}")
    window = KM.window_offsets(kernel_size, dilation)  # one-sided offsets, as a strided map uses
    assert_same_ints(be.neighbor_table(index, x.coords, x.spatial_shape, window),
                     REF.neighbor_table(ref_index, x.coords, x.spatial_shape, window), "window offsets")


def check_transpose_table(be, sites: str, seed: int = 0):
    """transpose_table of down, inverse and submanifold tables, and of a 0-column table."""
    x, maps = sites_and_maps(seed, sites)
    for name, kmap in maps.items():
        nbr = np.asarray(kmap.neighbors)
        assert_same_ints(be.transpose_table(nbr, kmap.n_in), REF.transpose_table(nbr, kmap.n_in),
                         f"transpose_table of {name} on {sites}")
    empty = np.zeros((len(x), 0), np.int32)
    assert_same_ints(be.transpose_table(empty, 3), REF.transpose_table(empty, 3), "transpose of (N, 0)")


DOWN_GEOMETRIES = {  # name -> (kernel_size, stride, padding, dilation) of check_down_table
    "k2s2": (2, 2, 0, 1),
    "k3s2p1": (3, 2, 1, 1),
    "k3s1": (3, 1, 0, 1),
    "k3s2d2": (3, 2, 0, 2),
    "k123_s213_p011": ((1, 2, 3), (2, 1, 3), (0, 1, 1), 1),
    "k213s213": ((2, 1, 3), (2, 1, 3), 0, 1),  # a tiling window again, anisotropic
}


def check_down_table(be, sites: str, geometry: str, seed: int = 0):
    """down_table (output sites and table) exactly equal to the reference's, then the whole
    kmap.down_map pipeline with ``be`` selected; twice, bitwise equal. Skips geometries the grid
    cannot hold (no output)."""
    x = random_sites(seed, **SITES[sites])
    k, s, p, d = (C.as_triple(v, n) for v, n in zip(DOWN_GEOMETRIES[geometry], ("k", "s", "p", "d")))
    try:
        out_shape = KM.down_output_shape(x.spatial_shape, k, s, p, d)
    except ValueError:
        return
    offsets = KM.window_offsets(k, d)
    shuffled = x.coords[np.random.default_rng(seed + 3).permutation(len(x))]  # any row order is allowed
    what = f"down_table {geometry} on {sites}"
    want = REF.down_table(shuffled, offsets, s, p, out_shape)
    got = be.down_table(shuffled, offsets, s, p, out_shape)
    assert_same_ints(got[0], want[0], f"{what} (shuffled rows): output sites")
    assert_same_ints(got[1], want[1], f"{what} (shuffled rows): table")
    want_coords, want_table = REF.down_table(x.coords, offsets, s, p, out_shape)
    got_coords, got_table = be.down_table(x.coords, offsets, s, p, out_shape)
    assert_same_ints(got_coords, want_coords, f"{what}: output sites")
    assert_same_ints(got_table, want_table, f"{what}: table")
    again = be.down_table(x.coords, offsets, s, p, out_shape)
    assert_bitwise(again[0], got_coords, what)
    assert_bitwise(again[1], got_table, what)
    y = SparseTensor(x.coords, np.zeros((len(x), 1), np.float32), x.spatial_shape, x.batch_size)
    with use_backend(be):
        kmap, coarse = KM.down_map(y, k, s, p, d)
    assert isinstance(coarse.coords, np.ndarray), f"down_map {geometry}: coarse coords must be host NumPy"
    assert_same_ints(coarse.coords, want_coords, f"down_map {geometry} on {sites}: coarse sites")
    assert_same_ints(kmap.neighbors, want_table, f"down_map {geometry} on {sites}: table")


def check_submanifold_map(be, sites: str, kernel_size: int, dilation: int, seed: int = 0):
    """The whole kmap.submanifold_map pipeline with ``be`` selected (index, lower half, mirror; or
    the backend's optional ``submanifold_table``, which is also checked directly, twice)."""
    x = random_sites(seed, **SITES[sites])
    y = SparseTensor(x.coords, np.zeros((len(x), 1), np.float32), x.spatial_shape, x.batch_size)
    with use_backend("reference"):
        want = KM.submanifold_map(x, kernel_size, dilation).neighbors
    with use_backend(be):
        got = KM.submanifold_map(y, kernel_size, dilation).neighbors
    assert_same_ints(got, want, f"submanifold_map k={kernel_size} d={dilation} on {sites}")
    if hasattr(be, "submanifold_table"):
        offsets = KM.centred_offsets(kernel_size, dilation)
        what = f"submanifold_table k={kernel_size} d={dilation} on {sites}"
        first = be.submanifold_table(x.keys, x.spatial_shape, offsets)
        assert_same_ints(first, want, what)
        assert_bitwise(be.submanifold_table(x.keys, x.spatial_shape, offsets), first, what)


def check_conv(be, sites: str, map_name: str, cin: int, cout: int, dtype, seed: int = 0):
    """conv_forward, the input gradient (forward on the transposed map) and conv_weight_grad."""
    kmap = sites_and_maps(seed, sites)[1][map_name]
    rng = np.random.default_rng(seed + 1)
    feats = _feats(rng, kmap.n_in, cin, dtype)
    weight = rng.standard_normal((kmap.K, cin, cout)).astype(dtype)
    grad_out = _feats(rng, kmap.n_out, cout, dtype)
    what = f"{map_name} on {sites}, {cin}->{cout} {np.dtype(dtype)}"
    out = be.conv_forward(feats, weight, kmap)
    assert_close(out, REF.conv_forward(feats, weight, kmap), f"conv_forward {what}")
    assert_bitwise(out, be.conv_forward(feats, weight, kmap), f"conv_forward {what}")
    _check_forward_bias(be, "conv_forward", (feats, weight, kmap), out, rng, what)
    wt = np.ascontiguousarray(weight.transpose(0, 2, 1))
    t = kmap.transposed()
    assert_close(be.conv_forward(grad_out, wt, t), REF.conv_forward(grad_out, wt, t), f"conv input grad {what}")
    gw = be.conv_weight_grad(feats, grad_out, kmap)
    assert_close(gw, REF.conv_weight_grad(feats, grad_out, kmap), f"conv_weight_grad {what}")
    assert_bitwise(gw, be.conv_weight_grad(feats, grad_out, kmap), f"conv_weight_grad {what}")


def check_depthwise(be, sites: str, map_name: str, channels: int, dtype, seed: int = 0):
    """depthwise_forward, its input gradient and depthwise_weight_grad."""
    kmap = sites_and_maps(seed, sites)[1][map_name]
    rng = np.random.default_rng(seed + 2)
    feats = _feats(rng, kmap.n_in, channels, dtype)
    weight = rng.standard_normal((kmap.K, channels)).astype(dtype)
    grad_out = _feats(rng, kmap.n_out, channels, dtype)
    what = f"{map_name} on {sites}, C={channels} {np.dtype(dtype)}"
    out = be.depthwise_forward(feats, weight, kmap)
    assert_close(out, REF.depthwise_forward(feats, weight, kmap), f"depthwise_forward {what}")
    assert_bitwise(out, be.depthwise_forward(feats, weight, kmap), f"depthwise_forward {what}")
    _check_forward_bias(be, "depthwise_forward", (feats, weight, kmap), out, rng, what)
    t = kmap.transposed()
    assert_close(be.depthwise_forward(grad_out, weight, t), REF.depthwise_forward(grad_out, weight, t),
                 f"depthwise input grad {what}")
    gw = be.depthwise_weight_grad(feats, grad_out, kmap)
    assert_close(gw, REF.depthwise_weight_grad(feats, grad_out, kmap), f"depthwise_weight_grad {what}")
    assert_bitwise(gw, be.depthwise_weight_grad(feats, grad_out, kmap), f"depthwise_weight_grad {what}")


def _check_forward_bias(be, kernel, args, out, rng, what):
    """The optional ``<kernel>_bias`` (where the backend has it) gives the bits of ``out + bias``,
    ``out`` the kernel's result on ``args`` ``(feats, weight, kmap)``, and ``out`` without a bias."""
    fused = getattr(be, kernel + "_bias", None)
    if fused is None:
        return
    bias = be.xp.asarray(rng.standard_normal(out.shape[1]).astype(out.dtype))
    assert_bitwise(fused(*args, bias), out + bias, f"{kernel}_bias {what}: not {kernel} + bias")
    assert_bitwise(fused(*args, None), out, f"{kernel}_bias {what} without a bias")


def check_segment_sum(be, n_rows: int, n_segments: int, channels: int, dtype, seed: int = 0):
    """segment_sum with empty segments, a non-zero start and rows after the last segment."""
    rng = np.random.default_rng(seed)
    values = _feats(rng, n_rows, channels, dtype)
    cuts = np.sort(rng.integers(0, n_rows + 1, max(n_segments + 1, 1)))
    if n_segments >= 3:
        cuts[1] = cuts[2]  # an empty segment
    seg_ptr = cuts[: n_segments + 1].astype(np.int64)
    got = be.segment_sum(be.xp.asarray(strided(values)), seg_ptr)
    assert_close(got, REF.segment_sum(values, seg_ptr), f"segment_sum N={n_rows} S={n_segments} C={channels}")
    assert_bitwise(got, be.segment_sum(values, seg_ptr), "segment_sum")


def check_pointwise(be, n_rows: int, channels: int, dtype, seed: int = 0):
    """gelu, gelu_grad, layer_norm, layer_norm_grad (with and without a weight), grn and grn_grad vs
    the reference; inputs spread to ±10 so the GELU tails are exercised. The ``(N, C)`` inputs ``x``
    and ``grad`` reach the backend as :func:`strided` views."""
    rng = np.random.default_rng(seed)
    x, g = 3 * _feats(rng, n_rows, channels, dtype), _feats(rng, n_rows, channels, dtype)
    w, b = _feats(rng, 1, channels, dtype)[0], _feats(rng, 1, channels, dtype)[0]
    what = f"N={n_rows} C={channels}"
    xp_ = be.xp
    xd, gd = xp_.asarray(strided(x)), xp_.asarray(strided(g))
    assert_close(be.gelu(xd), REF.gelu(x), f"gelu {what}")
    assert_close(be.gelu_grad(xd, gd), REF.gelu_grad(x, g), f"gelu_grad {what}")
    ln = REF.layer_norm(x, w, b, 1e-6)
    for name, got, want in zip(("y", "xhat", "rstd"), be.layer_norm(xd, xp_.asarray(w), xp_.asarray(b), 1e-6), ln):
        assert_close(got, want, f"layer_norm {name} {what}")
    for weight in (w, None):
        wd = None if weight is None else xp_.asarray(weight)
        got = be.layer_norm_grad(gd, xp_.asarray(ln[1]), xp_.asarray(ln[2]), wd)
        for name, a, want in zip(("gx", "gw", "gb"), got, REF.layer_norm_grad(g, ln[1], ln[2], weight)):
            assert_close(a, want, f"layer_norm_grad {name} {what} weight={'yes' if weight is not None else 'None'}")
    assert_bitwise(be.gelu_grad(xd, gd), be.gelu_grad(xd, gd), "gelu_grad")
    assert_bitwise(be.layer_norm_grad(gd, xp_.asarray(ln[1]), xp_.asarray(ln[2]), None)[1],
                   be.layer_norm_grad(gd, xp_.asarray(ln[1]), xp_.asarray(ln[2]), None)[1], "layer_norm_grad")
    _check_grn(be, x, g, w, b, what)
    _check_optional_rows(be, x, g, what)


def _check_optional_rows(be, x, g, what):
    """The optional ``add`` and ``column_sum`` (where the backend has them) give NumPy's bits: ``x + g``
    and ``x.sum(axis=0)`` (a bias gradient), also of a strided view and of one column."""
    xp_ = be.xp
    if hasattr(be, "add"):
        assert bitwise_equal(be.add(xp_.asarray(strided(x)), xp_.asarray(g)), x + g), f"add {what}: not NumPy's bits"
    if hasattr(be, "column_sum"):
        for rows, kind in ((x, ""), (strided(x), " strided"), (x[:, :1], " one column")):
            assert bitwise_equal(be.column_sum(xp_.asarray(rows)), rows.sum(axis=0)), \
                f"column_sum{kind} {what}: not NumPy's bits (x.sum(axis=0))"


def _check_grn(be, x, g, gamma, beta, what):
    """grn and grn_grad on three samples (the middle one empty), then on the rows as one sample."""
    n = len(x)
    xp_ = be.xp
    xd, gd, gam = xp_.asarray(strided(x)), xp_.asarray(strided(g)), xp_.asarray(gamma)
    for ptr in (np.array([0, n // 3, n // 3, n], np.int64), np.array([0, n], np.int64)):
        y, G = REF.grn(x, gamma, beta, ptr, 1e-6)
        for name, got, want in zip(("y", "G"), be.grn(xd, gam, xp_.asarray(beta), xp_.asarray(ptr), 1e-6), (y, G)):
            assert_close(got, want, f"grn {name} {what} S={len(ptr) - 1}")
        got = be.grn_grad(gd, xd, gam, xp_.asarray(G), xp_.asarray(ptr), 1e-6)
        for name, a, want in zip(("dx", "dgamma", "dbeta"), got, REF.grn_grad(g, x, gamma, G, ptr, 1e-6)):
            assert_close(a, want, f"grn_grad {name} {what} S={len(ptr) - 1}")
        assert_bitwise(got[1], be.grn_grad(gd, xd, gam, xp_.asarray(G), xp_.asarray(ptr), 1e-6)[1], "grn_grad")


def check_zero_rows(be, dtype):
    """0-row inputs flow through every kernel: 0-row outputs, zero weight gradients."""
    x = random_sites(0, **SITES["empty"])
    assert len(x) == 0
    index = be.build_index(x.keys)
    assert_same_ints(be.lookup(index, np.array([0, 5], np.int64)), np.array([-1, -1], np.int32), "lookup in empty index")
    offsets = KM.centred_offsets(3)
    assert_same_ints(be.neighbor_table(index, x.coords, x.spatial_shape, offsets), np.zeros((0, 27), np.int32),
                     "neighbor_table of 0 rows")
    assert_same_ints(be.mirror_table(np.zeros((0, 13), np.int32), 27), np.zeros((0, 27), np.int32), "mirror of 0 rows")
    if hasattr(be, "submanifold_table"):
        assert_same_ints(be.submanifold_table(x.keys, x.spatial_shape, offsets), np.zeros((0, 27), np.int32),
                         "submanifold_table of 0 rows")
    empty = KM.KernelMap(np.zeros((0, 27), np.int32), 0, offsets, "submanifold", mirror_symmetric=True)
    orphan = KM.KernelMap(np.full((4, 27), -1, np.int32), 0, offsets, "inverse")  # outputs with no input
    for kmap in (empty, orphan):
        f = np.zeros((0, 3), dtype)
        assert_close(be.conv_forward(f, np.ones((27, 3, 5), dtype), kmap), np.zeros((kmap.n_out, 5), dtype), "conv 0 rows")
        assert_close(be.conv_weight_grad(f, np.ones((kmap.n_out, 5), dtype), kmap), np.zeros((27, 3, 5), dtype),
                     "conv weight grad 0 rows")
        assert_close(be.depthwise_forward(f, np.ones((27, 3), dtype), kmap), np.zeros((kmap.n_out, 3), dtype),
                     "depthwise 0 rows")
        assert_close(be.depthwise_weight_grad(f, np.ones((kmap.n_out, 3), dtype), kmap), np.zeros((27, 3), dtype),
                     "depthwise weight grad 0 rows")
    if hasattr(be, "add"):
        assert_close(be.add(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)), np.zeros((0, 3), dtype), "add of 0 rows")
    if hasattr(be, "column_sum"):
        assert_close(be.column_sum(np.zeros((0, 3), dtype)), np.zeros(3, dtype), "column_sum of 0 rows")
    assert_close(be.segment_sum(np.zeros((0, 3), dtype), np.array([0], np.int64)), np.zeros((0, 3), dtype),
                 "segment_sum of 0 segments")
    assert_close(be.segment_sum(np.zeros((0, 3), dtype), np.array([0, 0, 0], np.int64)), np.zeros((2, 3), dtype),
                 "segment_sum of empty segments")
