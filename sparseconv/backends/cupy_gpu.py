"""The GPU backend: CuPy arrays, raw CUDA kernels from ``backends/cuda/*.cu`` (via ``cupy.RawModule``).

All host-side logic (checks, allocation, grid shapes, reduction chunking, launch order) is
:class:`~sparseconv.backends.cuda_host.CudaHostBackend`, shared with the CPU emulation that CI runs;
this module only supplies ``xp = cupy`` and a launcher. The kernels are the ``.cu`` files, concatenated
into one NVRTC translation unit and compiled on first use (CuPy caches the binary on disk).

Importing this module without CuPy, or without a usable CUDA GPU, raises ``ImportError`` with the
reason, which ``sparseconv.set_backend("cupy")`` reports as one clear error.

Inputs may be NumPy or CuPy arrays (NumPy inputs are copied to the device); outputs are CuPy arrays.
"""
from __future__ import annotations

import numpy as np

try:
    import cupy
except ImportError as err:  # pragma: no cover - depends on the machine
    raise ImportError(f"CuPy is not installed ({err}); for the GPU backend: pip install sparseconv[gpu]") from err


def _check_device():
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver, no device, ...  # pragma: no cover
        raise ImportError(f"CuPy is installed but no CUDA GPU is usable here ({type(err).__name__}: {err})") from err
    if count < 1:  # pragma: no cover
        raise ImportError("CuPy is installed but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)")


_check_device()

from .cuda_host import NVRTC_OPTIONS, CudaHostBackend, combined_source  # noqa: E402


class CupyBackend(CudaHostBackend):
    """The kernel interface on a CUDA GPU. ``to_device``/``to_host`` move arrays."""

    name = "cupy"
    xp = cupy
    _modules: dict = {}  # device id -> RawModule (shared by all instances)

    def __init__(self):
        self._functions = {}

    @property
    def module(self):
        device = cupy.cuda.runtime.getDevice()
        if device not in self._modules:
            self._modules[device] = cupy.RawModule(code=combined_source(), options=NVRTC_OPTIONS)
        return self._modules[device]

    def _launch(self, kernel, grid, block, args):
        key = (cupy.cuda.runtime.getDevice(), kernel)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = self.module.get_function(kernel)
        fn(tuple(int(g) for g in grid), tuple(int(b) for b in block), args)

    @staticmethod
    def to_device(a):
        return cupy.asarray(a)

    @staticmethod
    def to_host(a) -> np.ndarray:
        return cupy.asnumpy(a)

    @staticmethod
    def device_name() -> str:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


backend = CupyBackend()
