"""Planted bugs: ``verify`` fails every mutant of the reference backend, naming the kernel, and passes
the reference itself.

Each mutant is the reference with one kernel replaced by a realistic mistake. The table
:data:`MUTANTS` says which rows of the report must fail, which check must catch it (a column of the
report: ``dense`` = float64 vs the dense twin, ``reference`` = float32 vs the reference, ``kernel`` =
a kernel-level comparison, ``repeat`` = the bitwise column, ``threads`` = the threads column,
``shape``, ``dtype``, ``scale``) and which kernel the failure message must name.
"""
import math

import numpy as np
import pytest

from sparseconv import verify
from sparseconv.backends.reference import ReferenceBackend
from sparseconv.testing import suite


class Mutant(ReferenceBackend):
    name = "mutant"


# --- bugs verify used to miss ----------------------------------------------------------------------

class RandomOrderLayerNorm(Mutant):
    """Sums each row's channels in a random order (as a kernel with unordered atomics or a
    work-stealing reduction would): right to round-off, different bits from call to call."""

    def layer_norm(self, x, weight, bias, eps):
        rng = np.random.default_rng()
        order = rng.permuted(np.tile(np.arange(x.shape[1]), (x.shape[0], 1)), axis=1)
        shuffled = np.take_along_axis(x, order, axis=1)
        mu = shuffled.sum(axis=1, keepdims=True) / x.dtype.type(x.shape[1])
        xc = x - mu
        rstd = 1.0 / np.sqrt((np.take_along_axis(xc, order, axis=1) ** 2).sum(axis=1, keepdims=True)
                             / x.dtype.type(x.shape[1]) + eps)
        xhat = xc * rstd
        y = xhat if weight is None else xhat * weight
        return (y if bias is None else y + bias), xhat, rstd.astype(x.dtype)


