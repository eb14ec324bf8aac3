"""The conformance suite on every backend of the ``backend`` fixture (the reference, Numba, the CUDA
emulation, CuPy where it runs), one test body for all: every case of :mod:`sparseconv.testing.suite`;
random cases (hypothesis) against the dense twins, the reference in float32 and a repeat; finite
differences; empty inputs; the pointwise kernels' edge cases."""
import numpy as np
import pytest
from hypothesis import given

import sparseconv
from sparseconv import SparseTensor
from sparseconv.device import to_device
from sparseconv.functional import conv as F
from sparseconv.kmap import down_map, inverse_map, submanifold_map
from sparseconv.testing import suite
from sparseconv.testing.conformance import Case, run_sparse
from sparseconv.testing.strategies import conv_cases

SUITE = suite.cases()


@pytest.mark.parametrize("case", SUITE, ids=[c.name for c in SUITE])
def test_suite_case(backend, case):
    """The fixed list ``python -m sparseconv.verify`` and ``benchmarks/gpu_check.py`` run, case by case."""
    result = suite.run_case(backend, case)
    assert result.passed, f"{case.label}: {'; '.join(result.problems)}"


def _assert_conforms(backend, case, against):
    result = suite.run_case(backend, case, against=(against,))
    assert result.passed, f"{case.describe()}: {'; '.join(result.problems)}"


@given(conv_cases())
def test_op_equals_dense_twin(backend, case):
    _assert_conforms(backend, case, "dense")


@given(case=conv_cases(dtype=np.float32))
def test_backend_matches_reference_in_float32(backend, case):
    _assert_conforms(backend, case, "reference")


def _loss_and_grads(case, x_feats=None, weight=None):
    """L = <g, op(x, W)> and its gradients (on the host), with the case's inputs optionally replaced."""
    from sparseconv.testing import conformance as conf
    x, kmap, _, w, bias, g = conf._inputs(case)
    xf = x.feats if x_feats is None else x_feats
    w = w if weight is None else weight
    fwd, bwd = (F.depthwise_forward, F.depthwise_backward) if case.op == "depthwise" else (F.conv_forward, F.conv_backward)
    xp = sparseconv.get_backend().xp
    out = to_device(fwd(xp.asarray(xf), xp.asarray(w), kmap, xp.asarray(bias)), "cpu")
    grads = bwd(xp.asarray(g), xp.asarray(xf), xp.asarray(w), kmap)
    return float((out * g).sum()), tuple(to_device(a, "cpu") for a in grads), xf, w


@given(conv_cases())
def test_gradients_match_finite_differences(backend, case):
    _, (dx, dw, _), xf, w = _loss_and_grads(case)
    rng = np.random.default_rng(case.seed)
    eps = 1e-6
    for name, base, grad in [("x", xf, dx), ("w", w, dw)]:
        v = rng.standard_normal(base.shape)
        plus = _loss_and_grads(case, **{("x_feats" if name == "x" else "weight"): base + eps * v})[0]
        minus = _loss_and_grads(case, **{("x_feats" if name == "x" else "weight"): base - eps * v})[0]
        numeric = (plus - minus) / (2 * eps)
        assert abs(numeric - float((grad * v).sum())) <= 1e-6 * max(1.0, abs(numeric)), (case.describe(), name)


@given(conv_cases(dtype=np.float32))
def test_same_call_twice_is_bitwise_equal(backend, case):
    _assert_conforms(backend, case, "repeat")


def test_shuffled_input_rows_give_the_same_canonical_output(backend):
    rng = np.random.default_rng(7)
    coords = np.argwhere(rng.random((2, 6, 7, 5)) < 0.4).astype(np.int32)
    feats = rng.standard_normal((len(coords), 4)).astype(np.float32)
    weight = rng.standard_normal((27, 4, 3)).astype(np.float32)
    results = []
    for perm in [np.arange(len(coords)), rng.permutation(len(coords))]:
        x = SparseTensor(coords[perm], feats[perm], (6, 7, 5))
        out = F.conv_forward(backend.xp.asarray(x.feats), backend.xp.asarray(weight), submanifold_map(x, 3))
        _, coarse = down_map(x)
        results.append((x.coords, to_device(out, "cpu"), coarse.coords))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("op", ["subm", "depthwise", "down", "inverse"])
