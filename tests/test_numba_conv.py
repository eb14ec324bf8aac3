"""The Numba convolution kernels (backends/numba_conv.py): every tiling branch against the NumPy
reference, and the same bits for forward, dX and dW on 1 and 2 threads."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparseconv
from sparseconv.kmap import KernelMap
from sparseconv.testing.kernel_checks import REF, assert_close, check_conv

nc = pytest.importorskip("sparseconv.backends.numba_conv")
ROOT = Path(__file__).resolve().parents[1]

# (Cin, Cout): below, at and above one strip of `lanes` channels (16 float32, 8 float64) and one
# tile of ROWS = 6, odd widths, Cin != Cout, and both orientations of the weight-gradient tile.
WIDTHS = [(1, 1), (1, 40), (40, 1), (3, 5), (5, 3), (16, 16), (17, 33), (33, 17), (32, 32), (65, 16),
          (16, 65), (64, 64)]
DTYPES = [np.float32, np.float64]
# Maps of the shared checks: dense and sparse submanifold, strided, inverse (one neighbour per
# row), a single site (fewer rows than a tile) and no site at all.
MAPS = [("b2_odd", "subm_k3_d1"), ("b1_dense", "subm_k3_d1"), ("b3_sparse", "down_k3s2p1"),
        ("b2_odd", "inverse_k2s2"), ("b2_odd", "subm_k1_d1"), ("single", "subm_k3_d1"), ("empty", "subm_k3_d1")]


@pytest.fixture(scope="module")
def numba_be():
    be = sparseconv.backends.load_backend("numba")
    saved = be.parallel_min_work
    be.parallel_min_work = 0  # the parallel loops even on these small cases
    yield be
    be.parallel_min_work = saved


def test_the_widths_reach_every_branch():
    """WIDTHS covers both weight-gradient orientations, with and without each padded copy, and
    forward outputs narrower than, equal to and wider than one tile (with a partial last tile)."""
    for dtype in DTYPES:
        plans = [nc.weight_grad_plan(cin, cout, dtype) for cin, cout in WIDTHS]
        assert {vec_is_input for vec_is_input, _, _ in plans} == {True, False}
        assert {bool(vec_rows) for _, vec_rows, _ in plans} == {True, False}
        assert {bool(bcast_rows) for _, _, bcast_rows in plans} == {True, False}
        lanes = nc.tile_lanes(dtype)
        couts = [cout for _, cout in WIDTHS]
        assert min(couts) < lanes and any(c % lanes == 0 for c in couts) and any(c > lanes and c % lanes for c in couts)


def test_weight_grad_plan_puts_the_wider_operand_in_the_lanes():
    assert nc.weight_grad_plan(16, 16, np.float32) == (True, 0, 0)
    assert nc.weight_grad_plan(1, 32, np.float32) == (False, 0, 5)  # 32 in lanes, the 1 input channel broadcast
    assert nc.weight_grad_plan(32, 1, np.float32) == (True, 0, 5)  # (5 rows after the last for its broadcasts)
    assert nc.weight_grad_plan(17, 33, np.float32) == (False, 1, 0)  # 3 strips x 18 rows < 2 strips x 36 rows


def test_weight_grad_chunks_depend_on_shapes_only():
    assert nc.weight_grad_chunks(100, 27, 16, 16, 4) == 1
    assert nc.weight_grad_chunks(5 * nc.WGRAD_MIN_CHUNK_ROWS, 27, 16, 16, 4) == 5
    assert nc.weight_grad_chunks(10**7, 27, 16, 16, 4) == nc.WGRAD_MAX_CHUNKS
    per_chunk = 27 * 256 * 256 * 4  # the partial dW's are bounded: fewer chunks for wide channels
    assert nc.weight_grad_chunks(10**7, 27, 256, 256, 4) == nc.WGRAD_PARTIAL_BYTES // per_chunk


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cin, cout", WIDTHS, ids=[f"{a}x{b}" for a, b in WIDTHS])
@pytest.mark.parametrize("sites, map_name", MAPS, ids=[f"{s}-{m}" for s, m in MAPS])
def test_numba_conv_matches_the_reference(numba_be, sites, map_name, cin, cout, dtype):
    """Forward, dX (the forward on the transposed map) and dW, each repeated bitwise."""
    check_conv(numba_be, sites, map_name, cin, cout, dtype)


def _table(rng, n_out, n_in, K, density):
    """A neighbour table with unique rows per column; rows 0-6 (more than a tile) and row 10 have
    no neighbour, column 1 no pair."""
    table = np.full((n_out, K), -1, dtype=np.int32)
    for k in range(K):
        rows = np.flatnonzero(rng.random(n_out) < density)
        table[rows, k] = rng.permutation(n_in)[:len(rows)] if len(rows) <= n_in else -1
    table[:7], table[10], table[:, 1] = -1, -1, -1
    return table


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n_out, cin, cout", [(29, 5, 17), (29, 16, 16), (5000, 16, 8), (5000, 3, 20)])
def test_rows_without_neighbours_and_several_weight_grad_chunks(numba_be, n_out, cin, cout, dtype):
    """Rows and whole tiles without a neighbour, an offset without a pair, and (5000 rows) a weight
    gradient summed over more than one chunk."""
    rng = np.random.default_rng(n_out + cin)
    n_in, K = n_out + 13, 5
    kmap = KernelMap(_table(rng, n_out, n_in, K, 0.7), n_in, np.zeros((K, 3), np.int32), "down")
    assert (nc.weight_grad_chunks(n_out, K, cin, cout, np.dtype(dtype).itemsize) > 1) == (n_out == 5000)
    feats = rng.standard_normal((n_in, cin)).astype(dtype)
    weight = rng.standard_normal((K, cin, cout)).astype(dtype)
    grad = rng.standard_normal((n_out, cout)).astype(dtype)
    out = numba_be.conv_forward(feats, weight, kmap)
    assert not out[:7].any() and not out[10].any()
    assert_close(out, REF.conv_forward(feats, weight, kmap), "conv_forward")
    wt = np.ascontiguousarray(weight.transpose(0, 2, 1))
    with sparseconv.use_backend("reference"):
        t = kmap.transposed()
    assert_close(numba_be.conv_forward(grad, wt, t), REF.conv_forward(grad, wt, t), "dX")
    gw = numba_be.conv_weight_grad(feats, grad, kmap)
    assert not gw[1].any()
    assert_close(gw, REF.conv_weight_grad(feats, grad, kmap), "conv_weight_grad")


def test_weight_grad_orientations_give_the_same_bits():
    """Each dW entry is one chain of FMAs over the pairs in row order, whichever operand fills the
    lanes: the orientation is a speed choice only."""
    rng = np.random.default_rng(5)
    table = _table(rng, 300, 310, 4, 0.8)
    x = rng.standard_normal((310, 16)).astype(np.float32)
    dy = rng.standard_normal((300, 16)).astype(np.float32)
    chunks = nc.weight_grad_chunks(300, 4, 16, 16, 4)
    a = (x, dy, table, True, chunks)
    b = (dy, x, table, False, chunks)
    assert np.array_equal(nc._compiled(nc._weight_grad_tiles, a)(*a), nc._compiled(nc._weight_grad_tiles, b)(*b))


_THREADS_CHECK = r"""
import numpy as np, numba, sparseconv
from sparseconv.kmap import submanifold_map
from sparseconv.testing.kernel_checks import random_sites
be = sparseconv.backends.load_backend("numba")
be.parallel_min_work = 0
x = random_sites(3, shape=(24, 20, 28), batch=2, density=0.35)
with sparseconv.use_backend("numba"):
    kmap = submanifold_map(x, 3)
    t = kmap.transposed()
