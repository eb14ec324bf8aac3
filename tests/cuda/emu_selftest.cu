// Deliberately broken kernels: the emulation harness must catch each of these (tests/test_cuda_emulation.py).
// Not part of the library; never compiled for a GPU.
#include "sc_common.h"

// Writes one element past the end of `out` (n elements).
extern "C" __global__ void selftest_oob_write(float* out, long long n) {
  SC_GRID_STRIDE(i, n) out[i] = 1.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) out[n] = 2.0f;
}

// Thread 0 leaves before the barrier the others wait at.
extern "C" __global__ void selftest_divergent_barrier(int* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Odd and even threads wait at different barriers.
extern "C" __global__ void selftest_mismatched_barriers(int* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Write-write race on shared memory: the result is whichever thread wrote last.
extern "C" __global__ void selftest_shared_race(int* out) {
  __shared__ int winner;
  winner = (int)threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = winner;
}

// A block-wide sum through shared memory and barriers: correct under every schedule.
extern "C" __global__ void selftest_block_sum(const int* in, int* out) {
  __shared__ int buf[SC_BLOCK];
  buf[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if ((int)threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  const int everyone = __syncthreads_count(1);  // every thread takes part in every barrier
  if (threadIdx.x == 0) out[blockIdx.x] = everyone == (int)blockDim.x ? buf[0] : -1;
}

// Lost update: a non-atomic read-modify-write split by an atomic (a yield point) in between.
extern "C" __global__ void selftest_lost_update(int* counter, int* scratch) {
  const int seen = counter[0];
  atomicAdd(scratch, 1);
  counter[0] = seen + 1;
}

// Reads one element past the end of `in` (a classic off-by-one in a neighbour loop).
extern "C" __global__ void selftest_oob_read(const float* in, float* out, long long n) {
  SC_GRID_STRIDE(i, n) out[i] = in[i] + in[i + 1];
}

// Writes just before the start of `out`.
extern "C" __global__ void selftest_write_before(float* out) {
  if (threadIdx.x == 0) out[-1] = 1.0f;
}
