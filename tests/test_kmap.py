"""Coordinate index and kernel-map invariants, on every backend."""
import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st

import sparseconv
from sparseconv import SparseTensor, coords as C, use_backend
from sparseconv.backends.reference import backend as REF
from sparseconv.device import to_device
from sparseconv.kmap import (centred_offsets, down_map, down_output_shape, inverse_map, submanifold_map,
                             window_offsets)
from sparseconv.testing import kernel_checks as checks
from sparseconv.testing.compare import assert_same_ints
from sparseconv.testing.conformance import STRIDED
from sparseconv.testing.strategies import sparse_sites


def _tensor(coords, shape, batch):
    return SparseTensor(coords, np.zeros((len(coords), 1), np.float32), shape, batch_size=batch)


def test_index_finds_present_keys_and_misses_absent_ones(backend):
    rng = np.random.default_rng(3)
    coords = np.unique(rng.integers(0, 300, size=(5000, 4)), axis=0).astype(np.int32)
    keys = C.pack_keys(coords)
    perm = rng.permutation(len(keys))  # the index must not rely on sorted input
    index = backend.build_index(keys[perm])
    assert np.array_equal(to_device(backend.lookup(index, keys[perm]), "cpu"), np.arange(len(keys)))
    absent = C.pack_keys(rng.integers(300, 600, size=(1000, 4)).astype(np.int32))
    assert np.all(to_device(backend.lookup(index, absent), "cpu") == -1)
    assert np.all(to_device(backend.lookup(backend.build_index(keys[:0]), keys[:10]), "cpu") == -1)


def test_numba_index_capacity_and_duplicate_detection():
    from sparseconv.backends.numba_cpu import backend as nb
    keys = C.pack_keys(np.argwhere(np.ones((1, 5, 5, 5))).astype(np.int32))
    slot_keys, _ = nb.build_index(keys)
    cap = len(slot_keys)
    assert cap >= 2 * len(keys) and cap & (cap - 1) == 0
    with pytest.raises(ValueError, match="occurs twice"):
        nb.build_index(np.concatenate([keys, keys[7:8]]))


def test_offsets_are_row_major_dz_slowest():
    off = centred_offsets(3)
    assert off[0].tolist() == [-1, -1, -1] and off[1].tolist() == [-1, -1, 0] and off[13].tolist() == [0, 0, 0]
    assert centred_offsets(5, dilation=2)[0].tolist() == [-4, -4, -4]
    assert window_offsets(2).tolist() == [list(p) for p in itertools.product([0, 1], repeat=3)]
    with pytest.raises(ValueError, match="odd"):
        centred_offsets(2)


def _brute_force_pairs(coords, shape, offsets):
    present = {tuple(c) for c in coords.tolist()}
    count = 0
    for b, z, y, x in coords.tolist():
        for dz, dy, dx in offsets.tolist():
            count += (b, z + dz, y + dy, x + dx) in present
    return count


@given(sparse_sites(max_side=6))
def test_submanifold_map_invariants(backend, sites):
    coords, shape, batch = sites
    for k, d in [(1, 1), (3, 1), (3, 2), (5, 1)]:
        x = _tensor(coords, shape, batch)
        m = submanifold_map(x, k, d)
        assert m.neighbors.shape == (len(x), k ** 3) and m.neighbors.dtype == np.int32
        assert m.num_pairs == _brute_force_pairs(x.coords, shape, m.offsets)
        centre = k ** 3 // 2
        assert np.array_equal(to_device(m.neighbors[:, centre], "cpu"), np.arange(len(x)))
        counts = m.pair_counts()
        assert np.array_equal(counts, counts[::-1])  # offset and mirror have equal counts
        for j in range(m.K):
            in_rows, out_rows = (to_device(a, "cpu") for a in m.pairs(j))
            assert len(np.unique(in_rows)) == len(in_rows) and len(np.unique(out_rows)) == len(out_rows)
            expect = x.coords[out_rows, 1:] + m.offsets[j]
            assert np.array_equal(x.coords[in_rows, 1:], expect)
            assert np.array_equal(x.coords[in_rows, 0], x.coords[out_rows, 0])  # never across samples
        t = m.transposed()
        assert t.transposed() is m