assert kmap.n_out > 2 * 2048  # more than one weight-gradient chunk
results = {}
for threads in (1, 2):
    numba.set_num_threads(threads)
    for cin, cout, dtype in [(16, 16, np.float32), (17, 5, np.float32), (1, 40, np.float32), (64, 32, np.float32),
                             (9, 7, np.float64)]:
        rng = np.random.default_rng(cin * 100 + cout)
        f = rng.standard_normal((kmap.n_in, cin)).astype(dtype)
        w = rng.standard_normal((27, cin, cout)).astype(dtype)
        g = rng.standard_normal((kmap.n_out, cout)).astype(dtype)
        got = (be.conv_forward(f, w, kmap), be.conv_forward(g, np.ascontiguousarray(w.transpose(0, 2, 1)), t),
               be.conv_weight_grad(f, g, kmap))
        results.setdefault((cin, cout), []).append(got)
for key, (one, two) in results.items():
    for name, a, b in zip(("forward", "dX", "dW"), one, two):
        assert a.tobytes() == b.tobytes(), (key, name)
print("same bits on 1 and 2 threads:", len(results), "widths")
"""


def test_forward_dx_dw_same_bits_on_1_and_2_threads():
    """A subprocess with NUMBA_NUM_THREADS=2, whatever this run has."""
    env = dict(os.environ, NUMBA_NUM_THREADS="2",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _THREADS_CHECK], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "same bits on 1 and 2 threads: 5 widths" in proc.stdout


def _fresh_asm(kernel, args):
    """``(result, machine code)`` of a fresh, uncached copy of ``kernel`` compiled by ``_compiled``
    (Numba cannot show the code of a kernel loaded from its cache)."""
    import numba
    fresh = numba.njit(parallel=True, fastmath={"contract"})(kernel.py_func)
    result = nc._compiled(fresh, args)(*args)
    return result, "\n".join(fresh.inspect_asm().values())


def test_float64_tiles_are_fma_chains_in_the_compiling_process():
    """Each float64 output of the forward and each dW entry is exactly one chain of FMAs (checked
    with exact rational arithmetic) in a fresh compilation by ``_compiled`` — what the compiling
    process runs, where the kernels loaded from Numba's cache by later processes always were.
    SLP-vectorised, some float64 sums were not one FMA chain in the compiling process only."""
    from fractions import Fraction

    def fma(a, b, c):
        return float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))

    rng = np.random.default_rng(6)
    n, cin, cout, K = 60, 3, 8, 2
    x = rng.standard_normal((n, cin))
    w = rng.standard_normal((K, cin, cout))
    dy = rng.standard_normal((n, cout))
    nbr = rng.integers(-1, n, size=(n, K)).astype(np.int32)
    lanes = nc.tile_lanes(np.float64)
    args = (x, np.zeros(cin), nc.weight_tiles(w, lanes), nbr, np.zeros(0), np.empty((n, cout)))
    out, _ = _fresh_asm(nc._forward_tiles, args)
    want = np.zeros((n, cout))
    for o in range(n):
        for c in range(cout):
            acc = 0.0
            for k in range(K):
                for ci in range(cin):
                    acc = fma(x[nbr[o, k], ci] if nbr[o, k] >= 0 else 0.0, w[k, ci, c], acc)
            want[o, c] = acc
    assert np.array_equal(out, want), f"{int((out != want).sum())} of {out.size} forward outputs"
    vec_is_input, _, _ = nc.weight_grad_plan(cin, cout, np.float64)
    pair = (x, dy) if vec_is_input else (dy, x)
    dw, _ = _fresh_asm(nc._weight_grad_tiles, (*pair, nbr, vec_is_input, 1))
    want = np.zeros((K, cin, cout))
    for k in range(K):
        for ci in range(cin):
            for co in range(cout):
                acc = 0.0
                for o in range(n):
                    if nbr[o, k] >= 0:
                        acc = fma(x[nbr[o, k], ci], dy[o, co], acc)
                want[k, ci, co] = acc
    assert np.array_equal(dw, want), f"{int((dw != want).sum())} of {dw.size} dW entries"


def test_the_tiles_become_vector_fma_code(monkeypatch):
    """The point of the kernels: on an x86-64 CPU with AVX2 and FMA the register tile compiles to
    vector FMAs (two 256-bit ones per tile row, or one 512-bit one with AVX-512), with LLVM's SLP
    vectoriser on as ``_compiled`` sets it — also after a ``NUMBA_*`` variable changed, which makes
    Numba's compiler reread its configuration — and neither kernel reads or writes its tile with
    gathers or scatters (what the loop vectoriser made of them on an AVX-512 CPU: some thirty times
    slower, README)."""
    import llvmlite.binding as llvm
    features = llvm.get_host_cpu_features().flatten()
    if "+avx2" not in features or "+fma" not in features:
        pytest.skip("needs an x86-64 CPU with AVX2 and FMA")
    monkeypatch.setenv("NUMBA_DEBUG_CACHE", "0")
    x = np.ones((10, 16), np.float32)
    args = (x, np.zeros(16, np.float32), nc.weight_tiles(np.ones((27, 16, 16), np.float32), 16),
            np.zeros((10, 27), np.int32), np.zeros(0, np.float32), np.empty((10, 16), np.float32))
    out, forward = _fresh_asm(nc._forward_tiles, args)
    assert np.all(out == 27 * 16)
    fmas = [line for line in forward.splitlines() if "vfmadd" in line]
    n_ymm, n_zmm = sum("ymm" in line for line in fmas), sum("zmm" in line for line in fmas)
    assert n_ymm >= 2 * nc.ROWS or n_zmm >= nc.ROWS, (n_ymm, n_zmm)
    dw, grad = _fresh_asm(nc._weight_grad_tiles, (x, x, np.zeros((10, 27), np.int32), True, 1))
    assert np.all(dw == 10)  # every row's neighbour at every offset is row 0, x all ones
    for name, asm in (("forward", forward), ("weight gradient", grad)):
        slow = [line.strip() for line in asm.splitlines() if "gather" in line or "scatter" in line]
        assert not slow, (name, slow[:4])


def test_numba_pointwise_kernels_take_strided_inputs_and_return_row_major_arrays():
    """The kernels write into arrays the backend allocates (NumPy's, for huge pages); a strided
    input (a transposed view) still gives a C-ordered result equal to the reference's."""
    from sparseconv.backends import numba_cpu, reference
    ref, be = reference.backend, numba_cpu.backend
    x = np.random.default_rng(3).standard_normal((12, 40)).astype(np.float32).T  # (40, 12), strided
    g = np.random.default_rng(4).standard_normal((12, 40)).astype(np.float32).T
    w, b = np.linspace(0.5, 1.5, 12, dtype=np.float32), np.linspace(-1, 1, 12, dtype=np.float32)
    pairs = [(be.gelu(x), ref.gelu(x)), (be.gelu_grad(x, g), ref.gelu_grad(x, g))]
    y, xhat, rstd = be.layer_norm(x, w, b, 1e-6)
    pairs += list(zip((y, xhat, rstd), ref.layer_norm(x, w, b, 1e-6)))
    pairs += list(zip(be.layer_norm_grad(g, xhat, rstd, w), ref.layer_norm_grad(g, xhat, rstd, w)))
    for got, want in pairs:
        assert got.flags.c_contiguous and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("channels", [8, 16, 24])
def test_depthwise_tiles_give_the_plain_loops_bits(numba_be, channels, monkeypatch):
    """The register-tile depthwise kernel against the plain loop it stands in for, bit for bit: rows
    and whole tiles without a neighbour, an offset without a pair, a last tile of fewer rows
    (n_out = 29), a negative weight (0·w = -0 added where a neighbour is absent); and the backend
    takes it for narrow float32 rows only. With a bias, the tiles add it before the store: the bits
    of the plain loop's output plus the bias."""
    from sparseconv.backends import numba_cpu
    rng = np.random.default_rng(channels)
    n_out, K = 29, 5
    nbr = _table(rng, n_out, n_out + 13, K, 0.7)
    feats = rng.standard_normal((n_out + 13, channels)).astype(np.float32)
    weight = rng.standard_normal((K, channels)).astype(np.float32)
    weight[0, 0] = -1.0
    plain = numba_cpu._depthwise_forward(feats, weight, nbr, np.empty((n_out, channels), np.float32))
    tiled = nc.depthwise_forward(feats, weight, nbr)
    assert tiled.tobytes() == plain.tobytes()
    assert not tiled[:7].any() and not tiled[10].any()
    bias = rng.standard_normal(channels).astype(np.float32)
    assert nc.depthwise_forward(feats, weight, nbr, bias).tobytes() == (plain + bias).tobytes()
    kmap = KernelMap(nbr, n_out + 13, np.zeros((K, 3), np.int32), "down")
    calls = []
    original = nc.depthwise_forward
    monkeypatch.setattr(nc, "depthwise_forward", lambda *a: calls.append(a) or original(*a))
    assert numba_be.depthwise_forward(feats, weight, kmap).tobytes() == plain.tobytes()
    assert numba_be.depthwise_forward_bias(feats, weight, kmap, bias).tobytes() == (plain + bias).tobytes()
    f64 = feats.astype(np.float64), weight.astype(np.float64)
    plain64 = numba_cpu._depthwise_forward(*f64, nbr, np.empty((n_out, channels)))
    assert numba_be.depthwise_forward_bias(*f64, kmap, bias.astype(np.float64)).tobytes() == \
        (plain64 + bias.astype(np.float64)).tobytes()
    assert len(calls) == 2 * (channels <= nc.DW_MAX_CHANNELS)  # float64 and wide rows: the plain loop


def test_depthwise_tiles_refuse_a_partial_tile():
    with pytest.raises(ValueError, match="multiple of 8 channels, got 5"):
        nc.depthwise_forward(np.zeros((3, 5), np.float32), np.zeros((1, 5), np.float32), np.zeros((3, 1), np.int32))
