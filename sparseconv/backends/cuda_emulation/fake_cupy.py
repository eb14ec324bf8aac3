"""A stand-in ``cupy`` module made of NumPy and the CUDA emulation — to dry-run GPU code on a CPU.

``install()`` puts it in ``sys.modules["cupy"]``; after that ``sparseconv.backends.cupy_gpu`` imports,
``CupyBackend`` compiles :func:`~sparseconv.backends.cuda_host.combined_source` (the exact NVRTC
translation unit) with the emulation harness, and ``benchmarks/gpu_check.py`` / ``tests/test_gpu.py``
run end to end. It checks the GPU-side Python (module import, RawModule use, launch arguments, the
script's plumbing), not CuPy itself: every other ``cupy.<name>`` is simply ``numpy.<name>``.

Use it in a subprocess (it shadows a real CuPy for the whole interpreter):

    SPARSECONV_FAKE_CUPY=1 python -m pytest tests/test_gpu.py
    python -c "from sparseconv.backends.cuda_emulation import fake_cupy; fake_cupy.install(); ..."
"""
from __future__ import annotations

import hashlib
import sys
import types

import numpy as np

from .build import cache_dir
from .runtime import EmulatedKernels

__version__ = "0-fake (numpy + CUDA emulation)"


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: the code compiled by the CPU emulation harness."""

    def __init__(self, code: str, options=(), **_):
        self.code, self.options = code, tuple(options)
        path = cache_dir() / f"nvrtc_unit_{hashlib.sha256(code.encode()).hexdigest()[:20]}.cu"
        if not path.exists():
            path.write_text(code, encoding="utf-8")
        self._kernels = EmulatedKernels.build([path])

    def get_function(self, name):
        if name not in self._kernels.signatures:
            raise AttributeError(f"fake cupy: no kernel {name!r} in the module")

        def launch(grid, block, args, **_):
            self._kernels.launch(name, grid, block, tuple(args))

        return launch


class _Pool:
    def free_all_blocks(self):
        pass

    def total_bytes(self):
        return 0

    def used_bytes(self):
        return 0


class _Device:
    def __init__(self, *_):
        pass

    def synchronize(self):
        pass


_runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1, getDevice=lambda: 0,
    getDeviceProperties=lambda _i: {"name": b"CPU emulation (fake cupy)"},
    runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0)


def make_module() -> types.ModuleType:
    mod = types.ModuleType("cupy", __doc__)
    mod.__getattr__ = lambda name: getattr(np, name)  # everything else: NumPy
    mod.__version__ = __version__
    mod.ndarray = np.ndarray
    mod.RawModule = RawModule
    mod.asnumpy = lambda a, *_, **__: np.asarray(a)
    pool = _Pool()
    mod.get_default_memory_pool = lambda: pool
    mod.cuda = types.SimpleNamespace(runtime=_runtime, Device=_Device)
    mod.is_fake = True
    return mod


def install() -> types.ModuleType:
    """Make ``import cupy`` return the stand-in (in this interpreter only)."""
    mod = sys.modules.get("cupy")
    if mod is None or not getattr(mod, "is_fake", False):
        mod = sys.modules["cupy"] = make_module()
    return mod
