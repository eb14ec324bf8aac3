"""Convolution kernels of the Numba backend: register tiles, output-stationary, thread-invariant.

A convolution on a neighbour table is a matrix product whose rows are gathered:
``out[o] = Σ_k x[nbr[o, k]] @ W[k]``, ``Cin·Cout`` multiply-adds per pair. What decides the speed on a
CPU is how many multiply-adds each value loaded from memory feeds. The plain loop
(``acc[co] += x[i, ci]·W[k, ci, co]`` over ``co``) also loads and stores its accumulator for every
multiply-add, so it runs at the speed of the store port, a fraction of the two FMA units, and less
again at narrow widths where the ``co`` loop is a few iterations long.

The kernels here keep a **register tile** of accumulators for the whole reduction, like the
micro-kernel of a GEMM:

* ``_forward_tiles`` (the forward, and dX: the forward on the transposed map with ``Wᵀ``): a tile
  of ``ROWS`` output rows × ``lanes`` output channels (``lanes`` = 64 bytes, two 256-bit
  registers, or one 512-bit one with AVX-512: 16 float32 or 8 float64). For each offset k and
  input channel ci it broadcasts the ROWS inputs ``x[nbr[o, k], ci]`` and loads one strip of
  ``W[k, ci]``: each weight strip feeds ROWS rows, each input value ``lanes`` channels, 2·ROWS
  vector FMAs for ROWS + 2 loads (with AVX2). The tile
  stays in registers over all K offsets and ``Cin`` channels and is written once. ROWS = 6 makes
  12 accumulator registers: enough independent FMA chains to cover the FMA latency, with room in
  the 16 AVX2 registers for the weight strips and a broadcast (4 rows took ~17 % longer, 8 rows
  spill; measured on a Zen 2 core). The weight is rearranged once per call into
  ``(ceil(Cout/lanes), K, Cin, lanes)`` tiles, zero past ``Cout``, so a tile's strips are one run.
  A row whose neighbour is absent reads a row of zeros (its address is chosen once per offset), so
  the inner loop has no test (a select per value took ~1.5x as long at 4 rows). With finite weights
  that adds exact zeros; a non-finite weight (0·inf = NaN) also reaches the rows of a tile that lack
  that neighbour, where the reference skips them.
* ``_weight_grad_tiles``: ``dW[k] = Σ_pairs x[i]ᵀ dY[o]``. A tile of ``lanes`` channels of one
  operand × ``ROWS`` channels of the other (the wider one in the lanes, see ``weight_grad``)
  accumulates one ``dW[k]`` block over the pairs of a block of ``WGRAD_BLOCK`` rows, listed per
  offset first so absent neighbours cost nothing: per pair one strip load and ROWS broadcasts.

* ``_depthwise_tiles`` (the depthwise forward and dX on float32 rows of 8 or 16 channels): a tile of
  ``DW_ROWS`` rows × ``DW_LANES`` channels, each row's channels multiplied by the offset's weight
  strip; not an FMA chain but the plain loop's products and sums (its bits), eight independent
  chains per offset where the plain loop's row had one or two.

Numba has no vector types. The tile is a small array on the stack (``_stack_array``) indexed only
by counters of compile-time trip counts, which LLVM keeps in registers, and LLVM's SLP vectoriser,
which Numba leaves off by default, turns each tile row into vector FMAs: ``_compiled`` compiles
the float32 kernels with it on (float64 ones stay scalar: see ``_compiled``), and every kernel with
the loop vectoriser off (on AVX-512 it turned the tile into gathers and scatters). ``fastmath={"contract"}`` lets ``a·b + c`` become one FMA (one rounding
instead of two) and nothing else: no reassociation, every sum runs in a fixed order.

Determinism: each output row belongs to one tile, each tile to one parallel task, and a tile adds
its terms in a fixed order (offsets ascending, then input channels ascending). The weight gradient
splits the rows into chunks that depend on the shapes only (``weight_grad_chunks``), adds each
chunk's pairs in row order and then the chunk partials in chunk order. Nothing depends on the
thread count, so 1 and N threads give the same bits (and both tile orientations of the weight
gradient too: each entry is the same chain of FMAs).
"""
from __future__ import annotations

