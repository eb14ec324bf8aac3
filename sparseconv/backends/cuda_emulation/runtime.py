"""Load the emulation library with ctypes, launch kernels with checked arguments, and the backend.

A launch is marshalled like CuPy's: arrays become device pointers, NumPy scalars their raw bytes.
Before anything runs, each argument is checked against the kernel's real C++ signature (published
by the library): a float32 array for a ``double*``, a Python int or an ``np.int64`` for an ``int``, a
non-contiguous array, or an output aliasing another argument is an :class:`EmulationError`, because on
the GPU it would silently compute garbage.

Every array argument is copied into a guarded buffer: its last byte touches an inaccessible page, and
before it lie ≥ 256 bytes of a pattern (NaN bytes for float arrays, 0xFE for integers) after an
inaccessible page. Reading or writing past the end faults, and the fault is reported as an
``EmulationError`` naming the argument (not a crash); a write just before the start is found by the
pattern check; a read there sees the pattern (NaN propagates into results). Outputs allocated by the
host code are poisoned (NaN / 0x5A5A5A5A), so an element a kernel forgets to write shows in the
comparison with the reference.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..cuda_host import CudaHostBackend
from .build import build_library

_DTYPES = {"f4": np.dtype(np.float32), "f8": np.dtype(np.float64), "i4": np.dtype(np.int32),
           "u4": np.dtype(np.uint32), "i8": np.dtype(np.int64), "u8": np.dtype(np.uint64)}
_CTYPES = {"f4": ctypes.c_float, "f8": ctypes.c_double, "i4": ctypes.c_int32, "u4": ctypes.c_uint32,
           "i8": ctypes.c_int64, "u8": ctypes.c_uint64}


# One launch at a time in the process: the scheduler state is global, and the fault handler a launch
# installs (SIGSEGV/SIGBUS) is process-wide.
_LAUNCH_LOCK = threading.Lock()


class EmulationError(RuntimeError):
    """A launch the GPU would not run correctly: bad arguments, bad configuration, an out-of-bounds
    write, a divergent or mismatched ``__syncthreads``."""


class EmulatedKernels:
    """The kernels of one emulation library, by name."""

    def __init__(self, library_path):
        self.path = str(library_path)
        lib = ctypes.CDLL(self.path)
        lib.sc_emu_kernel_count.restype = ctypes.c_int
        lib.sc_emu_kernel_name.restype = ctypes.c_char_p
        lib.sc_emu_kernel_name.argtypes = [ctypes.c_int]
        lib.sc_emu_kernel_signature.restype = ctypes.c_char_p
        lib.sc_emu_kernel_signature.argtypes = [ctypes.c_int]
        lib.sc_emu_last_error.restype = ctypes.c_char_p
        lib.sc_emu_launch.restype = ctypes.c_int
        lib.sc_emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                      ctypes.POINTER(ctypes.c_void_p), ctypes.c_ulonglong, ctypes.c_int]
        lib.sc_emu_fault_address.restype = ctypes.c_void_p
        lib.sc_emu_alloc.restype = ctypes.c_void_p
        lib.sc_emu_alloc.argtypes = [ctypes.c_ulonglong, ctypes.c_int]
        lib.sc_emu_intact.restype = ctypes.c_int
        lib.sc_emu_intact.argtypes = [ctypes.c_void_p]
        lib.sc_emu_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self.signatures = {}
        for i in range(lib.sc_emu_kernel_count()):
            sig = lib.sc_emu_kernel_signature(i).decode()
            self.signatures[lib.sc_emu_kernel_name(i).decode()] = (i, sig.split(",") if sig else [])

    @classmethod
    def build(cls, sources=None, **kwargs) -> "EmulatedKernels":
        return cls(build_library(sources, **kwargs))

    @property
    def names(self) -> list[str]:
        return list(self.signatures)

    def launch(self, kernel: str, grid, block, args, seed: int = 0, yield_atomics: bool = False) -> None:
        if kernel not in self.signatures:
            raise EmulationError(f"no kernel {kernel!r} in the emulated library (have {sorted(self.signatures)})")
        index, signature = self.signatures[kernel]
        if len(args) != len(signature):
            raise EmulationError(f"{kernel} takes {len(signature)} arguments ({','.join(signature)}), got {len(args)}")
        grid, block = _dims(grid, "grid", kernel), _dims(block, "block", kernel)
        with _LAUNCH_LOCK:
            return self._launch_locked(kernel, index, signature, grid, block, args, seed, yield_atomics)

    def _launch_locked(self, kernel, index, signature, grid, block, args, seed, yield_atomics):
        lib = self._lib
        storage, arrays = [], []  # arrays: (position, original, device pointer, writable)
        try:
            for pos, (code, arg) in enumerate(zip(signature, args)):
                if code.startswith("p"):
                    dtype = _DTYPES[code[-2:]]
                    if not isinstance(arg, np.ndarray):
                        raise EmulationError(f"{kernel} argument {pos}: needs an array of {dtype}, got {type(arg).__name__}")
                    if arg.dtype != dtype:
                        raise EmulationError(f"{kernel} argument {pos}: needs {dtype}, got an array of {arg.dtype}")
                    if not arg.flags.c_contiguous:
                        raise EmulationError(f"{kernel} argument {pos}: array is not C-contiguous (a kernel sees raw memory)")
                    ptr = lib.sc_emu_alloc(arg.nbytes, _guard_byte(arg.dtype))
                    if not ptr:
                        raise MemoryError(f"{kernel}: cannot map a guarded buffer of {arg.nbytes} bytes")
                    arrays.append((pos, arg, ptr, code[1] != "c"))
                    if arg.nbytes:
                        ctypes.memmove(ptr, arg.ctypes.data, arg.nbytes)
                    storage.append(ctypes.c_void_p(ptr))
                else:
                    want = _DTYPES[code]
                    if not isinstance(arg, np.generic) or arg.dtype != want:
                        got = arg.dtype if isinstance(arg, np.generic) else type(arg).__name__
                        raise EmulationError(f"{kernel} argument {pos}: needs a NumPy {want} scalar (CuPy packs "
                                             f"arguments by their own type), got {got}")
                    storage.append(_CTYPES[code](arg.item()))
            for pos, arg, _, writable in arrays:
                for pos2, other, _, _ in arrays:
                    if writable and pos2 != pos and arg.size and other.size and np.shares_memory(arg, other):
                        raise EmulationError(f"{kernel}: output argument {pos} overlaps argument {pos2}")
            argv = (ctypes.c_void_p * max(1, len(storage)))(*[ctypes.addressof(s) for s in storage])
            rc = lib.sc_emu_launch(index, (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), argv,
                                   int(seed), int(bool(yield_atomics)))
            where = f"{kernel} grid={grid} block={block}"
            if rc:
                message = lib.sc_emu_last_error().decode()
                fault = lib.sc_emu_fault_address()
                if fault:
                    message += _locate(fault, arrays)
                raise EmulationError(f"{where}: {message}")
            for pos, arg, ptr, writable in arrays:
                if lib.sc_emu_intact(ptr) != 1:
                    raise EmulationError(f"{where}: wrote out of bounds before argument {pos} ({arg.dtype}, shape {arg.shape})")
                if writable and arg.nbytes:
                    ctypes.memmove(arg.ctypes.data, ptr, arg.nbytes)
        finally:
            for _, _, ptr, _ in arrays:
                lib.sc_emu_free(ptr)


def _locate(address: int, arrays) -> str:
    """Which argument's guard page an address falls in."""
    for pos, arg, ptr, _ in arrays:
        offset = address - ptr
        if arg.nbytes <= offset < arg.nbytes + 65536:
            return f" — {offset - arg.nbytes} bytes past the end of argument {pos} ({arg.dtype}, shape {arg.shape})"
        if -65536 <= offset < 0:
            return f" — {-offset} bytes before the start of argument {pos} ({arg.dtype}, shape {arg.shape})"
    return " — not near any argument"