def test_zero_rows_flow_through_every_op(backend, op):
    case = Case(op, np.zeros((0, 4), np.int32), (4, 5, 6), 1, cin=3, cout=2, kernel_size=2 if op in ("down", "inverse") else 3,
                stride=2 if op in ("down", "inverse") else 1, dtype=np.float32)
    got = run_sparse(case)
    assert got["out"].shape == (0, case.cout) and got["dx"].shape == (0, case.cin)
    assert not got["dw"].any() and not got["db"].any()


def test_mismatched_inputs_are_refused(backend):
    x = SparseTensor(np.zeros((1, 4), np.int32), np.ones((1, 2), np.float32), (3, 3, 3))
    m = submanifold_map(x, 3)
    with pytest.raises(ValueError, match=r"feats must be \(1, C\)"):
        F.conv_forward(np.ones((2, 2), np.float32), np.ones((27, 2, 2), np.float32), m)
    with pytest.raises(ValueError, match=r"weight must be \(K, Cin, Cout\) with K=27, C\(in\)=2"):
        F.conv_forward(x.feats, np.ones((8, 2, 2), np.float32), m)
    with pytest.raises(ValueError, match="dtype float64 differs"):
        F.conv_forward(x.feats, np.ones((27, 2, 2)), m)
    _, coarse = down_map(x)
    assert inverse_map(coarse)[1] is x


@pytest.mark.parametrize("path", ["one-thread", "parallel"])
@given(case=conv_cases(dtype=np.float32, ops=("subm", "down", "inverse")))
def test_every_numba_kernel_path_matches_reference(path, case):
    """The Numba backend runs small work on one thread (``parallel_min_work``); force each choice on
    small cases so both are checked. The tiling branches by width: tests/test_numba_conv.py."""
    from sparseconv.backends.numba_cpu import backend as nb
    saved = nb.parallel_min_work
    nb.parallel_min_work = 10**18 if path == "one-thread" else 0
    try:
        result = suite.run_case(nb, case, against=("reference",))
    finally:
        nb.parallel_min_work = saved
    assert result.passed, (path, result.problems)