import os

# As in numba_cpu (which imports this module): passive OpenMP waiting and the kernel cache folder
# must be settled before Numba loads, should this module be imported first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .numba_cache import configure as _configure_cache  # noqa: E402

_configure_cache()

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.core.compiler_lock import global_compiler_lock  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

ROWS = 6  # rows of a forward tile (output rows) and of a weight-gradient tile (output channels)
TILE_BYTES = 64  # channels of a tile: 64 bytes = two 256-bit (AVX2) or one 512-bit (AVX-512) register
MAX_TILE = ROWS * TILE_BYTES // 4  # elements of the largest tile (float32)
WGRAD_MAX_CHUNKS = 64  # row chunks of the weight gradient (a function of the shapes, not the threads) ...
WGRAD_MIN_CHUNK_ROWS = 2048  # ... but no chunk smaller than this (its partial would cost more than its rows)
WGRAD_PARTIAL_BYTES = 64 << 20  # ... and the partial dW's of all chunks together at most about this
WGRAD_BLOCK = 64  # rows of a chunk whose pairs are listed at a time (their dY rows stay in L1)
DW_LANES = 8  # channels of a depthwise tile: one 256-bit register of float32
DW_ROWS = 8  # rows of a depthwise tile: eight independent chains per offset
DW_TILE = 64  # DW_ROWS * DW_LANES, spelt out: _stack_array takes a literal
DW_MAX_CHANNELS = 16  # widest input the depthwise tiles are used for (numba_cpu.depthwise_forward)


# --------------------------------------------------------------------------------------------
# Compile-time helpers
# --------------------------------------------------------------------------------------------

@intrinsic
def _stack_array(typingctx, size, like):
    """Pointer to ``size`` uninitialised elements on the stack, of ``like``'s type (a number, or an
    array's dtype); ``size`` a constant. Unlike ``np.empty`` (a heap block LLVM knows nothing
    about), a stack array indexed only by compile-time constants is promoted to registers."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    dtype = like.dtype if isinstance(like, types.Array) else like

    def codegen(context, builder, signature, args):
        count = context.get_constant(types.intp, size.literal_value)
        return cgutils.alloca_once(builder, context.get_value_type(dtype), size=count)
    return types.CPointer(dtype)(size, like), codegen


@intrinsic
def _address(typingctx, arr):
    """The address of ``arr``'s first element, as an integer. Numba frees a local array after its
    last use by name, so only arguments (which the caller holds) are safe to take addresses of."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, context.get_value_type(types.uint64))
    return types.uint64(arr), codegen


@intrinsic
def _load(typingctx, address, index, like):
    """Element ``index`` (of ``like``'s dtype) of the array whose first element is at ``address``."""
    dtype = like.dtype

    def codegen(context, builder, signature, args):
        first = builder.inttoptr(args[0], context.get_value_type(dtype).as_pointer())
        return builder.load(builder.gep(first, [args[1]]))
    return dtype(address, index, like), codegen


def _lanes(a):
    """Channels of a register tile for ``a``'s dtype: a compile-time constant (16 float32, 8 float64)."""


@overload(_lanes, inline="always")
def _lanes_impl(a):
    lanes = TILE_BYTES // (a.dtype.bitwidth // 8)
    return lambda a: lanes


