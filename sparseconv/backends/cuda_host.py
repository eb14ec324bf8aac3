"""Host side of the CUDA backend, shared by the GPU backend and its CPU emulation.

The kernels live in ``backends/cuda/*.cu``. Everything a backend does around them — argument checks,
output allocation, table capacity, grid and block shapes, chunking of reductions, the order of
launches — is written once here, in :class:`CudaHostBackend`, against two primitives:

* ``xp``: the array module (``cupy`` on the GPU, ``numpy`` in the emulation), and
* ``_launch(kernel, grid, block, args)``: run an ``extern "C"`` kernel; ``args`` are arrays of ``xp``
  and NumPy scalars with the exact width of the kernel's parameter (``np.int32``, ``np.int64``, ...).

:class:`~sparseconv.backends.cupy_gpu.CupyBackend` launches through ``cupy.RawModule``;
:class:`~sparseconv.backends.cuda_emulation.EmulatedCudaBackend` launches the same kernel text compiled
by the system C++ compiler, so the CPU tests run this very host code and these very kernels.

Tile sizes and block shapes are the ``#define SC_<NAME> <int>`` lines of ``cuda/sc_common.h``, read
at import: one definition for kernels and host.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import coords as C
from . import pointwise

CUDA_DIR = Path(__file__).with_name("cuda")
COMMON_HEADER = "sc_common.h"
# Kernel files, in the order they are concatenated into the one NVRTC translation unit.
CUDA_SOURCES = ("hash.cu", "tables.cu", "conv.cu", "depthwise.cu", "reduce.cu")
# nvcc/NVRTC options of the GPU build. FMA contraction stays on (the default): see docs/gpu.md.
NVRTC_OPTIONS = ("--std=c++17", "-lineinfo")

EMPTY_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)\s*\(')
_LOCAL_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"' + re.escape(COMMON_HEADER) + r'"[ \t]*$', re.M)


def cuda_source_paths() -> list[Path]:
    """The kernel files, in concatenation order."""
    return [CUDA_DIR / name for name in CUDA_SOURCES]


def read_constants(header: Path = CUDA_DIR / COMMON_HEADER) -> dict[str, int]:
    """``{"SC_BLOCK": 256, ...}``: the integer ``#define``s of the common header."""
    text = header.read_text(encoding="utf-8")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define (SC_[A-Z0-9_]+) (\d+)[ \t]*$", text, re.M)}


def kernel_names(paths=None) -> list[str]:
    """Names of the ``extern "C" __global__`` kernels defined in ``paths`` (default: all kernel files)."""
    names = []
    for path in paths or cuda_source_paths():
        names += _KERNEL_RE.findall(Path(path).read_text(encoding="utf-8"))
    return names


def combined_source() -> str:
    """The single translation unit CuPy compiles: the common header once, then every kernel file.

    The header is inlined (not ``#include``d) so that CuPy's compile cache, keyed on this text, sees
    every change.
    """
    parts = [f"// ==== {COMMON_HEADER}\n" + (CUDA_DIR / COMMON_HEADER).read_text(encoding="utf-8")]
    for path in cuda_source_paths():
        parts.append(f"// ==== {path.name}\n" + _LOCAL_INCLUDE_RE.sub("", path.read_text(encoding="utf-8")))
    return "\n".join(parts)


CONST = read_constants()
BLOCK = CONST["SC_BLOCK"]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _sfx(dtype) -> str:
    return {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]


class CudaHashIndex:
    """Coordinate index on the device: an open-addressing table of packed keys → rows.

    ``table_keys (capacity,) uint64`` (empty slots all ones), ``table_vals (capacity,) int32``
    (-1 in empty slots), ``capacity`` a power of two ≥ 2·size.
    """

    __slots__ = ("table_keys", "table_vals", "capacity", "size")

    def __init__(self, table_keys, table_vals, capacity: int, size: int):
        self.table_keys, self.table_vals, self.capacity, self.size = table_keys, table_vals, capacity, size

    @property
    def mask(self) -> np.uint64:
        return np.uint64(self.capacity - 1)

    def __repr__(self):
        return f"CudaHashIndex(size={self.size}, capacity={self.capacity})"


