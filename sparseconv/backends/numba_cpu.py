"""The Numba CPU backend: the fast path, checked against the NumPy reference.

* Coordinate index: open addressing with linear probing on packed int64 keys, capacity a power of
  two ≥ 2N, slots chosen by the splitmix64 finaliser (a strong mixer, so the dense runs of keys a
  voxel grid produces spread evenly). Built serially (no atomics needed), queried in parallel.
* Submanifold maps (``submanifold_table``): no hashing — rows in canonical order make every
  (batch, z, y) grid row a run of sorted keys, and a voxel's neighbours at (dz, dy, ·) lie in one
  neighbouring run; each run is spread into a small x-indexed line that the voxels read their
  neighbours from (``_grid_rows``, ``_submanifold_table``). ``neighbor_table`` (bounds check → pack
  → probe, one fused parallel kernel) and ``mirror_table`` serve the interface and other offsets.
  Strided maps: a parallel kernel packs each (row, offset)'s output key (or EMPTY), a sort and an
  adjacent-difference mask give the output sites, and a parallel scatter through their hash index
  fills the table.
* Convolution (``numba_conv``): output-stationary over the neighbour table with register tiles —
  a task owns 6 output rows × 64 bytes of output channels, kept in registers over all K neighbours
  and input channels, each weight strip feeding 6 rows. The weight gradient tiles one ``dW[k]``
  block the same way over the pairs of fixed row chunks, then sums the chunk partials in order.
  No atomics; the same bits for any thread count.
* Outputs: every kernel whose output grows with the rows writes into an array the host side
  allocated with NumPy and passed in. NumPy asks Linux for huge pages for large arrays
  (``madvise``); an array a Numba kernel allocates comes from ``malloc`` in 4 KiB pages, and
  first-touching those page by page costs more than the work of the cheap kernels, and the page
  faults serialise the threads (``benchmarks/bench_alloc.py``: a (1.1 M, 64) float32 output filled
  in 130 ms on one thread when the kernel allocates it, 28 ms into a NumPy array, 12 ms refilled).
"""
from __future__ import annotations

import os

# Numba's OpenMP threads busy-wait after each parallel region by default; on a small machine they
# then steal the cores BLAS (and the next kernel) need — 2-3x slower training on 2 cores. Passive
# waiting must be chosen before the OpenMP runtime loads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .numba_cache import configure as _configure_cache  # noqa: E402

_configure_cache()  # a read-only install caches the compiled kernels in a user folder (before numba loads)

import math  # noqa: E402

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402

from .. import coords as C
from . import numba_conv, pointwise
from .numba_conv import _stack_array
from .numba_math import expf, expf_reduce, expf_scale

SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
EMPTY = np.int64(-1)  # packed keys are non-negative, so -1 marks a free slot
COLSUM_LANES = 256  # columns column_sum adds in one pass over the rows (their sums on the stack)
EXP_BLOCK = 128  # values of the GELU gradient per block: its φ is computed in two loops over a block
WGRAD_CHUNKS = 64  # fixed split of rows for the weight gradient (determinism across thread counts)


# --------------------------------------------------------------------------------------------
# Coordinate index
# --------------------------------------------------------------------------------------------

@nb.njit(inline="always")
def _mix(key):
    """splitmix64 finaliser on the key's bits (uint64 arithmetic, wrapping)."""
    z = np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True)
def _build_index(keys, capacity):
    slot_keys = np.full(capacity, EMPTY, dtype=np.int64)
    slot_rows = np.full(capacity, -1, dtype=np.int32)
    mask = np.uint64(capacity - 1)
    for row in range(len(keys)):
        s = _mix(keys[row]) & mask
        while slot_keys[s] != EMPTY:
            if slot_keys[s] == keys[row]:
                return slot_keys, slot_rows, row  # duplicate key: report the row
            s = (s + np.uint64(1)) & mask
        slot_keys[s] = keys[row]
        slot_rows[s] = row
    return slot_keys, slot_rows, -1


@nb.njit(inline="always")
def _probe(slot_keys, slot_rows, key):
    mask = np.uint64(len(slot_keys) - 1)
    s = _mix(key) & mask
    while True:
        k = slot_keys[s]
        if k == key:
            return slot_rows[s]
        if k == EMPTY:
            return np.int32(-1)
        s = (s + np.uint64(1)) & mask


@nb.njit(parallel=True, cache=True)
def _lookup(slot_keys, slot_rows, queries, out):
    for i in nb.prange(len(queries)):
        out[i] = _probe(slot_keys, slot_rows, queries[i])
    return out


# --------------------------------------------------------------------------------------------
# Kernel-map tables
# --------------------------------------------------------------------------------------------

@nb.njit(parallel=True, cache=True)
def _neighbor_table(slot_keys, slot_rows, coords, shape, offsets, table):
    n, J = len(coords), len(offsets)
    for i in nb.prange(n):
        b = np.int64(coords[i, 0])
        for j in range(J):
            z = coords[i, 1] + offsets[j, 0]
            y = coords[i, 2] + offsets[j, 1]
            x = coords[i, 3] + offsets[j, 2]
            if z < 0 or y < 0 or x < 0 or z >= shape[0] or y >= shape[1] or x >= shape[2]:
                table[i, j] = -1
            else:
                key = (b << 48) | (np.int64(z) << 32) | (np.int64(y) << 16) | np.int64(x)
                table[i, j] = _probe(slot_keys, slot_rows, key)
    return table