def test_numba_float32_gelu_error_bound():
    """The Numba float32 GELU uses a rational erf (5x faster than libm's); its error over every input
    stays at float32 round-off of the output (below 2e-6 absolute), and float64 stays exact."""
    from scipy.special import erf
    from sparseconv.backends.numba_cpu import backend as nb
    x64 = np.linspace(-12.0, 12.0, 600_000).reshape(-1, 6)
    cdf = 0.5 * (1.0 + erf(x64 / np.sqrt(2.0)))
    exact, exact_grad = x64 * cdf, cdf + x64 * np.exp(-0.5 * x64 * x64) / np.sqrt(2.0 * np.pi)
    x32 = x64.astype(np.float32)
    ones = np.ones_like(x32)
    assert nb.gelu(x32).dtype == np.float32
    assert np.abs(nb.gelu(x32) - exact).max() < 2e-6
    assert np.abs(nb.gelu_grad(x32, ones) - exact_grad).max() < 5e-7
    assert np.abs(nb.gelu(x32[x32 < -6.0].reshape(-1, 1))).max() < 1e-8  # tail: 0, not noise
    np.testing.assert_allclose(nb.gelu(x64), exact, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(nb.gelu_grad(x64, np.ones_like(x64)), exact_grad, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_kernels_match_reference(backend, dtype):
    from sparseconv.backends.reference import backend as ref
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal((257, 7))).astype(dtype)
    g = rng.standard_normal((257, 7)).astype(dtype)
    w, b = rng.standard_normal(7).astype(dtype), rng.standard_normal(7).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert np.allclose(to_device(backend.gelu(x), "cpu"), ref.gelu(x), rtol=tol, atol=tol)
    assert np.allclose(to_device(backend.gelu_grad(x, g), "cpu"), ref.gelu_grad(x, g), rtol=tol, atol=tol)
    y, xhat, rstd = ref.layer_norm(x, w, b, 1e-6)
    for got, want in zip(backend.layer_norm(x, w, b, 1e-6), (y, xhat, rstd)):
        assert got.dtype == dtype and np.allclose(to_device(got, "cpu"), want, rtol=10 * tol, atol=10 * tol)
    for weight in (w, None):
        got, want = backend.layer_norm_grad(g, xhat, rstd, weight), ref.layer_norm_grad(g, xhat, rstd, weight)
        for a, b_ in zip(got, want):
            assert a.dtype == dtype and a.shape == b_.shape
            assert np.allclose(to_device(a, "cpu"), b_, rtol=10 * tol, atol=10 * tol)
    assert [a.shape for a in backend.layer_norm_grad(g[:0], xhat[:0], rstd[:0], w)] == [(0, 7), (7,), (7,)]
    assert backend.gelu(x[:0]).shape == (0, 7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grn_kernels_match_reference(backend, dtype):
    """grn / grn_grad over three samples (one empty, one with an all-zero channel) and over one."""
    from sparseconv.backends.reference import backend as ref
    rng = np.random.default_rng(6)
    x = (3 * rng.standard_normal((257, 7))).astype(dtype)
    x[100:180, 2] = 0.0  # G = 0 there: its gradient term must be 0, not NaN
    g = rng.standard_normal((257, 7)).astype(dtype)
    gamma, beta = rng.standard_normal(7).astype(dtype), rng.standard_normal(7).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for ptr in (np.array([0, 100, 100, 180, 257], np.int64), np.array([0, 257], np.int64)):
        y, G = (to_device(a, "cpu") for a in backend.grn(x, gamma, beta, ptr, 1e-6))
        y_ref, G_ref = ref.grn(x, gamma, beta, ptr, 1e-6)
        assert y.dtype == G.dtype == dtype and G.shape == (len(ptr) - 1, 7)
        assert np.allclose(y, y_ref, rtol=tol, atol=tol) and np.allclose(G, G_ref, rtol=tol, atol=tol)
        got, want = backend.grn_grad(g, x, gamma, G_ref, ptr, 1e-6), ref.grn_grad(g, x, gamma, G_ref, ptr, 1e-6)
        for a, b_ in zip((to_device(a, "cpu") for a in got), want):
            assert a.dtype == dtype and a.shape == b_.shape and np.isfinite(a).all()
            assert np.allclose(a, b_, rtol=tol, atol=tol)
    empty = np.array([0, 0], np.int64)
    y, G = (to_device(a, "cpu") for a in backend.grn(x[:0], gamma, beta, empty, 1e-6))
    assert y.shape == (0, 7) and G.shape == (1, 7) and not G.any()
    assert [a.shape for a in backend.grn_grad(g[:0], x[:0], gamma, G, empty, 1e-6)] == [(0, 7), (7,), (7,)]


def test_numba_reductions_same_bits_for_any_thread_count():
    """segment_sum and GRN split rows in fixed chunks, so 1 and 2 threads give the same bits,
    also for one sample (where the chunks are what makes the sum parallel)."""
    import numba
    from sparseconv.backends.numba_cpu import backend as nb
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 or more Numba threads to compare thread counts")
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal((2, 50_000, 16)).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 16)).astype(np.float32)
    saved = nb.parallel_min_work, numba.get_num_threads()
    results = []
    try:
        nb.parallel_min_work = 0
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            for ptr in (np.array([0, 50_000]), np.array([0, 1, 20_000, 50_000])):
                y, G = nb.grn(x, gamma, beta, ptr, 1e-6)
                results.append((nb.segment_sum(x, ptr), y, G) + nb.grn_grad(g, x, gamma, G, ptr, 1e-6))
    finally:
        nb.parallel_min_work = saved[0]
        numba.set_num_threads(saved[1])
    half = len(results) // 2
    for one, many in zip(results[:half], results[half:]):
        for a, b_ in zip(one, many):
            assert np.array_equal(a, b_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_column_sum_is_numpys_at_every_width_and_thread_count(dtype):
    """column_sum (bias gradients) against ``x.sum(axis=0)``, bit for bit: widths inside one cache
    line, several lines, and more than one pass over the rows (over COLSUM_LANES columns), with
    the kernels on one thread and on all; a column of -0.0 stays -0.0."""
    import numba
    from sparseconv.backends import numba_cpu
    nb = numba_cpu.backend
    rng = np.random.default_rng(8)
    saved = nb.parallel_min_work, numba.get_num_threads()
    try:
        nb.parallel_min_work = 0
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            for c in (2, 7, 16, 33, 64, numba_cpu.COLSUM_LANES + 5, 3 * numba_cpu.COLSUM_LANES):
                x = (rng.standard_normal((1_000, c)) * 10.0 ** rng.integers(-3, 4, c)).astype(dtype)
                x[:, 1] = -0.0
                got = nb.column_sum(x)
                assert got.dtype == dtype and np.array_equal(got, x.sum(axis=0)), (threads, c)
                assert np.signbit(got[1]), "a column of -0.0 must sum to -0.0"
    finally:
        nb.parallel_min_work = saved[0]
        numba.set_num_threads(saved[1])
