"""CPU emulation of the CUDA backend: the kernels of ``backends/cuda/*.cu`` compiled by the system C++
compiler against ``cuda_emu.h`` and driven by the GPU backend's own host code.

    from sparseconv.backends.cuda_emulation import EmulatedCudaBackend
    be = EmulatedCudaBackend()          # builds (or finds in the cache) the library on first launch
    sparseconv.register_backend("cuda-emu", be)

It is a test instrument, not a fast path: blocks run one after another and threads are fibers.
What it proves and what it cannot is in docs/gpu.md.
"""
from .build import EmulationBuildError, build_library, cache_dir, find_compiler, generated_source
from .runtime import EmulatedCudaBackend, EmulatedKernels, EmulationError, default_kernels

__all__ = ["EmulatedCudaBackend", "EmulatedKernels", "EmulationError", "EmulationBuildError", "build_library",
           "cache_dir", "default_kernels", "find_compiler", "generated_source"]
