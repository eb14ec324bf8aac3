// sparseconv CUDA kernels: definitions shared by every kernel file.
//
// Every .cu file in this folder is compiled three ways, from the same text:
//   * NVRTC, through cupy.RawModule (sparseconv/backends/cupy_gpu.py): the files concatenated into one
//     translation unit, this header inlined once;
//   * nvcc, one file at a time, for sm_80 and sm_90 (tests/test_cuda_emulation.py);
//   * g++, with cuda_emulation/cuda_emu.h force-included: the CPU emulation used in CI.
// Hence: no system headers (NVRTC has none), no warp intrinsics (the emulation runs a block's threads
// as cooperative fibers that switch only at __syncthreads and atomics), only extern "C" __global__
// entry points (plain names for CuPy, the emulation registry and cuobjdump alike).
//
// The `#define SC_<NAME> <integer>` lines below are read by the host code (cuda_host.py), so grid
// shapes and tile sizes have exactly one definition.
#ifndef SPARSECONV_CUDA_COMMON_H
#define SPARSECONV_CUDA_COMMON_H

// Threads per block of every one-dimensional (grid-stride) kernel.
#define SC_BLOCK 256

// Output-stationary convolution forward tiles: BM output rows x BN output channels per block, input
// channels consumed SC_CONV_BK at a time, block = TX x TY threads, (BM/TY) x (BN/TX) outputs per
// thread. cuda_host.py picks one by Cout: narrow for Cout <= 16, the default for Cout <= 32, wide
// above. Sizes chosen by timing variants on an H200 (docs/gpu.md); every tile computes each output
// as the same chain of FMAs, so the choice changes no bit.
#define SC_CONV_BK 16
#define SC_CONV_NARROW_BM 128
#define SC_CONV_NARROW_BN 16
#define SC_CONV_NARROW_TX 8
#define SC_CONV_NARROW_TY 32
#define SC_CONV_BM 128
#define SC_CONV_BN 32
#define SC_CONV_TX 8
#define SC_CONV_TY 32
#define SC_CONV_WIDE_BM 128
#define SC_CONV_WIDE_BN 64
#define SC_CONV_WIDE_TX 16
#define SC_CONV_WIDE_TY 16

// Weight-gradient tiles: BCI input x BCO output channels per block, rows consumed BR at a time,
// block = TX x TY threads. narrow: Cin, Cout <= 16; wide: Cin, Cout > 32; the default otherwise.
// The host's row chunks are counted in default tiles and SC_WGRAD_BR rows whatever tile runs, so
// the tile changes no bit of the weight gradient either.
#define SC_WGRAD_NARROW_BCI 16
#define SC_WGRAD_NARROW_BCO 16
#define SC_WGRAD_NARROW_BR 64
#define SC_WGRAD_NARROW_TX 8
#define SC_WGRAD_NARROW_TY 8
#define SC_WGRAD_BCI 32
#define SC_WGRAD_BCO 32
#define SC_WGRAD_BR 16
#define SC_WGRAD_TX 8
#define SC_WGRAD_TY 16
#define SC_WGRAD_WIDE_BCI 64
#define SC_WGRAD_WIDE_BCO 64
#define SC_WGRAD_WIDE_BR 32
#define SC_WGRAD_WIDE_TX 16
#define SC_WGRAD_WIDE_TY 16

// Empty slot of the coordinate hash table. Packed keys are non-negative int64, so never all ones.
#define SC_EMPTY_KEY 0xFFFFFFFFFFFFFFFFull

// Grid-stride loop over [0, total) with a 64-bit index.
#define SC_GRID_STRIDE(i, total)                                                   \
  for (long long i = (long long)blockIdx.x * (long long)blockDim.x + threadIdx.x; \
       i < (long long)(total); i += (long long)blockDim.x * (long long)gridDim.x)

// splitmix64's finalizer: a bijective 64-bit mixer, so nearby voxel keys spread over the table.
__device__ __forceinline__ unsigned long long sc_mix64(unsigned long long z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// key = batch << 48 | z << 32 | y << 16 | x   (sparseconv/coords.py)
__device__ __forceinline__ long long sc_pack_key(int b, int z, int y, int x) {
  return ((long long)b << 48) | ((long long)z << 32) | ((long long)y << 16) | (long long)x;
}

// Row stored for `key` in an open-addressing table (linear probing), or -1.
__device__ __forceinline__ int sc_hash_find(const unsigned long long* __restrict__ table_keys,
                                            const int* __restrict__ table_vals,
                                            unsigned long long mask, unsigned long long key) {
  unsigned long long slot = sc_mix64(key) & mask;
  for (unsigned long long probe = 0; probe <= mask; ++probe) {
    const unsigned long long k = table_keys[slot];
    if (k == key) return table_vals[slot];  // an empty slot's value is -1, so key == EMPTY is safe
    if (k == SC_EMPTY_KEY) return -1;
    slot = (slot + 1) & mask;
  }
  return -1;
}

#endif  // SPARSECONV_CUDA_COMMON_H