class ThreadChunkedWeightGrad(Mutant):
    """dW summed in one chunk of pairs per thread, then the chunk partials added: the same bits for
    the same thread count, other bits for another."""
    max_num_threads = 4
    threads = 4

    def set_num_threads(self, n):
        old, self.threads = self.threads, n
        return old

    def conv_weight_grad(self, feats, grad_out, kmap):
        grad_w = np.zeros((kmap.K, feats.shape[1], grad_out.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            for chunk in np.array_split(np.arange(len(in_rows)), self.threads):
                grad_w[k] += feats[in_rows[chunk]].T @ grad_out[out_rows[chunk]]
        return grad_w


class PrefixScanSegmentSum(Mutant):
    """segment_sum as a difference of a float32 prefix sum (one scan, two gathers): exact in exact
    arithmetic, but a segment's round-off is set by all the rows before it."""

    def segment_sum(self, values, seg_ptr):
        scan = np.zeros((len(values) + 1, values.shape[1]), dtype=values.dtype)
        np.cumsum(values, axis=0, out=scan[1:])
        seg_ptr = np.asarray(seg_ptr)
        return scan[seg_ptr[1:]] - scan[seg_ptr[:-1]]


class TorchLayoutWeightGrad(Mutant):
    """dW returned in PyTorch's (K, Cout, Cin) layout."""

    def conv_weight_grad(self, feats, grad_out, kmap):
        return np.ascontiguousarray(super().conv_weight_grad(feats, grad_out, kmap).transpose(0, 2, 1))


class UninitialisedRows(Mutant):
    """conv_forward allocates its output uninitialised and writes only rows that have a neighbour
    (modelled with NaN, as the CUDA emulation poisons fresh outputs). Rows without one — inputs a
    strided conv never reads, so their dX — keep the garbage."""

    def conv_forward(self, feats, weight, kmap):
        out = super().conv_forward(feats, weight, kmap)
        out[(np.asarray(kmap.neighbors) < 0).all(axis=1)] = np.nan
        return out


class LayerNormInPlace(Mutant):
    """Centres the input in place to save a temporary (``x -= mean``): right output, corrupted input."""

    def layer_norm(self, x, weight, bias, eps):
        x -= x.mean(axis=1, keepdims=True)
        return super().layer_norm(x, weight, bias, eps)


class GeluAssumesContiguous(Mutant):
    """Reads its input's memory as a C-contiguous (N, C) block, as a C kernel handed ``x.ctypes.data``
    does."""

    def gelu(self, x):
        raw = np.lib.stride_tricks.as_strided(x, x.shape, (x.shape[1] * x.itemsize, x.itemsize))
        return super().gelu(np.array(raw))


# --- bugs verify caught already ----------------------------------------------------------------------

class LookupForgetsOrder(Mutant):
    """lookup returns the key's position in the sorted keys, not its row (the permutation dropped).
    Harmless on canonical sites (sorted already), wrong on any other key order."""

    def lookup(self, index, queries):
        sorted_keys, _ = index
        if len(sorted_keys) == 0:
            return np.full(len(queries), -1, dtype=np.int32)
        pos = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
        return np.where(sorted_keys[pos] == queries, pos, -1).astype(np.int32)


class NeighborOffByOne(Mutant):
    """The grid bound checked as ``< shape - 1``: neighbours in the last plane of each axis are lost."""

    def neighbor_table(self, index, coords, spatial_shape, offsets):
        return super().neighbor_table(index, coords, tuple(n - 1 for n in spatial_shape), offsets)


class MirrorWithoutCentre(Mutant):
    """mirror_table fills the two halves but leaves the centre column -1 (no self-connection)."""

    def mirror_table(self, lower, K):
        table = super().mirror_table(lower, K)
        table[:, K // 2] = -1
        return table


class DownFloorStride(Mutant):
    """down_table maps input i to output floor((i + p - k) / s) without checking the division is
    exact: every input feeds every offset."""

    def down_table(self, coords, offsets, stride, padding, out_shape):
        from sparseconv import coords as C
        s, p, shape = (np.array(v, dtype=np.int64) for v in (stride, padding, out_shape))
        batch, spatial = coords[:, :1].astype(np.int64), coords[:, 1:].astype(np.int64)
        rows, cols, keys = [], [], []
        for k, offset in enumerate(offsets):
            o = (spatial + p - offset) // s
            r = np.flatnonzero(np.all((o >= 0) & (o < shape), axis=1))
            rows.append(r)
            cols.append(np.full(len(r), k))
            keys.append(C.pack_keys(np.concatenate([batch[r], o[r]], axis=1)))
        rows, cols, keys = (np.concatenate(a) for a in (rows, cols, keys))
        out_keys, out_rows = np.unique(keys, return_inverse=True)
        table = np.full((len(out_keys), len(offsets)), -1, dtype=np.int32)
        table[out_rows.reshape(-1), cols] = rows
        return C.unpack_keys(out_keys), table


class TorchLayoutWeight(Mutant):
    """conv_forward reads the weight memory as PyTorch's (K, Cout, Cin) — a transposed weight."""

    def conv_forward(self, feats, weight, kmap):
        K, cin, cout = weight.shape
        return super().conv_forward(feats, np.ascontiguousarray(weight.reshape(K, cout, cin).transpose(0, 2, 1)), kmap)


class NegatedWeightGrad(Mutant):
    """dW with its sign flipped (the descent direction instead of the gradient)."""

    def conv_weight_grad(self, feats, grad_out, kmap):
        return -super().conv_weight_grad(feats, grad_out, kmap)


class DepthwiseSkipsLastOffset(Mutant):
    """depthwise dW loops over ``range(K - 1)``: the last offset's gradient stays zero."""

    def depthwise_weight_grad(self, feats, grad_out, kmap):
        grad_w = np.zeros((kmap.K, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K - 1):
            in_rows, out_rows = kmap.pairs(k)
            grad_w[k] = (feats[in_rows] * grad_out[out_rows]).sum(axis=0)
        return grad_w


class SegmentDropsLastRow(Mutant):
    """segment_sum over ``values[start:stop - 1]``: each segment loses its last row."""

    def segment_sum(self, values, seg_ptr):
        out = np.zeros((len(seg_ptr) - 1, values.shape[1]), dtype=values.dtype)
        for s, (start, stop) in enumerate(zip(seg_ptr[:-1], seg_ptr[1:])):
            out[s] = values[start:max(start, stop - 1)].sum(axis=0)
        return out


class SegmentSumFloat64(Mutant):
    """segment_sum allocates its output without a dtype: float64 whatever the input."""

    def segment_sum(self, values, seg_ptr):
        out = np.zeros((len(seg_ptr) - 1, values.shape[1]))
        for s, (start, stop) in enumerate(zip(seg_ptr[:-1], seg_ptr[1:])):
            out[s] = values[start:stop].sum(axis=0)
        return out


class TanhGelu(Mutant):
    """The tanh approximation of GELU where the interface asks for the exact (erf) one."""

    def gelu(self, x):
        c = x.dtype.type(math.sqrt(2.0 / math.pi))
        return 0.5 * x * (1.0 + np.tanh(c * (x + x.dtype.type(0.044715) * x ** 3)))


class LayerNormWithoutEps(Mutant):
    """``rstd = 1 / sqrt(var)``: eps left out."""

    def layer_norm(self, x, weight, bias, eps):
        return super().layer_norm(x, weight, bias, 0.0)


class LayerNormBiasTwice(Mutant):
    """The bias added in the kernel and once more on the way out."""

    def layer_norm(self, x, weight, bias, eps):
        y, xhat, rstd = super().layer_norm(x, weight, bias, eps)
        return (y if bias is None else y + bias), xhat, rstd


class GrnSumNotMean(Mutant):
    """GRN divides by the sum of the channel norms instead of their mean."""

    def grn(self, x, gamma, beta, seg_ptr, eps):
        G = np.sqrt(self.segment_sum(x * x, seg_ptr))
        scale = gamma * (G / (G.sum(axis=1, keepdims=True) + eps)) + 1.0
        rows = np.repeat(scale, np.diff(seg_ptr), axis=0)
        return x * rows + beta, G


class BroadcastingCrash(Mutant):
    """depthwise_forward multiplies by the whole (K, C) weight instead of row k: NumPy raises."""

    def depthwise_forward(self, feats, weight, kmap):
        out = np.zeros((kmap.n_out, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            out[out_rows] += feats[in_rows] * weight  # the bug: weight, not weight[k]
        return out


# mutant -> (the kernel the first row's failures name, {row that fails: the check that catches it there}).
# Every row of the quick suite that the bug reaches is listed; the others pass (test_rows_not_listed_pass).
MUTANTS = {
    # missed before
    RandomOrderLayerNorm: ("layer_norm", {"pointwise": "repeat"}),
    ThreadChunkedWeightGrad: ("conv_weight_grad", {"subm": "threads", "down": "threads", "inverse": "threads"}),
    PrefixScanSegmentSum: ("segment_sum", {"scale": "scale"}),
    TorchLayoutWeightGrad: ("conv_weight_grad", {"subm": "shape", "down": "shape", "inverse": "shape",
                                                 "empty_inputs": "kernel"}),
    UninitialisedRows: ("conv_forward", {"down": "dense", "inverse": "dense", "empty_inputs": "kernel"}),
    LayerNormInPlace: ("layer_norm", {"pointwise": "repeat"}),
    GeluAssumesContiguous: ("gelu", {"pointwise": "kernel"}),
    # caught before
    LookupForgetsOrder: ("lookup", {"index": "kernel"}),
    NeighborOffByOne: ("neighbor_table", {"kernel_maps": "kernel", "subm": "dense", "depthwise": "dense"}),
    MirrorWithoutCentre: ("mirror_table", {"kernel_maps": "kernel", "subm": "dense", "depthwise": "dense"}),
    DownFloorStride: ("down_table", {"kernel_maps": "kernel", "down": "dense", "inverse": "dense"}),
    TorchLayoutWeight: ("conv_forward", {"subm": "dense", "down": "dense", "inverse": "dense"}),
    NegatedWeightGrad: ("conv_weight_grad", {"subm": "dense", "down": "dense", "inverse": "dense"}),
    DepthwiseSkipsLastOffset: ("depthwise_weight_grad", {"depthwise": "dense"}),
    SegmentDropsLastRow: ("segment_sum", {"segment_sum": "kernel", "pointwise": "kernel"}),
    SegmentSumFloat64: ("segment_sum", {"segment_sum": "kernel", "pointwise": "kernel", "empty_inputs": "kernel"}),
    TanhGelu: ("gelu", {"pointwise": "kernel"}),
    LayerNormWithoutEps: ("layer_norm", {"pointwise": "kernel"}),
    LayerNormBiasTwice: ("layer_norm", {"pointwise": "kernel"}),
    GrnSumNotMean: ("grn", {"pointwise": "kernel"}),
    BroadcastingCrash: ("depthwise_forward", {"depthwise": "raised", "empty_inputs": "raised"}),
}
# the scale tier's segment_sum cases (the whole tier takes a minute or more; these a second)
SCALE_SEGMENT_CASES = [c for c in suite.scale_cases() if c.check.__name__ == "check_scale_segment_sum"]


def run(mutant, rows):
    cases = SCALE_SEGMENT_CASES if list(rows) == ["scale"] else None
    return verify.verify_backend(mutant(), quick=True, ops=list(rows), cases=cases)


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=lambda m: m.__name__)
def test_verify_fails_the_mutant_and_names_the_kernel(mutant):
    kernel, rows = MUTANTS[mutant]
    report = run(mutant, rows)
    assert set(report.failed_ops) == set(rows), [verify.format_row(r) for r in report.rows]
    for row in report.rows:
        assert rows[row.op] in row.failed, (row.op, row.failed, row.failures)
    first = report.row(next(iter(rows)))
    assert any(kernel in message for message in first.failures), first.failures


def test_rows_not_listed_pass():
    """The table lists every row a bug reaches: on the quick suite, the other rows of each mutant pass
    (three mutants, one per kind of row; running all of them would take half a minute)."""
    for mutant in (NeighborOffByOne, UninitialisedRows, SegmentDropsLastRow):
        report = verify.verify_backend(mutant(), quick=True)
        assert set(report.failed_ops) == set(MUTANTS[mutant][1]), (mutant.__name__, report.failed_ops)


def test_the_columns_show_what_went_wrong():
    """A wrong shape reads "shape" (not inf), a NaN result "nan", a repeat "NO", threads "NO"."""
    shape = run(TorchLayoutWeightGrad, ["subm"]).row("subm")
    assert "shape" in verify.format_row(shape).split()[4] and "inf" not in verify.format_row(shape)
    assert "dW (conv_weight_grad) shape (27, " in " ".join(shape.failures)
    nan = run(UninitialisedRows, ["down"]).row("down")
    assert math.isnan(nan.worst["dx"]) and verify.format_row(nan).split()[3] == "nan"
    assert not math.isnan(nan.worst["out"])  # every output site of a down conv has an input
    pointwise_row = run(RandomOrderLayerNorm, ["pointwise"]).row("pointwise")
    assert pointwise_row.bitwise is False
    assert "layer_norm: two calls with the same inputs differ bitwise (y: " in pointwise_row.failures[0]
    threads = run(ThreadChunkedWeightGrad, ["subm"]).row("subm")
    assert threads.threads is False and threads.bitwise is True
    assert verify.format_row(threads).split()[-6:-3] == ["yes", "NO", "FAIL"]
    assert "float32: conv_weight_grad: 1 thread and 4 threads differ bitwise" in threads.failures[0]


def test_a_prefix_scan_passes_the_small_cases_and_fails_at_scale():
    """The float32 prefix scan is within 1e-5 of the reference at a few thousand rows: only the scale
    tier tells it apart."""
    small = verify.verify_backend(PrefixScanSegmentSum(), quick=True, ops=["segment_sum"])
    assert small.passed
    scale = run(PrefixScanSegmentSum, ["scale"]).row("scale")
    err, budget = scale.scale["segment_sum"]
    assert err > 10 * budget
    clean = verify.verify_backend(ReferenceBackend(), ops=["scale"], cases=SCALE_SEGMENT_CASES).row("scale")
    assert clean.passed and clean.scale["segment_sum"][0] < budget / 4


def test_an_exception_names_the_kernel_and_the_line():
    row = run(BroadcastingCrash, ["depthwise"]).row("depthwise")
    line = BroadcastingCrash.depthwise_forward.__code__.co_firstlineno + 4
    assert "depthwise_forward raised ValueError: operands could not be broadcast" in row.failures[0]
    assert f"test_verify_mutants.py:{line})" in row.failures[0]


def test_a_thread_variant_backend_can_opt_out_visibly():
    class OptedOut(ThreadChunkedWeightGrad):
        thread_invariant = False

    report = verify.verify_backend(OptedOut(), quick=True, ops=["subm"])
    assert report.passed and report.threads.startswith("opted out") and not report.threads_checked
    assert "opted out" in verify.format_row(report.row("subm"))


def test_the_reference_passes_every_check():
    report = verify.verify_backend(ReferenceBackend(), quick=True)
    assert report.passed, [f for r in report.rows for f in r.failures]
    for row in report.rows:
        assert row.bitwise is True, row.op
        if row.op in verify.THREAD_ROWS and report.threads_checked:
            assert row.threads is True, row.op