def _compiled(kernel, args):
    """``kernel``, compiled for ``args`` with its loop vectoriser off and, for float32, LLVM's SLP
    vectoriser on.

    The register tiles become vector code only through the SLP vectoriser, which Numba leaves off
    by default (``NUMBA_SLP_VECTORIZE=0``, after miscompilations it met in older LLVM releases).
    The loop vectoriser, on by default, must be off: on a CPU with AVX-512 (seen on an AMD Zen 4)
    it vectorises a loop around the tile instead, reading and writing the accumulators with masked
    gathers and scatters — ``benchmarks/bench_conv.py --quick`` took 161 ms for the forward with
    it, 5 ms without — while on AVX2-only CPUs it left the tiles alone (README's tables were
    measured with it on). With it off, AVX-512 turns each tile row into one 512-bit FMA. In float32
    neither switch changes what is computed: each accumulator is the same chain of FMAs in the same
    order. In float64 some sums of the SLP-vectorised tiles were not one FMA chain in the process that
    compiled them (later processes, loading the kernel from Numba's cache, got the FMA chains), so
    float64 kernels are compiled without it: scalar code, one FMA chain per sum in every process
    (``tests/test_numba_conv.py`` checks a fresh compilation against exact arithmetic).
    Both switches are set for the compilation of these kernels only, under Numba's compiler lock,
    and their results are checked against the NumPy reference by the test suite. Numba's on-disk
    cache does not record the settings, so these kernels are always compiled through this function.
    The compiler rereads Numba's configuration from the environment when a ``NUMBA_*`` variable
    has changed since it last looked, which would reset the switches: that reread happens first.
    """
    sig = tuple(nb.typeof(a) for a in args)
    if sig not in kernel.overloads:
        # float64 tiles stay scalar (docstring; docs/design.md, Determinism)
        slp = int(not any(isinstance(t, types.Array) and t.dtype == types.float64 for t in sig))
        with global_compiler_lock:
            if sig not in kernel.overloads:
                nb.core.config.reload_config()
                saved = nb.config.SLP_VECTORIZE, nb.config.LOOP_VECTORIZE
                nb.config.SLP_VECTORIZE, nb.config.LOOP_VECTORIZE = slp, 0
                try:
                    kernel.compile(sig)
                finally:
                    nb.config.SLP_VECTORIZE, nb.config.LOOP_VECTORIZE = saved
    return kernel


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------

@nb.njit(inline="always")
def _point_rows(rows, n_rows, nbr, o0, k, x_first, row_bytes, zero_row):
    """Point ``rows[r]`` (``r < n_rows``) at the input row of output row ``o0 + r``'s neighbour at
    offset ``k`` — its address, or ``zero_row`` where it has none or lies past the last output row —
    and say whether any of them has one (a tile skips an offset without pairs). Inlined into the
    tile kernels, where ``n_rows`` is a constant: the code is the kernels' own loop."""
    any_pair = False
    for r in range(n_rows):
        i = nbr[o0 + r, k] if o0 + r < nbr.shape[0] else -1
        any_pair |= i >= 0
        row = x_first + np.uint64(max(i, 0)) * row_bytes  # computed first: the choice is a
        rows[r] = row if i >= 0 else zero_row  # select, not a branch to mispredict
    return any_pair