@nb.njit(parallel=True, cache=True)
def _mirror_table(lower, table):
    n, half = lower.shape
    K = table.shape[1]
    for i in nb.prange(n):
        for j in range(half):
            table[i, j] = lower[i, j]
            table[i, K - 1 - j] = -1
        table[i, half] = i
    # Row i sees row m at +d  <=>  row m sees row i at -d. Each (m, K-1-j) is written by exactly
    # one i (rows are unique within an offset), so the parallel scatter is race-free.
    for i in nb.prange(n):
        for j in range(half):
            m = lower[i, j]
            if m >= 0:
                table[m, K - 1 - j] = i
    return table


@nb.njit(inline="always")
def _u(i):
    """An index known to be >= 0, as unsigned: Numba then skips the negative-index wraparound."""
    return np.uint64(i)


@nb.njit(cache=True)
def _grid_rows(keys):
    """Runs of sorted keys that share ``(batch, z, y)``: one *grid row* each.

    keys: ``(N,) int64`` packed keys. Returns ``(row_keys (R,) int64, row_ptr (R+1,) int64, bad)``:
    row r holds ``keys[row_ptr[r]:row_ptr[r+1]]`` (ascending x), ``row_keys[r] = key >> 16`` of its
    voxels; ``bad`` is the first i with ``keys[i] <= keys[i-1]`` (not strictly ascending), else -1.
    """
    n = len(keys)
    row_ptr = np.empty(n + 1, dtype=np.int64)
    r = 0
    for i in range(n):
        if i > 0 and keys[i] <= keys[i - 1]:
            return row_ptr[:0], row_ptr[:1], i
        if i == 0 or (keys[i] >> 16) != (keys[i - 1] >> 16):
            row_ptr[r] = i
            r += 1
    row_ptr[r] = n
    row_keys = np.empty(r, dtype=np.int64)
    for q in range(r):
        row_keys[q] = keys[row_ptr[q]] >> 16
    return row_keys, row_ptr[:r + 1].copy(), -1