@given(sparse_sites(max_side=7))
def test_down_map_k2s2_sites_are_unique_halves(backend, sites):
    coords, shape, batch = sites
    x = _tensor(coords, shape, batch)
    m, coarse = down_map(x, 2, 2)
    halves = np.unique(C.pack_keys(np.concatenate([x.coords[:, :1], x.coords[:, 1:] // 2], axis=1)))
    assert np.array_equal(coarse.keys, halves)
    assert coarse.spatial_shape == tuple(-(-s // 2) for s in shape) and coarse.stride == (2, 2, 2)
    assert m.num_pairs == len(x)  # each fine voxel has exactly one parent
    for j in range(m.K):
        in_rows, out_rows = (to_device(a, "cpu") for a in m.pairs(j))
        assert np.array_equal(coarse.coords[out_rows, 1:] * 2 + m.offsets[j], x.coords[in_rows, 1:])
    inv, fine = inverse_map(coarse, 2, 2)
    assert fine is x and inv.n_out == len(x) and inv.n_in == len(coarse)
    assert np.array_equal(to_device(inv.transposed().neighbors, "cpu"), to_device(m.neighbors, "cpu"))


DOWN_CASES = [(sites, geometry) for sites in checks.SITES for geometry in checks.DOWN_GEOMETRIES]


@pytest.mark.parametrize("sites,geometry", DOWN_CASES, ids=[f"{a}-{b}" for a, b in DOWN_CASES])
def test_down_table_equals_the_reference(backend, sites, geometry):
    """Output sites and table of every strided geometry, on several batches, odd grids, one voxel and
    no voxel, exactly the reference's."""
    checks.check_down_table(backend, sites, geometry)


@given(sparse_sites(max_side=9), st.sampled_from(STRIDED))
def test_down_table_equals_the_reference_hypothesis(backend, sites, geometry):
    coords, shape, batch = sites
    k, s, p, d = (C.as_triple(v, "g") for v in geometry)
    try:
        out_shape = down_output_shape(shape, k, s, p, d)
    except ValueError:
        return
    offsets = window_offsets(k, d)
    shuffled = np.random.default_rng(len(coords)).permutation(len(coords))
    # in canonical order (a tensor's sites; the Numba backend's tiling path) and in any other
    for rows, order in ((np.arange(len(coords)), "canonical"), (shuffled, "shuffled")):
        got = backend.down_table(coords[rows], offsets, s, p, out_shape)
        want = REF.down_table(coords[rows], offsets, s, p, out_shape)
        assert_same_ints(got[0], want[0], f"output sites ({order} rows)")
        assert_same_ints(got[1], want[1], f"table ({order} rows)")


def test_numba_tiling_down_table_takes_the_sorted_rows_path():
    """The Numba backend's tiling path (window = stride, no padding, canonical order) is taken where
    it applies — not only equal to the reference because the general path ran — and declines
    shuffled rows, padding and non-tiling windows."""
    be = sparseconv.backends.load_backend("numba")
    x = checks.random_sites(5, **checks.SITES["b2_odd"])
    for stride in [(2, 2, 2), (2, 1, 3)]:
        s, p = np.array(stride, np.int64), np.zeros(3, np.int64)
        shape = np.array(down_output_shape(x.spatial_shape, stride, stride, 0, 1), np.int64)
        offsets = np.asarray(window_offsets(stride), np.int64)
        got = be._tiling_down_table(x.coords, offsets, s, p, shape)
        assert got is not None, stride
        want = REF.down_table(x.coords, window_offsets(stride), stride, 0, tuple(shape))
        assert_same_ints(got[0], want[0], f"tiling {stride}: output sites")
        assert_same_ints(got[1], want[1], f"tiling {stride}: table")
        shuffled = x.coords[np.random.default_rng(0).permutation(len(x))]
        assert be._tiling_down_table(shuffled, offsets, s, p, shape) is None
        assert be._tiling_down_table(x.coords, offsets, s, np.ones(3, np.int64), shape) is None
    k3 = np.asarray(window_offsets(3), np.int64)
    assert be._tiling_down_table(x.coords, k3, np.full(3, 2, np.int64), np.zeros(3, np.int64), shape) is None


def test_down_table_of_no_inputs(backend):
    coords, table = backend.down_table(np.zeros((0, 4), np.int32), window_offsets(3), (2, 2, 2), (1, 1, 1), (3, 3, 3))
    assert coords.shape == (0, 4) and coords.dtype == np.int32
    assert table.shape == (0, 27) and table.dtype == np.int32


def test_maps_are_cached_per_level_and_parameters(backend):
    x = _tensor(np.argwhere(np.ones((1, 4, 4, 4))).astype(np.int32), (4, 4, 4), 1)
    assert submanifold_map(x, 3) is submanifold_map(x.replace_feats(np.ones((64, 2), np.float32)), 3)
    assert submanifold_map(x, 3) is not submanifold_map(x, 3, dilation=2)
    assert down_map(x)[1] is down_map(x)[1]


def test_inverse_map_needs_a_down_map_origin():
    x = _tensor(np.zeros((1, 4), np.int32), (2, 2, 2), 1)
    with pytest.raises(ValueError, match="not produced by a down conv"):
        inverse_map(x)
    _, coarse = down_map(x, 2, 2)
    with pytest.raises(ValueError, match="kernel_size=\\(3, 3, 3\\)"):
        inverse_map(coarse, 3, 2, 1)


# --- the Numba backend's sorted-row submanifold table (kmap.submanifold_map uses it on Numba) -------

def _hash_table(be, x, offsets):
    """The same table through the coordinate index: every offset probed (no mirror)."""
    return be.neighbor_table(be.build_index(x.keys), x.coords, x.spatial_shape, offsets)


KERNELS_DILATIONS = [(1, 1), (3, 1), (3, 2), (5, 1), (5, 3), ((1, 3, 5), 1), ((5, 1, 3), (2, 1, 1)), (3, (1, 4, 2))]


@given(sparse_sites(max_side=9), st.sampled_from(KERNELS_DILATIONS), st.sampled_from([1, 2]))
def test_numba_submanifold_table_equals_the_hash_table_and_reference(sites, geometry, threads):
    """Random layouts, batches 1-3, odd and flat grids, anisotropic kernels and dilations, at 1 and 2
    threads: the same ints as the hash path, the reference, and the mirrored map."""
    import numba

    from sparseconv.backends.numba_cpu import backend as nb_be
    coords, shape, batch = sites
    x = _tensor(coords, shape, batch)
    offsets = centred_offsets(*geometry)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        got = nb_be.submanifold_table(x.keys, shape, offsets)
    finally:
        numba.set_num_threads(before)
    assert got.dtype == np.int32 and got.shape == (len(x), len(offsets))
    assert_same_ints(got, _hash_table(nb_be, x, offsets), f"vs the hash path {geometry}")
    assert_same_ints(got, REF.neighbor_table(REF.build_index(x.keys), x.coords, shape, offsets), "vs the reference")
    half = len(offsets) // 2
    assert_same_ints(got, nb_be.mirror_table(got[:, :half], len(offsets)), "vs its own lower half mirrored")


@pytest.mark.parametrize("shape", [(3, 4, 65536), (2, 65536, 3), (65536, 2, 2), (5, 5, 1), (1, 1, 1)])
def test_numba_submanifold_table_at_grid_edges_and_batch_boundaries(shape):
    """Voxels on every face and corner of the grid, in consecutive samples: a neighbour key one past
    the last x of a row is the first x of the next row (y + 1), one past the last y the next slice,
    one past the last z the next sample — none of them may be found. Rows are given shuffled."""
    from sparseconv.backends.numba_cpu import backend as nb_be
    rng = np.random.default_rng(sum(shape))
    corners = np.array([[b, z, y, x] for b in range(3) for z in {0, shape[0] - 1} for y in {0, shape[1] - 1}
                        for x in {0, shape[2] - 1}])
    near = np.clip(corners + rng.integers(-1, 2, corners.shape) * [0, 1, 1, 1], 0, [2, *(s - 1 for s in shape)])
    inside = np.stack([rng.integers(0, 3, 400)] + [rng.integers(0, s, 400) for s in shape], axis=1)
    coords = np.unique(np.concatenate([corners, near, inside]), axis=0)
    coords = coords[rng.permutation(len(coords))].astype(np.int32)
    x = _tensor(coords, shape, 3)
    for k, d in [(3, 1), (5, 2), (3, (1, 2, 3))]:
        offsets = centred_offsets(k, d)
        got = nb_be.submanifold_table(x.keys, shape, offsets)
        assert_same_ints(got, REF.neighbor_table(REF.build_index(x.keys), x.coords, shape, offsets), f"{shape} k={k}")
        with use_backend(nb_be):
            assert_same_ints(submanifold_map(x, k, d).neighbors, got, "through kmap.submanifold_map")


def test_numba_submanifold_table_single_voxel_empty_and_refusals():
    from sparseconv.backends.numba_cpu import backend as nb_be
    offsets = centred_offsets(3)
    one = nb_be.submanifold_table(np.array([C.pack_keys(np.array([[2, 0, 0, 0]]))[0]]), (1, 1, 1), offsets)
    assert one.tolist() == [[-1] * 13 + [0] + [-1] * 13]
    assert nb_be.submanifold_table(np.zeros(0, np.int64), (4, 4, 4), offsets).shape == (0, 27)
    keys = C.pack_keys(np.array([[0, 0, 0, 1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="strictly ascending"):
        nb_be.submanifold_table(keys, (2, 2, 2), offsets)
    with pytest.raises(ValueError, match="strictly ascending"):
        nb_be.submanifold_table(keys[[1, 1]], (2, 2, 2), offsets)  # a duplicate
    with pytest.raises(ValueError, match="row-major product"):
        nb_be.submanifold_table(keys[::-1].copy(), (2, 2, 2), offsets[::-1])