def _dims(value, what, kernel):
    dims = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
    if not 1 <= len(dims) <= 3:
        raise EmulationError(f"{kernel}: {what} must have 1 to 3 dimensions, got {value!r}")
    return dims + (1,) * (3 - len(dims))


def _guard_byte(dtype) -> int:
    return 0xFF if dtype.kind == "f" else 0xFE  # NaN for floats; -2 for signed ints


_shared_kernels: EmulatedKernels | None = None
_shared_lock = threading.Lock()


def default_kernels() -> EmulatedKernels:
    """The emulation library of ``backends/cuda/*.cu``, built (or found in the cache) on first use."""
    global _shared_kernels
    with _shared_lock:
        if _shared_kernels is None:
            _shared_kernels = EmulatedKernels.build()
        return _shared_kernels


class EmulatedCudaBackend(CudaHostBackend):
    """The CUDA backend with NumPy arrays, its kernels run by the CPU emulation.

    Args:
        kernels: an :class:`EmulatedKernels` (default: the library of ``backends/cuda``, built lazily).
        seed: scheduling of blocks and threads — 0 in order, 1 reversed, other values pseudo-random.
        yield_atomics: let the threads of a block interleave at every atomic operation.
        log: if a list, every launch appends ``(kernel, grid, block)`` to it.
    """

    name = "cuda-emu"
    xp = np

    def __init__(self, kernels: EmulatedKernels | None = None, seed: int = 0, yield_atomics: bool = False,
                 log: list | None = None):
        self._kernels = kernels
        self.seed = seed
        self.yield_atomics = yield_atomics
        self.log = log

    @property
    def kernels(self) -> EmulatedKernels:
        if self._kernels is None:
            self._kernels = default_kernels()
        return self._kernels

    def with_schedule(self, seed: int, yield_atomics: bool = False) -> "EmulatedCudaBackend":
        """The same kernels under another scheduling."""
        clone = EmulatedCudaBackend(self._kernels, seed, yield_atomics, self.log)
        clone.__dict__.update({k: v for k, v in self.__dict__.items() if k.isupper()})  # tuned knobs
        return clone

    def _launch(self, kernel, grid, block, args):
        if self.log is not None:
            self.log.append((kernel, tuple(grid), tuple(block)))
        self.kernels.launch(kernel, grid, block, args, self.seed, self.yield_atomics)

    def _empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        return np.full(shape, np.nan if dtype.kind == "f" else 0x5A5A5A5A, dtype=dtype)