@nb.njit(parallel=True, cache=True)
def _with_zero_rows(x, out):
    """``out`` ``(n + extra, c)``: ``x`` ``(n, c)`` with ``extra`` rows of zeros appended."""
    n, c = x.shape
    extra = out.shape[0] - n
    src, dst = x.reshape(-1), out.reshape(-1)
    n_chunks = 64  # contiguous runs: the copy vectorises like memcpy
    total = n * c
    for ch in nb.prange(n_chunks):
        for j in range(total * ch // n_chunks, total * (ch + 1) // n_chunks):
            dst[j] = src[j]
    for j in range(total, (n + extra) * c):
        dst[j] = 0
    return out


@nb.njit(parallel=True, cache=True, fastmath={"contract"})
def _forward_tiles(x, zeros, w_tiles, nbr, bias, out):
    """``out[o] = Σ_k x[nbr[o, k]] @ W[k] (+ bias)``; ``out`` ``(n_out, Cout)``, allocated by the caller.

    zeros: ``(Cin,)`` zeros, the row a tile row reads where its neighbour is absent (an argument,
    so that it outlives the kernel: a local array would be freed after its last use by name).
    w_tiles: ``(n_tiles, K, Cin, lanes)``, ``w_tiles[t, k, ci, c] = W[k, ci, t·lanes + c]`` (0 past Cout).
    bias: ``(n_tiles·lanes,)``, the bias zero-padded like the tiles, added to each finished sum before
    it is stored (the one rounding of ``out += bias`` after the kernel, without that second pass over
    the output), or ``(0,)``: no bias.
    """
    n_out, K = nbr.shape
    n_tiles, cin = w_tiles.shape[0], w_tiles.shape[2]
    lanes = _lanes(x)
    cout = out.shape[1]
    has_bias = len(bias) > 0
    # A tile row whose neighbour is absent reads a row of zeros instead. Rows are addressed by
    # pointer, so that row need not be part of x (no padded copy of the input).
    x_first, zero_row = _address(x), _address(zeros)
    row_bytes = np.uint64(cin * x.itemsize)
    for block in nb.prange((n_out + ROWS - 1) // ROWS):
        o0 = block * ROWS
        acc = nb.carray(_stack_array(MAX_TILE, x), (ROWS, lanes))  # the register tile
        rows = nb.carray(_stack_array(ROWS, x_first), ROWS)  # address of each tile row's input
        for t in range(n_tiles):
            for r in range(ROWS):
                for c in range(lanes):
                    acc[r, c] = 0
            for k in range(K):
                if not _point_rows(rows, ROWS, nbr, o0, k, x_first, row_bytes, zero_row):
                    continue
                w = w_tiles[t, k]
                for ci in range(cin):
                    for r in range(ROWS):  # ROWS broadcasts, each feeding `lanes` FMAs ...
                        v = _load(rows[r], ci, x)
                        for c in range(lanes):  # ... and one weight strip, feeding ROWS rows
                            acc[r, c] += v * w[ci, c]
            if has_bias:  # not + 0 without one: that would turn a sum of -0.0 into +0.0
                for r in range(ROWS):
                    for c in range(lanes):
                        acc[r, c] += bias[t * lanes + c]
            for r in range(ROWS):
                if o0 + r < n_out:
                    for c in range(min(lanes, cout - t * lanes)):
                        out[o0 + r, t * lanes + c] = acc[r, c]
    return out


@nb.njit(parallel=True, cache=True)
def _depthwise_tiles(x, zeros, weight, nbr, bias, out):
    """``out[o, c] = Σ_k x[nbr[o, k], c]·w[k, c] (+ bias[c])``, ``C`` a multiple of ``DW_LANES``;
    ``out`` ``(n_out, C)``; ``bias`` ``(C,)``, or ``(0,)``: none.

    The depthwise convolution in register tiles of ``DW_ROWS`` rows × ``DW_LANES`` channels. The
    plain loop (``numba_cpu._depthwise_forward``) keeps one row's accumulators in memory, so at
    narrow widths each offset waits for the one before it (a store, a load, an add: one short chain
    per row); here the tile's rows are eight independent chains in registers. Each output is the
    plain loop's sum, term for term: the products added one at a time (no FMA: this kernel is not
    compiled with ``contract``), offsets ascending from 0. A row whose neighbour is absent reads
    ``zeros`` instead and adds ``0·w``, which leaves a sum started at +0 unchanged (it never becomes
    -0), so the bits are the plain loop's, which skips it — for finite weights (as in
    ``_forward_tiles``, a non-finite one would reach the rows that lack its neighbour). The bias is
    added to the finished tile before the store: the one rounding of ``out += bias`` after the
    kernel, without that second pass over the output.
    """
    n_out, K = nbr.shape
    n_tiles = x.shape[1] // DW_LANES
    has_bias = len(bias) > 0
    x_first, zero_row = _address(x), _address(zeros)
    row_bytes = np.uint64(x.shape[1] * x.itemsize)
    for block in nb.prange((n_out + DW_ROWS - 1) // DW_ROWS):
        o0 = block * DW_ROWS
        acc = nb.carray(_stack_array(DW_TILE, x), (DW_ROWS, DW_LANES))  # the register tile
        rows = nb.carray(_stack_array(DW_ROWS, x_first), DW_ROWS)  # address of each tile row's input
        for t in range(n_tiles):
            c0 = t * DW_LANES
            for r in range(DW_ROWS):
                for c in range(DW_LANES):
                    acc[r, c] = 0
            for k in range(K):
                if not _point_rows(rows, DW_ROWS, nbr, o0, k, x_first, row_bytes, zero_row):
                    continue
                for r in range(DW_ROWS):
                    for c in range(DW_LANES):
                        acc[r, c] += _load(rows[r], c0 + c, x) * weight[k, c0 + c]
            if has_bias:  # not + 0 without one: that would turn a sum of -0.0 into +0.0
                for r in range(DW_ROWS):
                    for c in range(DW_LANES):
                        acc[r, c] += bias[c0 + c]
            for r in range(DW_ROWS):
                if o0 + r < n_out:
                    for c in range(DW_LANES):
                        out[o0 + r, c0 + c] = acc[r, c]
    return out


@nb.njit(parallel=True, cache=True, fastmath={"contract"})
def _weight_grad_tiles(vec, bcast, nbr, vec_is_input, n_chunks):
    """``dW[k] = Σ_pairs x[i]ᵀ dY[o]`` → ``(K, Cin, Cout)``, one operand in vector strips.

    ``vec`` is the operand whose channels form a tile's lanes, ``bcast`` the one whose channels are
    broadcast: ``(x, dY)`` when ``vec_is_input``, else ``(dY, x)``. A tile reads ``lanes``
    channels of ``vec`` and ``ROWS`` of ``bcast`` from its first ones, so either may need rows
    after its last (read into tile lanes and rows past the width, never stored). A tile's bcast
    channels are consecutive: the last tile overlaps the one before instead of running past the
    width (its overlap is not stored twice), so the broadcasts share one address register.
    """
    n_out, K = nbr.shape
    n_vec, n_bc = vec.shape[1], bcast.shape[1]
    lanes = _lanes(vec)
    n_lane_tiles = (n_vec + lanes - 1) // lanes
    n_row_tiles = (n_bc + ROWS - 1) // ROWS
    # One partial dW per chunk, laid out as the tile: partial[chunk, k, bcast channel, vec channel].
    partial = np.zeros((n_chunks, K, max(n_bc, ROWS), n_lane_tiles * lanes), dtype=vec.dtype)
    # Flat arrays with unsigned offsets: Numba adds a negative-index test to every signed index,
    # which would cost more than the work it guards in the loops over pairs.
    vf, bf, nf = vec.reshape(-1), bcast.reshape(-1), nbr.reshape(-1)
    u_vec, u_bc, u_K = np.uint64(n_vec), np.uint64(n_bc), np.uint64(K)
    for ch in nb.prange(n_chunks):
        v_off = np.empty(WGRAD_BLOCK, dtype=np.uint64)  # the pairs of one offset in a block of rows:
        b_off = np.empty(WGRAD_BLOCK, dtype=np.uint64)  # where their vec and bcast rows start
        acc = nb.carray(_stack_array(MAX_TILE, vec), (ROWS, lanes))  # the register tile
        stop = n_out * (ch + 1) // n_chunks
        for start in range(n_out * ch // n_chunks, stop, WGRAD_BLOCK):
            for k in range(K):
                m = 0
                at = np.uint64(start) * u_K + np.uint64(k)  # nbr[o, k], walked down the column
                for o in range(np.uint64(start), np.uint64(min(start + WGRAD_BLOCK, stop))):
                    i = nf[at]
                    at += u_K
                    i_row = np.uint64(max(i, 0))
                    v_off[m] = (i_row if vec_is_input else o) * u_vec  # written always, kept if
                    b_off[m] = (o if vec_is_input else i_row) * u_bc  # present: no branch
                    m += i >= 0
                if m == 0:
                    continue
                p = partial[ch, k]
                for u in range(n_row_tiles):
                    base = min(u * ROWS, max(n_bc - ROWS, 0))  # the tile's first bcast channel
                    done = u * ROWS - base  # its rows the tile before has stored already
                    for t in range(n_lane_tiles):
                        for r in range(ROWS):
                            for c in range(lanes):
                                acc[r, c] = p[base + r, t * lanes + c]
                        v_first, b_first = np.uint64(t * lanes), np.uint64(base)
                        for j in range(m):  # the block's pairs, in row order
                            vrow, brow = v_off[j] + v_first, b_off[j] + b_first
                            for r in range(ROWS):  # ROWS broadcasts, each feeding `lanes` FMAs ...
                                b = bf[brow + np.uint64(r)]
                                for c in range(lanes):  # ... and one vector strip, feeding ROWS rows
                                    acc[r, c] += b * vf[vrow + np.uint64(c)]
                        for r in range(ROWS):
                            if r >= done:
                                for c in range(lanes):
                                    p[base + r, t * lanes + c] = acc[r, c]
    cin, cout = (n_vec, n_bc) if vec_is_input else (n_bc, n_vec)
    grad_w = np.zeros((K, cin, cout), dtype=vec.dtype)
    for k in nb.prange(K):  # the chunk partials added in chunk order, each dW[k] by one task
        for ch in range(n_chunks):
            for ci in range(cin):
                for co in range(cout):
                    grad_w[k, ci, co] += partial[ch, k, co, ci] if vec_is_input else partial[ch, k, ci, co]
    return grad_w


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------

def tile_lanes(dtype) -> int:
    """Channels of a register tile for ``dtype`` (the ``_lanes`` of the kernels)."""
    return TILE_BYTES // np.dtype(dtype).itemsize


def weight_tiles(weight, lanes: int):
    """``(K, Cin, Cout)`` → ``(ceil(Cout/lanes), K, Cin, lanes)``, zero past ``Cout``."""
    K, cin, cout = weight.shape
    n_tiles = -(-cout // lanes)
    padded = np.zeros((K, cin, n_tiles * lanes), dtype=weight.dtype)
    padded[:, :, :cout] = weight
    return np.ascontiguousarray(padded.reshape(K, cin, n_tiles, lanes).transpose(2, 0, 1, 3))


def forward(feats, weight, nbr, bias=None):
    """``(n_in, Cin)``, ``(K, Cin, Cout)``, ``(n_out, K) int32``, bias ``(Cout,)`` or None → ``(n_out, Cout)``."""
    cout = weight.shape[2]
    if weight.shape[1] == 0 or cout == 0:
        out = np.zeros((nbr.shape[0], cout), dtype=feats.dtype)
        return out if bias is None else out + bias
    lanes = tile_lanes(feats.dtype)
    padded = np.zeros(0 if bias is None else -(-cout // lanes) * lanes, dtype=feats.dtype)  # (0,): none
    if bias is not None:
        padded[:cout] = bias
    zeros = np.zeros(weight.shape[1], dtype=feats.dtype)
    out = np.empty((nbr.shape[0], cout), dtype=feats.dtype)  # NumPy's: huge pages (numba_cpu docstring)
    args = (feats, zeros, weight_tiles(weight, lanes), nbr, padded, out)
    return _compiled(_forward_tiles, args)(*args)


def depthwise_forward(feats, weight, nbr, bias=None):
    """``(n_in, C)``, ``(K, C)``, ``(n_out, K) int32``, bias ``(C,)`` or None → ``(n_out, C)``;
    ``C`` a multiple of ``DW_LANES``."""
    if feats.shape[1] % DW_LANES:
        raise ValueError(f"depthwise tiles need a multiple of {DW_LANES} channels, got {feats.shape[1]}")
    zeros = np.zeros(feats.shape[1], dtype=feats.dtype)
    bias = np.zeros(0, feats.dtype) if bias is None else np.ascontiguousarray(bias, dtype=feats.dtype)
    out = np.empty((nbr.shape[0], feats.shape[1]), dtype=feats.dtype)
    args = (feats, zeros, weight, nbr, bias, out)
    return _compiled(_depthwise_tiles, args)(*args)


def weight_grad_chunks(n_out: int, K: int, cin: int, cout: int, itemsize: int) -> int:
    """Row chunks of the weight gradient: a function of the shapes only (never of the thread count),
    ``WGRAD_MAX_CHUNKS`` unless the rows are few or the partial dW's would be large."""
    by_rows = n_out // WGRAD_MIN_CHUNK_ROWS
    by_memory = WGRAD_PARTIAL_BYTES // max(K * cin * cout * itemsize, 1)
    return int(max(1, min(WGRAD_MAX_CHUNKS, by_rows, by_memory)))


def padded_work(n_vec: int, n_bc: int, lanes: int) -> int:
    """Multiply-adds per pair of a weight-gradient tiling with ``n_vec`` channels in lanes."""
    return -(-n_vec // lanes) * lanes * -(-n_bc // ROWS) * ROWS


def weight_grad_plan(cin: int, cout: int, dtype) -> tuple:
    """How ``weight_grad`` tiles ``dW``: ``(vec_is_input, vec_rows, bcast_rows)``.

    The channels of one operand fill a tile's lanes, those of the other its ROWS: the input's
    (``vec_is_input``) unless the output's pad less (a narrow input, as in a 1 → 32 stem). Both
    orientations give the same bits. ``vec_rows`` / ``bcast_rows``: zero rows appended to a copy
    of the operand so that the last row's strip (``lanes`` channels) or broadcasts (``ROWS``) stay
    inside the array; 0 (no copy) when the width is a multiple of ``lanes`` / at least ``ROWS``.
    """
    lanes = tile_lanes(dtype)
    vec_is_input = padded_work(cin, cout, lanes) <= padded_work(cout, cin, lanes)
    n_vec, n_bc = (cin, cout) if vec_is_input else (cout, cin)
    vec_rows = -(-(lanes - n_vec % lanes) // n_vec) if n_vec % lanes else 0
    bcast_rows = -(-(ROWS - n_bc) // n_bc) if n_bc < ROWS else 0
    return vec_is_input, vec_rows, bcast_rows


def weight_grad(feats, grad_out, nbr):
    """``(n_in, Cin)``, ``(n_out, Cout)``, ``(n_out, K) int32`` → ``(K, Cin, Cout)``."""
    (n_out, K), cin, cout = nbr.shape, feats.shape[1], grad_out.shape[1]
    if cin == 0 or cout == 0:
        return np.zeros((K, cin, cout), dtype=feats.dtype)
    vec_is_input, vec_rows, bcast_rows = weight_grad_plan(cin, cout, feats.dtype)
    vec, bcast = (feats, grad_out) if vec_is_input else (grad_out, feats)
    if vec_rows:
        vec = _with_zero_rows(vec, np.empty((len(vec) + vec_rows, vec.shape[1]), dtype=vec.dtype))
    if bcast_rows:
        bcast = _with_zero_rows(bcast, np.empty((len(bcast) + bcast_rows, bcast.shape[1]), dtype=bcast.dtype))
    args = (vec, bcast, nbr, vec_is_input, weight_grad_chunks(n_out, K, cin, cout, feats.itemsize))
    return _compiled(_weight_grad_tiles, args)(*args)
