"""Claims of docs/concepts.md about the kernels that the conformance suite does not pin down by itself:
how the Numba weight gradient orients its tile, the thread-count independence of the weight gradient,
and the transposed map that makes dX a forward pass without a kernel flip."""
import numpy as np
import pytest

import sparseconv
from sparseconv import SparseTensor
from sparseconv.functional import conv as F
from sparseconv.kmap import down_map, submanifold_map

nb_cpu = pytest.importorskip("sparseconv.backends.numba_cpu")


def _sites(seed=0, shape=(6, 7, 8), density=0.4, channels=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    coords = np.argwhere(rng.random((2, *shape)) < density).astype(np.int32)
    return SparseTensor(coords, rng.standard_normal((len(coords), channels)).astype(dtype), shape, batch_size=2)


@pytest.mark.parametrize("cin, cout, vec_is_input", [(16, 16, True), (1, 32, False), (32, 1, True)])
def test_numba_weight_grad_puts_the_wider_operand_in_the_tile_lanes(cin, cout, vec_is_input):
    """The forward's tile holds output channels in its lanes; the weight gradient's holds the
    channels of the operand that pads less, and either choice gives the same bits."""
    nc = nb_cpu.numba_conv
    assert nc.weight_grad_plan(cin, cout, np.float32)[0] == vec_is_input
    x = _sites(channels=cin, dtype=np.float32)
    kmap = submanifold_map(x, 3)
    g = np.random.default_rng(1).standard_normal((len(x), cout)).astype(np.float32)
    got = nb_cpu.backend.conv_weight_grad(x.feats, g, kmap)
    chunks = nc.weight_grad_chunks(len(x), 27, cin, cout, 4)
    # the other orientation (operands padded with rows, as weight_grad would)
    vec, bcast = (g, x.feats) if vec_is_input else (x.feats, g)
    vec = nc._with_zero_rows(vec, np.empty((len(vec) + 16, vec.shape[1]), vec.dtype))
    bcast = nc._with_zero_rows(bcast, np.empty((len(bcast) + 6, bcast.shape[1]), bcast.dtype))
    args = (vec, bcast, kmap.neighbors, not vec_is_input, chunks)
    assert np.array_equal(got, nc._compiled(nc._weight_grad_tiles, args)(*args))


@pytest.mark.parametrize("cin, cout", [(16, 8), (1, 40), (17, 3)])
def test_numba_conv_kernels_give_the_same_bits_for_any_thread_count(cin, cout, monkeypatch):
    """Forward rows are owned by one tile and the weight gradient reduces fixed row chunks in order,
    so 1 thread and several give identical bits (both orientations of the weight-gradient tile)."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 or more Numba threads to compare thread counts")
    be = nb_cpu.backend
    monkeypatch.setattr(be, "parallel_min_work", 0)
    x = _sites(shape=(12, 14, 16), channels=cin, dtype=np.float32)
    kmap = submanifold_map(x, 3)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((27, cin, cout)).astype(np.float32)
    g = rng.standard_normal((len(x), cout)).astype(np.float32)
    saved, results = numba.get_num_threads(), []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append((be.conv_forward(x.feats, w, kmap), be.conv_weight_grad(x.feats, g, kmap)))
    finally:
        numba.set_num_threads(saved)
    for one, many in zip(*results):
        assert one.tobytes() == many.tobytes()


@pytest.mark.parametrize("kind", ["submanifold", "down k3 s2 p1"])
def test_transposed_map_keeps_each_pair_under_its_offset_and_gives_dx(kind):
    """``transposed().neighbors[i, k] = o`` exactly where ``neighbors[o, k] = i``, and
    ``conv_forward(dY, Wᵀ, transposed map)`` with ``Wᵀ = weight.transpose(0, 2, 1)`` (no flip) is the
    adjoint of the forward: <conv(x, W), dY> = <x, dX>."""
    x = _sites()
    kmap = submanifold_map(x, 3) if kind == "submanifold" else down_map(x, 3, 2, 1)[0]
    t = kmap.transposed()
    assert t.neighbors.shape == (kmap.n_in, kmap.K) and t.n_in == kmap.n_out
    o, k = np.nonzero(kmap.neighbors >= 0)
    assert np.array_equal(t.neighbors[kmap.neighbors[o, k], k], o)
    assert (t.neighbors >= 0).sum() == len(o)  # nothing else
    rng = np.random.default_rng(3)
    w = rng.standard_normal((kmap.K, 3, 5))
    dy = rng.standard_normal((kmap.n_out, 5))
    for name in sparseconv.available_backends():
        if name == "cupy":
            continue
        with sparseconv.use_backend(name):
            dx = F.conv_backward(dy, x.feats, w, kmap)[0]
            assert np.array_equal(dx, sparseconv.get_backend().conv_forward(dy, w.transpose(0, 2, 1).copy(), t))
            lhs = float((F.conv_forward(x.feats, w, kmap) * dy).sum())
            assert abs(lhs - float((x.feats * dx).sum())) < 1e-10 * max(1.0, abs(lhs))