class CudaHostBackend:
    """The kernel interface of ``backends/__init__.py`` implemented with the CUDA kernels.

    Subclasses provide ``xp``, ``name`` and ``_launch``. Work-splitting knobs below are class
    attributes so tests can shrink them to exercise multi-chunk paths on small inputs; they depend
    only on shapes (never on the device), so results are reproducible from card to card.
    """

    name = "cuda-host"
    xp = None

    MIN_TABLE_CAPACITY = 16
    MAX_BLOCKS_1D = 65535  # grid-stride kernels: at most this many blocks
    WGRAD_TARGET_BLOCKS = 2048  # conv weight grad: aim for about this many blocks ...
    WGRAD_MIN_CHUNK_ROWS = 256  # ... each reducing at least this many rows
    DW_WGRAD_TARGET_THREADS = 1 << 18  # depthwise weight grad: threads = chunks · K · C
    DW_WGRAD_MIN_CHUNK_ROWS = 64
    SEGMENT_CHUNK_ROWS = 1024  # segment_sum: rows summed by one thread in pass 1

    # --- provided by the device layer ------------------------------------------------------------
    def _launch(self, kernel: str, grid, block, args) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _empty(self, shape, dtype):
        """Uninitialised output; the emulation overrides it to poison, so unwritten entries show."""
        return self.xp.empty(shape, dtype=dtype)

    # --- argument handling -------------------------------------------------------------------------
    def _ints(self, a, dtype, ndim: int, what: str):
        a = self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))
        if a.ndim != ndim:
            raise ValueError(f"{self.name}: {what} must be {ndim}-D, got shape {a.shape}")
        return a

    def _floats(self, a, what: str, dtype=None):
        a = self.xp.asarray(a)
        if a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{self.name}: {what} must be float32 or float64, got {a.dtype}")
        if dtype is not None and a.dtype != dtype:
            raise ValueError(f"{self.name}: {what} dtype {a.dtype} differs from the features' {np.dtype(dtype)}")
        return self.xp.ascontiguousarray(a)

    def _neighbors(self, kmap):
        nbr = self._ints(kmap.neighbors, np.int32, 2, "kmap.neighbors")
        return nbr, nbr.shape[0], nbr.shape[1]

    def _grid1d(self, total: int):
        return (int(min(max(1, _cdiv(total, BLOCK)), self.MAX_BLOCKS_1D)), 1, 1)

    @staticmethod
    def _chunking(n_rows: int, work_per_chunk: int, target: int, min_rows: int, multiple: int = 1):
        """``(chunk_rows, n_chunks)``: about ``target / work_per_chunk`` chunks of ≥ ``min_rows`` rows."""
        target_chunks = max(1, target // max(1, work_per_chunk))
        rows = max(min_rows, _cdiv(n_rows, target_chunks), 1)
        rows = _cdiv(rows, multiple) * multiple
        return rows, _cdiv(n_rows, rows)

    # --- coordinate index --------------------------------------------------------------------------
    def build_index(self, keys):
        keys = self._ints(keys, np.int64, 1, "keys")
        n = int(keys.shape[0])
        capacity = self.MIN_TABLE_CAPACITY
        while capacity < 2 * n:
            capacity *= 2
        table_keys = self.xp.full(capacity, EMPTY_KEY, dtype=np.uint64)
        table_vals = self.xp.full(capacity, -1, dtype=np.int32)
        index = CudaHashIndex(table_keys, table_vals, capacity, n)
        if n:
            self._launch("sc_hash_insert", self._grid1d(n), (BLOCK, 1, 1),
                         (keys, np.int64(n), table_keys, table_vals, index.mask))
        return index

    def lookup(self, index, queries):
        queries = self._ints(queries, np.int64, 1, "queries")
        m = int(queries.shape[0])
        out = self._empty(m, np.int32)
        if m:
            self._launch("sc_hash_lookup", self._grid1d(m), (BLOCK, 1, 1),
                         (queries, np.int64(m), index.table_keys, index.table_vals, index.mask, out))
        return out

    # --- kernel-map tables -------------------------------------------------------------------------
    def neighbor_table(self, index, coords, spatial_shape, offsets):
        coords = self._ints(coords, np.int32, 2, "coords")
        offsets = self._ints(offsets, np.int32, 2, "offsets")
        if coords.shape[1] != 4 or offsets.shape[1] != 3:
            raise ValueError(f"{self.name}: need coords (N, 4) and offsets (J, 3), got {coords.shape}, {offsets.shape}")
        D, H, W = (int(s) for s in spatial_shape)
        n, J = int(coords.shape[0]), int(offsets.shape[0])
        out = self._empty((n, J), np.int32)
        if n * J:
            self._launch("sc_neighbor_table", self._grid1d(n * J), (BLOCK, 1, 1),
                         (coords, np.int64(n), offsets, np.int32(J), np.int32(D), np.int32(H), np.int32(W),
                          index.table_keys, index.table_vals, index.mask, out))
        return out

    def mirror_table(self, lower, K):
        lower = self._ints(lower, np.int32, 2, "lower")
        n, half = (int(s) for s in lower.shape)
        if int(K) != 2 * half + 1:
            raise ValueError(f"{self.name}: mirror_table needs K = 2·{half}+1 for a lower half of {half} columns, got K={K}")
        table = self.xp.full((n, int(K)), -1, dtype=np.int32)
        if n:
            self._launch("sc_mirror_table", self._grid1d(n * (half + 1)), (BLOCK, 1, 1),
                         (lower, np.int64(n), np.int32(half), table))
        return table

    def transpose_table(self, neighbors, n_in):
        neighbors = self._ints(neighbors, np.int32, 2, "neighbors")
        n_out, K = (int(s) for s in neighbors.shape)
        table = self.xp.full((int(n_in), K), -1, dtype=np.int32)
        if n_out * K:
            self._launch("sc_transpose_table", self._grid1d(n_out * K), (BLOCK, 1, 1),
                         (neighbors, np.int64(n_out), np.int32(K), table))
        return table

    def down_table(self, coords, offsets, stride, padding, out_shape):
        xp = self.xp
        coords = self._ints(coords, np.int32, 2, "coords")
        offsets = self._ints(offsets, np.int32, 2, "offsets")
        if coords.shape[1] != 4 or offsets.shape[1] != 3:
            raise ValueError(f"{self.name}: need coords (N, 4) and offsets (K, 3), got {coords.shape}, {offsets.shape}")
        (sz, sy, sx), (pz, py, px), (D, H, W) = (tuple(int(v) for v in t) for t in (stride, padding, out_shape))
        if min(sz, sy, sx) < 1 or min(pz, py, px) < 0:
            raise ValueError(f"{self.name}: down_table needs stride >= 1 and padding >= 0, got {stride}, {padding}")
        n, K = int(coords.shape[0]), int(offsets.shape[0])
        cand = self._empty(n * K, np.int64)  # packed output key of each (row, offset), -1 = none
        if n * K:
            self._launch("sc_down_candidates", self._grid1d(n * K), (BLOCK, 1, 1),
                         (coords, np.int64(n), offsets, np.int32(K), np.int32(sz), np.int32(sy), np.int32(sx),
                          np.int32(pz), np.int32(py), np.int32(px), np.int32(D), np.int32(H), np.int32(W), cand))
        out_keys = xp.unique(cand[cand >= 0])  # sorted on the device: the output sites in canonical order
        m = int(out_keys.shape[0])
        table = xp.full((m, K), -1, dtype=np.int32)
        if m:
            index = self.build_index(out_keys)
            self._launch("sc_down_fill", self._grid1d(n * K), (BLOCK, 1, 1),
                         (cand, np.int64(n), np.int32(K), index.table_keys, index.table_vals, index.mask, table))
        return C.unpack_keys(out_keys, xp), table

    # --- convolution -------------------------------------------------------------------------------
    def _conv_args(self, feats, other, kmap, other_what: str):
        nbr, n_out, K = self._neighbors(kmap)
        feats = self._floats(feats, "feats")
        other = self._floats(other, other_what, feats.dtype)
        if feats.ndim != 2 or feats.shape[0] != kmap.n_in:
            raise ValueError(f"{self.name}: feats must be (n_in={kmap.n_in}, C), got {feats.shape}")
        return nbr, n_out, K, feats, other

    @staticmethod
    def conv_tiles(cin: int, cout: int) -> tuple:
        """The tile shapes of the convolution kernels for these widths, chosen here only:
        ``(forward kernel, rows, channels, block)`` and ``(weight-gradient kernel, ci, co, block)``,
        kernel names without the dtype suffix. Narrow tiles serve widths of 16 or less and wide ones
        widths above 32, so that few threads work on channels past the width; every output is the
        same chain of operations in any of them, so the choice changes no bit."""
        def tile(kernel, prefix, dims):
            return (kernel, *(CONST[f"{prefix}_{d}"] for d in dims), (CONST[f"{prefix}_TX"], CONST[f"{prefix}_TY"], 1))

        if cout <= CONST["SC_CONV_NARROW_BN"]:
            fwd = tile("sc_conv_forward_narrow", "SC_CONV_NARROW", ("BM", "BN"))
        elif cout <= CONST["SC_CONV_BN"]:
            fwd = tile("sc_conv_forward", "SC_CONV", ("BM", "BN"))
        else:
            fwd = tile("sc_conv_forward_wide", "SC_CONV_WIDE", ("BM", "BN"))
        if cin <= CONST["SC_WGRAD_NARROW_BCI"] and cout <= CONST["SC_WGRAD_NARROW_BCO"]:
            wgrad = tile("sc_conv_wgrad_narrow", "SC_WGRAD_NARROW", ("BCI", "BCO"))
        elif cin > CONST["SC_WGRAD_BCI"] and cout > CONST["SC_WGRAD_BCO"]:
            wgrad = tile("sc_conv_wgrad_wide", "SC_WGRAD_WIDE", ("BCI", "BCO"))
        else:
            wgrad = tile("sc_conv_wgrad", "SC_WGRAD", ("BCI", "BCO"))
        return fwd, wgrad

    def conv_forward(self, feats, weight, kmap):
        nbr, n_out, K, feats, weight = self._conv_args(feats, weight, kmap, "weight")
        cin = int(feats.shape[1])
        if weight.ndim != 3 or weight.shape[:2] != (K, cin):
            raise ValueError(f"{self.name}: weight must be (K={K}, Cin={cin}, Cout), got {weight.shape}")
        cout = int(weight.shape[2])
        if n_out == 0 or K == 0 or cin == 0 or cout == 0:
            return self.xp.zeros((n_out, cout), dtype=feats.dtype)
        out = self._empty((n_out, cout), feats.dtype)
        (kernel, rows, channels, block), _ = self.conv_tiles(cin, cout)
        self._launch(f"{kernel}_{_sfx(feats.dtype)}", (_cdiv(n_out, rows), _cdiv(cout, channels), 1), block,
                     (feats, weight, nbr, out, np.int64(n_out), np.int32(K), np.int32(cin), np.int32(cout)))
        return out

    def conv_weight_grad(self, feats, grad_out, kmap):
        nbr, n_out, K, feats, grad_out = self._conv_args(feats, grad_out, kmap, "grad_out")
        if grad_out.ndim != 2 or grad_out.shape[0] != n_out:
            raise ValueError(f"{self.name}: grad_out must be (n_out={n_out}, Cout), got {grad_out.shape}")
        cin, cout = int(feats.shape[1]), int(grad_out.shape[1])
        if n_out == 0 or K == 0 or cin == 0 or cout == 0:
            return self.xp.zeros((K, cin, cout), dtype=feats.dtype)
        _, (kernel, bci, bco, block) = self.conv_tiles(cin, cout)
        # Row chunks counted in default tiles whatever tile runs: the summation order, hence every
        # bit, depends on the shapes alone.
        default_tiles = _cdiv(cin, CONST["SC_WGRAD_BCI"]) * _cdiv(cout, CONST["SC_WGRAD_BCO"])
        chunk_rows, n_chunks = self._chunking(n_out, K * default_tiles, self.WGRAD_TARGET_BLOCKS,
                                              self.WGRAD_MIN_CHUNK_ROWS, CONST["SC_WGRAD_BR"])
        grad_w = self._empty((K, cin, cout), feats.dtype)
        partial = grad_w if n_chunks == 1 else self._empty((n_chunks, K, cin, cout), feats.dtype)
        tiles = _cdiv(cin, bci) * _cdiv(cout, bco)
        self._launch(f"{kernel}_{_sfx(feats.dtype)}", (K * tiles, n_chunks, 1), block,
                     (feats, grad_out, nbr, partial, np.int64(n_out), np.int32(K), np.int32(cin), np.int32(cout),
                      np.int64(chunk_rows)))
        if n_chunks > 1:
            self._sum_chunks(partial, n_chunks, K * cin * cout, grad_w)
        return grad_w

    def depthwise_forward(self, feats, weight, kmap):
        nbr, n_out, K, feats, weight = self._conv_args(feats, weight, kmap, "weight")
        C = int(feats.shape[1])
        if weight.shape != (K, C):
            raise ValueError(f"{self.name}: depthwise weight must be (K={K}, C={C}), got {weight.shape}")
        if n_out == 0 or K == 0 or C == 0:
            return self.xp.zeros((n_out, C), dtype=feats.dtype)
        out = self._empty((n_out, C), feats.dtype)
        self._launch(f"sc_depthwise_forward_{_sfx(feats.dtype)}", self._grid1d(n_out * C), (BLOCK, 1, 1),
                     (feats, weight, nbr, out, np.int64(n_out), np.int32(K), np.int32(C)))
        return out

    def depthwise_weight_grad(self, feats, grad_out, kmap):
        nbr, n_out, K, feats, grad_out = self._conv_args(feats, grad_out, kmap, "grad_out")
        C = int(feats.shape[1])
        if grad_out.shape != (n_out, C):
            raise ValueError(f"{self.name}: grad_out must be (n_out={n_out}, C={C}), got {grad_out.shape}")
        if n_out == 0 or K == 0 or C == 0:
            return self.xp.zeros((K, C), dtype=feats.dtype)
        chunk_rows, n_chunks = self._chunking(n_out, K * C, self.DW_WGRAD_TARGET_THREADS, self.DW_WGRAD_MIN_CHUNK_ROWS)
        grad_w = self._empty((K, C), feats.dtype)
        partial = grad_w if n_chunks == 1 else self._empty((n_chunks, K, C), feats.dtype)
        self._launch(f"sc_depthwise_wgrad_{_sfx(feats.dtype)}", self._grid1d(n_chunks * K * C), (BLOCK, 1, 1),
                     (feats, grad_out, nbr, partial, np.int64(n_out), np.int32(K), np.int32(C),
                      np.int64(chunk_rows), np.int64(n_chunks)))
        if n_chunks > 1:
            self._sum_chunks(partial, n_chunks, K * C, grad_w)
        return grad_w

    def _sum_chunks(self, partial, n_chunks: int, m: int, out):
        self._launch(f"sc_sum_chunks_{_sfx(out.dtype)}", self._grid1d(m), (BLOCK, 1, 1),
                     (partial, np.int64(n_chunks), np.int64(m), out))

    # --- reductions --------------------------------------------------------------------------------
    def segment_sum(self, values, seg_ptr):
        xp = self.xp
        values = self._floats(values, "values")
        seg_ptr = self._ints(seg_ptr, np.int64, 1, "seg_ptr")
        if values.ndim != 2:
            raise ValueError(f"{self.name}: values must be (N, C), got {values.shape}")
        if seg_ptr.shape[0] == 0:
            raise ValueError(f"{self.name}: seg_ptr needs at least one entry (S+1 boundaries)")
        N, C = (int(s) for s in values.shape)
        S = int(seg_ptr.shape[0]) - 1
        lengths = seg_ptr[1:] - seg_ptr[:-1]
        if S and bool((lengths < 0).any() | (seg_ptr[0] < 0) | (seg_ptr[-1] > N)):
            raise ValueError(f"{self.name}: seg_ptr must be non-decreasing within [0, N={N}]")
        if S == 0 or C == 0:
            return xp.zeros((S, C), dtype=values.dtype)
        rows = self.SEGMENT_CHUNK_ROWS
        chunk_ptr = xp.zeros(S + 1, dtype=np.int64)
        chunk_ptr[1:] = xp.cumsum((lengths + (rows - 1)) // rows)
        n_chunks = int(chunk_ptr[-1])
        if n_chunks == 0:
            return xp.zeros((S, C), dtype=values.dtype)
        sfx = _sfx(values.dtype)
        partial = self._empty((n_chunks, C), values.dtype)
        out = self._empty((S, C), values.dtype)
        self._launch(f"sc_segment_partial_{sfx}", self._grid1d(n_chunks * C), (BLOCK, 1, 1),
                     (values, seg_ptr, chunk_ptr, np.int64(S), np.int64(n_chunks), np.int32(C), np.int64(rows), partial))
        self._launch(f"sc_segment_finish_{sfx}", self._grid1d(S * C), (BLOCK, 1, 1),
                     (partial, chunk_ptr, np.int64(S), np.int32(C), out))
        return out

    # --- pointwise: CuPy elementwise ops (NumPy in the emulation), not raw kernels ------------------
    # Host arrays are copied to the device first, as every other kernel does (CuPy's functions
    # refuse NumPy arguments).
    def _opt_floats(self, a, what: str):
        return None if a is None else self._floats(a, what)

    def gelu(self, x):
        return pointwise.gelu(self.xp, self._floats(x, "x"))

    def gelu_grad(self, x, grad):
        return pointwise.gelu_grad(self.xp, self._floats(x, "x"), self._floats(grad, "grad"))

    def layer_norm(self, x, weight, bias, eps):
        return pointwise.layer_norm(self.xp, self._floats(x, "x"), self._opt_floats(weight, "weight"),
                                    self._opt_floats(bias, "bias"), eps)

    def layer_norm_grad(self, grad, xhat, rstd, weight):
        return pointwise.layer_norm_grad(self.xp, self._floats(grad, "grad"), self._floats(xhat, "xhat"),
                                         self._floats(rstd, "rstd"), self._opt_floats(weight, "weight"))

    def grn(self, x, gamma, beta, seg_ptr, eps):
        return pointwise.grn(self.xp, self.segment_sum, self._floats(x, "x"), self._floats(gamma, "gamma"),
                             self._floats(beta, "beta"), self._ints(seg_ptr, np.int64, 1, "seg_ptr"), eps)

    def grn_grad(self, grad, x, gamma, G, seg_ptr, eps):
        return pointwise.grn_grad(self.xp, self.segment_sum, self._floats(grad, "grad"), self._floats(x, "x"),
                                  self._floats(gamma, "gamma"), self._floats(G, "G"),
                                  self._ints(seg_ptr, np.int64, 1, "seg_ptr"), eps)