@nb.njit(parallel=True, cache=True)
def _submanifold_table(keys, row_keys, row_ptr, shape, dz, dy, dx, n_tasks, table):
    """Fill ``table (N, K) int32`` of a centred kernel from the sorted grid rows, without hashing.

    keys ``(N,) int64`` strictly ascending (canonical order: table row i is voxel i); ``row_keys``,
    ``row_ptr`` from :func:`_grid_rows`; ``shape (3,) int64``; ``dz``, ``dy`` ascending ``(kz,)``,
    ``(ky,) int64`` and ``dx`` an ascending *tuple* of ints (its length is a compile-time constant,
    so the innermost loop unrolls); column ``k = (a·ky + c)·len(dx) + j`` is ``(dz[a], dy[c], dx[j])``.

    The neighbours of grid row (b, z, y) at (dz, dy, ·) all lie in grid row (b, z+dz, y+dy): one run
    of the sorted keys, found by a pointer per (dz, dy) that only moves forward (targets grow with
    the row). Each neighbour run is spread into a task-private *line*, ``line[x] = row index`` (-1
    where no voxel), and every voxel of the current row copies its K entries from ``line[x + dx]``:
    no probing, no data-dependent branches. A line is kept per (dz, y+dy mod span) and refilled only
    when it holds another grid row, so the rows of a slice reuse the lines their neighbours filled
    (each grid row is spread ~kz times, not kz·ky). Margins of ``pad`` make ``x + dx`` need no
    bounds check. A task owns a block of grid rows and
    writes only their table rows, so the table does not depend on the task or thread count.
    """
    R, kz, ky = len(row_keys), len(dz), len(dy)
    pad = max(-dx[0], dx[-1])
    width, span = shape[2] + 2 * pad, dy[-1] - dy[0] + 1  # span: distinct y+dy of a row's window
    for task in nb.prange(n_tasks):
        r0, r1 = R * task // n_tasks, R * (task + 1) // n_tasks
        if r0 == r1:
            continue
        lines = np.full(kz * span * width, -1, dtype=np.int32)
        held = np.full(kz * span, -1, dtype=np.int64)  # the grid row each line holds, -1: none
        start = np.empty(kz * ky, dtype=np.int64)  # per (dz, dy): where its line starts in `lines`
        ptr = np.empty(kz * ky, dtype=np.int64)  # per (dz, dy): first grid row >= the current target
        for s in range(kz * ky):
            ptr[s] = np.searchsorted(row_keys, row_keys[r0] + (dz[s // ky] << 16) + dy[s % ky])
        for r in range(r0, r1):
            z, y = (row_keys[r] >> 16) & 0xFFFF, row_keys[r] & 0xFFFF
            for s in range(kz * ky):
                a, c = s // ky, s % ky
                target = row_keys[r] + (dz[a] << 16) + dy[c]
                q = ptr[s]
                while q < R and row_keys[q] < target:
                    q += 1
                ptr[s] = q
                inside = 0 <= z + dz[a] < shape[0] and 0 <= y + dy[c] < shape[1]  # else the key wraps
                want = q if inside and q < R and row_keys[q] == target else -1
                slot = a * span + (y + dy[c] - dy[0]) % span
                start[s] = slot * width + pad
                old = held[slot]
                if old != want:  # the line holds another grid row: clear it, spread the wanted one
                    if old >= 0:
                        for m in range(row_ptr[old], row_ptr[old + 1]):
                            lines[_u(start[s] + (keys[m] & 0xFFFF))] = -1
                    if want >= 0:
                        for m in range(row_ptr[want], row_ptr[want + 1]):
                            lines[_u(start[s] + (keys[m] & 0xFFFF))] = m
                    held[slot] = want
            for i in range(row_ptr[r], row_ptr[r + 1]):
                x = keys[i] & 0xFFFF
                k = 0
                for s in range(kz * ky):
                    for d in dx:
                        table[i, k] = lines[_u(start[s] + x + d)]
                        k += 1


@nb.njit(parallel=True, cache=True)
def _transpose_table(neighbors, table):
    """``table`` ``(n_in, K)``, all -1 on entry: ``table[i, k] = o`` where ``neighbors[o, k] = i``."""
    n_out, K = neighbors.shape
    for o in nb.prange(n_out):
        for k in range(K):
            i = neighbors[o, k]
            if i >= 0:
                table[i, k] = o
    return table


@nb.njit(parallel=True, cache=True)
def _down_candidates(coords, offsets, stride, padding, out_shape, cand):
    """``cand[i·K + k]``: packed key of the output row i feeds through offset k, or EMPTY."""
    n, K = len(coords), len(offsets)
    for i in nb.prange(n):
        b = np.int64(coords[i, 0])
        for k in range(K):
            key = b << 48
            for a in range(3):  # z, y, x: o = (c + p - off) / s, exact and inside the output grid
                num = np.int64(coords[i, a + 1]) + padding[a] - offsets[k, a]
                if num < 0:
                    key = EMPTY
                    break
                o = np.int64(np.uint64(num) // np.uint64(stride[a]))  # num >= 0: unsigned is cheaper
                if o * stride[a] != num or o >= out_shape[a]:
                    key = EMPTY
                    break
                key |= o << (32 - 16 * a)
            cand[i * K + k] = key
    return cand


@nb.njit(parallel=True, cache=True)
def _down_fill(slot_keys, slot_rows, cand, n, K, table):
    """The table of a down map: ``table[row of cand[i·K + k], k] = i``; ``table`` all -1 on entry."""
    # Each (output, k) is fed by at most one input (coords are unique), so the scatter is race-free.
    for i in nb.prange(n):
        for k in range(K):
            key = cand[i * K + k]
            if key != EMPTY:
                table[_probe(slot_keys, slot_rows, key), k] = i
    return table


@nb.njit(parallel=True, cache=True)
def _pack_keys(coords, keys):
    """``coords.pack_keys`` in parallel: ``(N, 4) int32`` → ``keys (N,) int64``."""
    for i in nb.prange(len(coords)):
        keys[i] = ((np.int64(coords[i, 0]) << 48) | (np.int64(coords[i, 1]) << 32)
                   | (np.int64(coords[i, 2]) << 16) | np.int64(coords[i, 3]))
    return keys


@nb.njit(parallel=True, cache=True)
def _tiling_down(keys, row_ptr, groups, group_ptr, out_ptr, stride, width, table, out_keys, count_only):
    """The map of a *tiling* down conv (kernel = stride, no padding) from the sorted grid rows.

    Every input voxel ``c`` feeds exactly one output, ``c // s``, at window position ``c % s``
    (row-major: column ``k = ((cz % sz)·sy + cy % sy)·sx + cx % sx``). An output grid row
    ``(b, Z, Y)`` gathers the ``sz·sy`` input grid rows ``(b, Z·sz + i, Y·sy + j)``, each sorted by
    x, so its outputs are the distinct ``x // sx`` of those runs: a task marks them in a line (one
    entry per output x, ``width`` of them), numbers them in ascending x and writes their keys and
    table rows. No hashing, no sort; a task owns whole output grid rows, so nothing depends on the
    thread count.

    keys ``(N,) int64`` strictly ascending; ``row_ptr`` ``(R+1,)`` their grid rows (:func:`_grid_rows`);
    ``groups`` the input grid rows listed by output grid row, ``groups[group_ptr[g]:group_ptr[g+1]]``
    for output grid row g (ascending); ``out_ptr`` ``(G+1,)`` the first output row of each (when
    ``count_only``: ignored, and the counts are returned in ``out_ptr[1:]``); ``stride`` ``(3,) int64``.
    """
    G = len(group_ptr) - 1
    sz, sy, sx = stride[0], stride[1], stride[2]
    n_tasks = min(G, 64)
    for task in nb.prange(n_tasks):
        line = np.full(width, -1, dtype=np.int64)
        for g in range(G * task // n_tasks, G * (task + 1) // n_tasks):
            lo, hi = width, -1
            for q in range(group_ptr[g], group_ptr[g + 1]):
                r = groups[q]
                for m in range(row_ptr[r], row_ptr[r + 1]):
                    X = (keys[m] & 0xFFFF) // sx
                    line[_u(X)] = 0
                    lo, hi = min(lo, X), max(hi, X)
            o = out_ptr[g]
            n = 0
            for X in range(lo, hi + 1):  # number the outputs in ascending x, and clear the line
                if line[_u(X)] == 0:
                    if count_only:
                        line[_u(X)] = -1
                    else:
                        line[_u(X)] = o + n
                    n += 1
            if count_only:
                out_ptr[g + 1] = n
                continue
            first = groups[group_ptr[g]]
            k0 = keys[row_ptr[first]]
            b, Z, Y = k0 >> 48, ((k0 >> 32) & 0xFFFF) // sz, ((k0 >> 16) & 0xFFFF) // sy
            for X in range(lo, hi + 1):
                j = line[_u(X)]
                if j >= 0:
                    out_keys[j] = (b << 48) | (Z << 32) | (Y << 16) | X
            for q in range(group_ptr[g], group_ptr[g + 1]):
                r = groups[q]
                for m in range(row_ptr[r], row_ptr[r + 1]):
                    key = keys[m]
                    z, y, x = (key >> 32) & 0xFFFF, (key >> 16) & 0xFFFF, key & 0xFFFF
                    k = ((z % sz) * sy + y % sy) * sx + x % sx
                    table[line[_u(x // sx)], k] = m
            for X in range(lo, hi + 1):
                line[_u(X)] = -1
    return out_ptr


# --------------------------------------------------------------------------------------------
# Convolution: the dense-weight kernels are in numba_conv.py; the depthwise ones here
# --------------------------------------------------------------------------------------------

@nb.njit(parallel=True, cache=True)
def _depthwise_forward(feats, weight, nbr, out):
    n_out, K = nbr.shape
    c = feats.shape[1]
    for o in nb.prange(n_out):
        for ch in range(c):
            out[o, ch] = 0
        for k in range(K):
            i = nbr[o, k]
            if i >= 0:
                for ch in range(c):
                    out[o, ch] += feats[i, ch] * weight[k, ch]
    return out


@nb.njit(parallel=True, cache=True)
def _depthwise_weight_grad(feats, grad_out, nbr):
    n_out, K = nbr.shape
    c = feats.shape[1]
    n_chunks = min(WGRAD_CHUNKS, max(n_out, 1))
    partial = np.zeros((n_chunks, K, c), dtype=feats.dtype)
    for chunk in nb.prange(n_chunks):
        for o in range(n_out * chunk // n_chunks, n_out * (chunk + 1) // n_chunks):
            for k in range(K):
                i = nbr[o, k]
                if i >= 0:
                    for ch in range(c):
                        partial[chunk, k, ch] += feats[i, ch] * grad_out[o, ch]
    # The chunk partials are added in order by a serial kernel, as in _layer_norm_grad: written
    # here, `grad_w += partial[chunk]` would be a parallel region per chunk: 64 thread launches per
    # call, which at the coarse levels cost more than the call's work.
    return _sum_chunks(partial.reshape(n_chunks, K * c), 1, n_chunks)[0].reshape(K, c)


def _segment_chunks(n_seg):
    """Row chunks per segment: a fixed split (so sums have the same bits for any thread count) that
    still gives the threads work when there is one sample, and stays small when there are many."""
    return max(1, WGRAD_CHUNKS // max(n_seg, 1))


@nb.njit(inline="always")
def _chunk_rows(seg_ptr, n_chunks, task):
    """``(segment, first row, stop row)`` of parallel task ``task`` (``n_chunks`` tasks per segment)."""
    s, chunk = task // n_chunks, task % n_chunks
    start, n = seg_ptr[s], seg_ptr[s + 1] - seg_ptr[s]
    return s, start + n * chunk // n_chunks, start + n * (chunk + 1) // n_chunks


@nb.njit(parallel=True, cache=True)
def _segment_sum(values, seg_ptr, n_chunks):
    n_seg, c = len(seg_ptr) - 1, values.shape[1]
    # Every row is written below; np.zeros would cost a parallel region of its own (Numba runs it as one).
    partial = np.empty((n_seg * n_chunks, c), dtype=values.dtype)
    for task in nb.prange(n_seg * n_chunks):
        _, r0, r1 = _chunk_rows(seg_ptr, n_chunks, task)
        acc = np.zeros(c, dtype=values.dtype)  # the task's own row: no shared cache lines while summing
        for r in range(r0, r1):
            for j in range(c):
                acc[j] += values[r, j]
        partial[task] = acc
    return _sum_chunks(partial, n_seg, n_chunks)


@nb.njit(parallel=True, cache=True)
def _segment_dot_sum(a, b, seg_ptr, n_chunks):
    """Per segment: ``(Σ_rows a·b, Σ_rows a)``, both ``(S, C)``, in one pass (GRN's reductions)."""
    n_seg, c = len(seg_ptr) - 1, a.shape[1]
    dots = np.empty((n_seg * n_chunks, c), dtype=a.dtype)  # every row written below
    sums = np.empty((n_seg * n_chunks, c), dtype=a.dtype)
    for task in nb.prange(n_seg * n_chunks):
        _, r0, r1 = _chunk_rows(seg_ptr, n_chunks, task)
        acc_dot, acc_sum = np.zeros(c, dtype=a.dtype), np.zeros(c, dtype=a.dtype)
        for r in range(r0, r1):
            for j in range(c):
                acc_dot[j] += a[r, j] * b[r, j]
                acc_sum[j] += a[r, j]
        dots[task], sums[task] = acc_dot, acc_sum
    return _sum_chunks(dots, n_seg, n_chunks), _sum_chunks(sums, n_seg, n_chunks)


@nb.njit(cache=True)
def _sum_chunks(partial, n_seg, n_chunks):
    """``(S·n_chunks, C)`` per-task partial sums → ``(S, C)``, each segment's chunks in a fixed order."""
    out = np.zeros((n_seg, partial.shape[1]), dtype=partial.dtype)
    for s in range(n_seg):
        for chunk in range(n_chunks):
            out[s] += partial[s * n_chunks + chunk]
    return out


@nb.njit(parallel=True, cache=True)
def _grn_rows(a, p, b, q, shift, seg_ptr, n_chunks, out):
    """``out[r] = a[r]·p[s] + b[r]·q[s] + shift`` for each row r of segment s (GRN forward: a = b = x,
    p = scale, q = 0, shift = β; backward: a = grad, b = x, p = scale, q = coef, shift = 0)."""
    c = a.shape[1]
    for task in nb.prange((len(seg_ptr) - 1) * n_chunks):
        s, r0, r1 = _chunk_rows(seg_ptr, n_chunks, task)
        for r in range(r0, r1):
            for j in range(c):
                out[r, j] = a[r, j] * p[s, j] + b[r, j] * q[s, j] + shift[j]
    return out


def _normal_cdf(v):
    """Φ(v); in compiled code in v's own precision (the overload below picks per dtype)."""
    return 0.5 * (1.0 + math.erf(v * SQRT_HALF))


def _normal_pdf(v):
    """φ(v); in compiled code in v's own precision (the overload below picks per dtype)."""
    return math.exp(-0.5 * v * v) * INV_SQRT_2PI


# Erf numerator (odd, highest power first) and denominator (even) of Eigen's float32 rational
# approximation (generic_fast_erf_float, also in TensorFlow/XLA): |error| < 5e-7 on [-4, 4], and erf
# is ±1 in float32 beyond. libm's erf is a float64 call that does not vectorise; this is 5x faster.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)
P0, P1, P2, P3, P4, P5, P6 = (np.float32(c) for c in _ERF_P)
Q0, Q1, Q2, Q3, Q4 = (np.float32(c) for c in _ERF_Q)


@nb.extending.overload(_normal_cdf, inline="always")
def _normal_cdf_impl(v):
    if v == nb.types.float32:
        half, r2, four = np.float32(0.5), np.float32(SQRT_HALF), np.float32(4.0)

        def cdf32(v):
            a = min(max(v * r2, -four), four)
            a2 = a * a
            p = ((((((P0 * a2 + P1) * a2 + P2) * a2 + P3) * a2 + P4) * a2 + P5) * a2 + P6) * a
            q = (((Q0 * a2 + Q1) * a2 + Q2) * a2 + Q3) * a2 + Q4
            return half + half * (p / q)
        return cdf32
    return _normal_cdf  # float64 (and other types): the exact formula above


@nb.extending.overload(_normal_pdf, inline="always")
def _normal_pdf_impl(v):
    if v == nb.types.float32:
        m_half, k = np.float32(-0.5), np.float32(INV_SQRT_2PI)
        # the C library's expf, bit for bit (numba_math); _gelu_grad_f32 splits the same expression
        # over two loops, this scalar form serves _gelu_grad's float32 values (a float64 gradient)
        return lambda v: expf(m_half * v * v) * k
    return _normal_pdf


@nb.njit(parallel=True, cache=True)
def _add(a, b, out):
    """``out = a + b`` for ``(N, C)`` arrays, rows split over the threads (elementwise: the same bits)."""
    for i in nb.prange(a.shape[0]):
        for c in range(a.shape[1]):
            out[i, c] = a[i, c] + b[i, c]
    return out


@nb.njit(cache=True)
def _column_sum(x, out):
    """``out[c] = x[0, c] + x[1, c] + ...``, added in row order — the order NumPy's ``x.sum(axis=0)``
    adds a C-ordered ``(N, C)`` array with C > 1 in, so the bits are NumPy's. Splitting the rows
    between threads would add partial sums in another order; splitting the columns keeps the bits
    but gained nothing on a two-core machine: the sum only streams the rows, each thread's band
    leaves the other band's lines in every row it reads (the prefetchers fetch them anyway), and
    in a timing on two cores two bands were never faster than one pass, and slower at 32 and 256
    float32 columns.
    So one thread streams the rows once, ``COLSUM_LANES`` columns a pass.

    The running sums live in a stack array and the loops index from 0, so Numba adds no
    negative-index test and LLVM keeps the sums in vector registers."""
    n, c = x.shape
    acc = nb.carray(_stack_array(COLSUM_LANES, x), COLSUM_LANES)
    for c0 in range(0, c, COLSUM_LANES):
        w = min(COLSUM_LANES, c - c0)
        first = x[0, c0:c0 + w]  # starting from row 0, not from 0.0, keeps a column of -0.0 at -0.0
        for j in range(w):
            acc[j] = first[j]
        for i in range(1, n):
            row = x[i, c0:c0 + w]
            for j in range(w):
                acc[j] += row[j]
        for j in range(w):
            out[c0 + j] = acc[j]
    return out


@nb.njit(parallel=True, cache=True)
def _gelu(x, out):
    for i in nb.prange(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[i, c]
            out[i, c] = v * _normal_cdf(v)
    return out


@nb.njit(parallel=True, cache=True)
def _gelu_grad(x, grad, out):
    for i in nb.prange(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[i, c]
            out[i, c] = grad[i, c] * (_normal_cdf(v) + v * _normal_pdf(v))
    return out


@nb.njit(parallel=True, cache=True)
def _gelu_grad_f32(x, grad, out):
    """``_gelu_grad`` of float32 ``(N, C)`` C-contiguous arrays, the same bits, with φ's exponential
    vectorised. ``math.exp`` of a float32 is a call of the C library's ``expf`` per value; here it is
    that function's own algorithm (``numba_math``), split in two loops over each block of
    ``EXP_BLOCK`` values: the range reduction and polynomial (vector code), then the table lookup
    (one value at a time), whose result waits in ``out`` for the last loop, vector code again. The
    blocks are slices, so that the loops index from 0 (an index Numba cannot prove non-negative gets
    a wraparound test, and then no loop vectorises)."""
    xf, gf, of = x.reshape(-1), grad.reshape(-1), out.reshape(-1)
    m_half, k_pdf = np.float32(-0.5), np.float32(INV_SQRT_2PI)
    for block in nb.prange((xf.size + EXP_BLOCK - 1) // EXP_BLOCK):
        lo = block * EXP_BLOCK
        xb, gb, ob = xf[lo:lo + EXP_BLOCK], gf[lo:lo + EXP_BLOCK], of[lo:lo + EXP_BLOCK]
        ks = nb.carray(_stack_array(EXP_BLOCK, np.uint64(0)), EXP_BLOCK)
        ys = nb.carray(_stack_array(EXP_BLOCK, np.float64(0)), EXP_BLOCK)
        for j in range(len(xb)):
            v = xb[j]
            ks[j], ys[j] = expf_reduce(m_half * v * v)
        for j in range(len(xb)):
            ob[j] = expf_scale(ks[j], ys[j])
        for j in range(len(xb)):
            v = xb[j]
            ob[j] = gb[j] * (_normal_cdf(v) + v * (ob[j] * k_pdf))
    return out


@nb.njit(parallel=True, cache=True)
def _layer_norm(x, weight, bias, eps, y, xhat, rstd):
    n, c = x.shape
    for i in nb.prange(n):
        mu = 0.0
        for j in range(c):
            mu += x[i, j]
        mu /= c
        var = 0.0
        for j in range(c):
            d = x[i, j] - mu
            var += d * d
        r = 1.0 / math.sqrt(var / c + eps)
        rstd[i, 0] = r
        for j in range(c):
            h = (x[i, j] - mu) * r
            xhat[i, j] = h
            y[i, j] = h * weight[j] + bias[j]
    return y, xhat, rstd


@nb.njit(parallel=True, cache=True)
def _layer_norm_grad(grad, xhat, rstd, weight, gx):
    n, c = grad.shape
    n_chunks = min(WGRAD_CHUNKS, max(n, 1))
    partial = np.empty((n_chunks, 2 * c), dtype=grad.dtype)  # per chunk: Σ grad·xhat, then Σ grad
    for chunk in nb.prange(n_chunks):
        # The chunk's sums live in its own buffer while it runs and are stored once at the end, so
        # no thread writes a cache line of another's while summing.
        acc = np.zeros((2, c), dtype=grad.dtype)
        for i in range(n * chunk // n_chunks, n * (chunk + 1) // n_chunks):
            m1, m2 = 0.0, 0.0  # row means of gxhat and gxhat·xhat
            for j in range(c):
                g, h = grad[i, j], xhat[i, j]
                m1 += g * weight[j]
                m2 += g * weight[j] * h
                acc[0, j] += g * h
                acc[1, j] += g
            m1 /= c
            m2 /= c
            r = rstd[i, 0]
            for j in range(c):
                gx[i, j] = r * (grad[i, j] * weight[j] - m1 - xhat[i, j] * m2)
        partial[chunk, :c], partial[chunk, c:] = acc[0], acc[1]
    # The chunk partials are added in order by a serial kernel: written here, `sums += partial[chunk]`
    # would be an array expression that Numba turns into a parallel region of its own — one launch
    # per chunk, each waking the threads, which made this kernel slower on 2 threads than on 1.
    sums = _sum_chunks(partial, 1, n_chunks)[0]
    return gx, sums[:c], sums[c:]


class NumbaBackend:
    name = "numba"
    xp = np
    parallel_min_work = 1 << 16  # below this many multiply-adds a kernel runs on one thread

    def _launch(self, kernel, work, *args):
        """Run ``kernel``; small work on one thread (waking threads costs more than it saves)."""
        if work >= self.parallel_min_work:
            return kernel(*args)
        threads = nb.get_num_threads()
        nb.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            nb.set_num_threads(threads)


    def build_index(self, keys):
        capacity = 1 << max(4, int(2 * max(len(keys), 1) - 1).bit_length())  # power of two >= 2N
        slot_keys, slot_rows, dup = _build_index(np.ascontiguousarray(keys, dtype=np.int64), capacity)
        if dup >= 0:
            raise ValueError(f"coordinate index: key of row {dup} ({C.unpack_keys(keys[dup:dup + 1])[0].tolist()}) "
                             "occurs twice")
        return slot_keys, slot_rows

    def lookup(self, index, queries):
        return self._launch(_lookup, 16 * len(queries), *index, np.ascontiguousarray(queries, dtype=np.int64),
                            np.empty(len(queries), dtype=np.int32))

    def neighbor_table(self, index, coords, spatial_shape, offsets):
        return self._launch(_neighbor_table, 16 * len(coords) * len(offsets), *index, coords,
                            np.array(spatial_shape, dtype=np.int64), np.ascontiguousarray(offsets, dtype=np.int64),
                            np.empty((len(coords), len(offsets)), dtype=np.int32))

    def submanifold_table(self, keys, spatial_shape, offsets):
        """Optional member: the whole ``(N, K) int32`` table of a centred kernel in one pass.

        keys ``(N,) int64`` strictly ascending (a tensor's sites), offsets ``(K, 3) int32`` the
        row-major product of three ascending axes (``kmap.centred_offsets``). Equal, entry for
        entry, to ``neighbor_table`` of every offset; needs no index (``_submanifold_table``).
        """
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 3)
        axes = [np.unique(offsets[:, a]) for a in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        if not np.array_equal(grid, offsets):
            raise ValueError("submanifold_table: offsets must be the row-major product of three ascending axes")
        row_keys, row_ptr, bad = _grid_rows(keys)
        if bad >= 0:
            raise ValueError(f"submanifold_table: keys must be strictly ascending (row {bad} is not)")
        # Tasks: enough blocks of grid rows to balance uneven rows over the threads; the table does
        # not depend on their number.
        n_tasks = min(len(row_keys), 16 * nb.get_num_threads())
        table = np.empty((len(keys), len(offsets)), dtype=np.int32)
        self._launch(_submanifold_table, 4 * len(keys) * len(offsets), keys, row_keys, row_ptr,
                     np.array(spatial_shape, dtype=np.int64), axes[0], axes[1], tuple(int(d) for d in axes[2]),
                     n_tasks, table)
        return table

    def mirror_table(self, lower, K):
        return self._launch(_mirror_table, lower.size, np.ascontiguousarray(lower),
                            np.empty((len(lower), K), dtype=np.int32))

    def transpose_table(self, neighbors, n_in):
        return self._launch(_transpose_table, neighbors.size, np.ascontiguousarray(neighbors),
                            np.full((n_in, neighbors.shape[1]), -1, dtype=np.int32))

    def down_table(self, coords, offsets, stride, padding, out_shape):
        coords = np.ascontiguousarray(coords, dtype=np.int32)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 3)
        n, K = len(coords), len(offsets)
        s, p, shape = (np.array(v, dtype=np.int64) for v in (stride, padding, out_shape))
        tiled = self._tiling_down_table(coords, offsets, s, p, shape)
        if tiled is not None:
            return tiled
        cand = self._launch(_down_candidates, 16 * n * K, coords, offsets, s, p, shape, np.empty(n * K, np.int64))
        out_keys = np.sort(cand[cand != EMPTY])  # canonical order; np.unique is ~20x slower (NumPy 2.4)
        if len(out_keys) > 1:  # drop repeats (outputs fed by several inputs)
            out_keys = out_keys[np.concatenate(([True], out_keys[1:] != out_keys[:-1]))]
        table = self._launch(_down_fill, 16 * n * K, *self.build_index(out_keys), cand, n, K,
                             np.full((len(out_keys), K), -1, dtype=np.int32))
        return C.unpack_keys(out_keys), table

    def _tiling_down_table(self, coords, offsets, s, p, shape):
        """``down_table`` of the U-Net's downsampler (window = stride, no padding) on coordinates in
        canonical order, in parallel (:func:`_tiling_down`); None where that does not apply (then
        the general path below, which hashes and sorts, gives the same result)."""
        # the window positions [0, s)³, row-major (kmap.window_offsets; the kernel layer imports
        # nothing above it, so the grid is built here)
        window = np.stack(np.meshgrid(*[np.arange(v) for v in s], indexing="ij"), axis=-1).reshape(-1, 3)
        if p.any() or len(coords) == 0 or not np.array_equal(offsets, window):
            return None
        keys = _pack_keys(coords, np.empty(len(coords), dtype=np.int64))
        _, row_ptr, bad = _grid_rows(keys)
        if bad >= 0:
            return None  # not in canonical order
        first, last = keys[row_ptr[:-1]], keys[row_ptr[1:] - 1]  # each grid row's first and last voxel
        top = [((first >> 32) & 0xFFFF).max(), ((first >> 16) & 0xFFFF).max(), (last & 0xFFFF).max()]
        if np.any(np.array(top) // s >= shape):
            return None  # an output outside the given grid: the general path drops it
        parent = ((first >> 48) << 32) | ((((first >> 32) & 0xFFFF) // s[0]) << 16) | (((first >> 16) & 0xFFFF) // s[1])
        groups = np.argsort(parent, kind="stable")  # ... grouped by its output grid row, (z, y) ascending
        cut = np.flatnonzero(np.diff(parent[groups])) + 1
        group_ptr = np.concatenate(([0], cut, [len(groups)])).astype(np.int64)
        width = int(shape[2])
        counts = np.zeros(len(group_ptr), dtype=np.int64)
        args = (keys, row_ptr, groups.astype(np.int64, copy=False), group_ptr)
        self._launch(_tiling_down, 4 * len(keys), *args, counts, s, width, np.empty((0, 0), np.int32),
                     np.empty(0, np.int64), True)
        out_ptr = np.cumsum(counts)
        table = np.full((int(out_ptr[-1]), len(offsets)), -1, dtype=np.int32)
        out_keys = np.empty(int(out_ptr[-1]), dtype=np.int64)
        self._launch(_tiling_down, 4 * len(keys), *args, out_ptr, s, width, table, out_keys, False)
        return C.unpack_keys(out_keys), table

    def conv_forward(self, feats, weight, kmap):
        return self.conv_forward_bias(feats, weight, kmap, None)

    def conv_forward_bias(self, feats, weight, kmap, bias):
        """Optional member: ``conv_forward`` with ``bias`` added as each output row is stored."""
        feats, weight = np.ascontiguousarray(feats), np.ascontiguousarray(weight)
        return self._launch(numba_conv.forward, kmap.neighbors.size * weight.shape[1] * weight.shape[2],
                            feats, weight, np.ascontiguousarray(kmap.neighbors), bias)

    def conv_weight_grad(self, feats, grad_out, kmap):
        feats, grad_out = np.ascontiguousarray(feats), np.ascontiguousarray(grad_out)
        return self._launch(numba_conv.weight_grad, kmap.neighbors.size * feats.shape[1] * grad_out.shape[1],
                            feats, grad_out, np.ascontiguousarray(kmap.neighbors))

    def depthwise_forward(self, feats, weight, kmap):
        return self.depthwise_forward_bias(feats, weight, kmap, None)

    def depthwise_forward_bias(self, feats, weight, kmap, bias):
        """Optional member: ``depthwise_forward`` with ``bias`` added to each output row before it is
        stored, by the register tiles; the plain loop's output gets it in a second pass (a loop over
        its finished row had made that kernel slower than the pass it saved)."""
        feats, weight = np.ascontiguousarray(feats), np.ascontiguousarray(weight)
        work, c = kmap.neighbors.size * feats.shape[1], feats.shape[1]
        if feats.dtype == np.float32 and c % numba_conv.DW_LANES == 0 and c <= numba_conv.DW_MAX_CHANNELS:
            # Narrow float32 rows in register tiles, the same bits (numba_conv._depthwise_tiles). From
            # 32 channels on, a row of the plain loop holds four or more independent vector chains
            # and was as fast.
            return self._launch(numba_conv.depthwise_forward, work, feats, weight, kmap.neighbors, bias)
        out = self._launch(_depthwise_forward, work, feats, weight, kmap.neighbors,
                           np.empty((len(kmap.neighbors), c), dtype=feats.dtype))
        if bias is not None:
            out += bias
        return out

    def depthwise_weight_grad(self, feats, grad_out, kmap):
        return self._launch(_depthwise_weight_grad, kmap.neighbors.size * feats.shape[1],
                            np.ascontiguousarray(feats), np.ascontiguousarray(grad_out), kmap.neighbors)

    def segment_sum(self, values, seg_ptr):
        seg_ptr = np.asarray(seg_ptr, dtype=np.int64)
        return self._launch(_segment_sum, values.size, np.ascontiguousarray(values), seg_ptr,
                            _segment_chunks(len(seg_ptr) - 1))


    def add(self, a, b):
        """Optional member: ``a + b`` of two ``(N, C)`` arrays of one dtype, the same bits as NumPy's."""
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        if a.shape != b.shape or a.dtype != b.dtype or a.ndim != 2:
            raise ValueError(f"add: two (N, C) arrays of one dtype expected, got {a.shape} {a.dtype} "
                             f"and {b.shape} {b.dtype}")
        return self._launch(_add, a.size, a, b, np.empty(a.shape, a.dtype))

    def column_sum(self, x):
        """Optional member: ``x.sum(axis=0)`` of an ``(N, C)`` array, the same bits as NumPy's."""
        if x.ndim != 2 or x.shape[1] < 2 or len(x) == 0 or not x.flags.c_contiguous:
            return x.sum(axis=0)  # NumPy adds these (a single column, F-ordered views) pairwise
        return _column_sum(x, np.empty(x.shape[1], x.dtype))

    def gelu(self, x):
        return self._launch(_gelu, 8 * x.size, np.ascontiguousarray(x), np.empty(x.shape, x.dtype))

    def gelu_grad(self, x, grad):
        kernel = _gelu_grad_f32 if x.dtype == np.float32 and grad.dtype == np.float32 else _gelu_grad
        return self._launch(kernel, 8 * x.size, np.ascontiguousarray(x), np.ascontiguousarray(grad),
                            np.empty(x.shape, x.dtype))

    def layer_norm(self, x, weight, bias, eps):
        c = x.shape[1]
        weight = np.ones(c, x.dtype) if weight is None else np.asarray(weight, dtype=x.dtype)
        bias = np.zeros(c, x.dtype) if bias is None else np.asarray(bias, dtype=x.dtype)
        return self._launch(_layer_norm, 4 * x.size, np.ascontiguousarray(x), weight, bias, x.dtype.type(eps),
                            np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype), np.empty((len(x), 1), x.dtype))

    def layer_norm_grad(self, grad, xhat, rstd, weight):
        weight = np.ones(grad.shape[1], grad.dtype) if weight is None else np.asarray(weight, dtype=grad.dtype)
        return self._launch(_layer_norm_grad, 6 * grad.size, np.ascontiguousarray(grad),
                            np.ascontiguousarray(xhat), np.ascontiguousarray(rstd), weight,
                            np.empty(grad.shape, grad.dtype))

    def grn(self, x, gamma, beta, seg_ptr, eps):
        x, seg_ptr = np.ascontiguousarray(x), np.asarray(seg_ptr, dtype=np.int64)
        n_chunks = _segment_chunks(len(seg_ptr) - 1)
        G = np.sqrt(self._launch(_segment_dot_sum, 2 * x.size, x, x, seg_ptr, n_chunks)[0])
        _, _, scale = pointwise.grn_scale(np, G, gamma, eps)
        return self._launch(_grn_rows, 2 * x.size, x, scale, x, np.zeros_like(scale),
                            np.asarray(beta, dtype=x.dtype), seg_ptr, n_chunks, np.empty_like(x)), G

    def grn_grad(self, grad, x, gamma, G, seg_ptr, eps):
        grad, x = np.ascontiguousarray(grad), np.ascontiguousarray(x)
        seg_ptr = np.asarray(seg_ptr, dtype=np.int64)
        n_chunks = _segment_chunks(len(seg_ptr) - 1)
        gx_sum, g_sum = self._launch(_segment_dot_sum, 2 * x.size, grad, x, seg_ptr, n_chunks)
        d_gamma, scale, coef = pointwise.grn_grad_coefs(np, gx_sum, G, gamma, eps)
        dx = self._launch(_grn_rows, 2 * x.size, grad, scale, x, coef, np.zeros(x.shape[1], x.dtype),
                          seg_ptr, n_chunks, np.empty_like(grad))
        return dx, d_gamma, g_sum.sum(axis=0)


backend = NumbaBackend()
