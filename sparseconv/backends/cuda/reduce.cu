// Deterministic reductions: chunk partials summed in chunk order, and segment sums.
//
// segment_sum(values (N, C), seg_ptr (S+1)) is two passes. The host splits every segment into chunks
// of `chunk_rows` rows (chunk_ptr[s] = first chunk of segment s, chunk_ptr[S] = total chunks);
// pass 1 sums each (chunk, channel) sequentially, pass 2 adds a segment's chunk partials in order.
// The summation order depends only on seg_ptr and chunk_rows, never on scheduling.
#include "sc_common.h"

// out[e] = sum_{c < n_chunks} partial[c * m + e]   (c ascending)
template <typename T>
__device__ __forceinline__ void sc_sum_chunks_impl(const T* __restrict__ partial, long long n_chunks,
                                                   long long m, T* __restrict__ out) {
  SC_GRID_STRIDE(e, m) {
    T acc = T(0);
    for (long long c = 0; c < n_chunks; ++c) acc += partial[c * m + e];
    out[e] = acc;
  }
}

template <typename T>
__device__ __forceinline__ void sc_segment_partial_impl(const T* __restrict__ values,
                                                        const long long* __restrict__ seg_ptr,
                                                        const long long* __restrict__ chunk_ptr,
                                                        long long n_segments, long long n_chunks,
                                                        int C, long long chunk_rows,
                                                        T* __restrict__ partial) {
  SC_GRID_STRIDE(t, n_chunks * C) {
    const long long j = t / C;
    const int c = (int)(t - j * C);
    // the segment s with chunk_ptr[s] <= j < chunk_ptr[s + 1] (empty segments own no chunk)
    long long lo = 0, hi = n_segments;  // invariant: chunk_ptr[lo] <= j < chunk_ptr[hi]
    while (hi - lo > 1) {
      const long long mid = lo + (hi - lo) / 2;
      if (chunk_ptr[mid] <= j) lo = mid; else hi = mid;
    }
    const long long start = seg_ptr[lo] + (j - chunk_ptr[lo]) * chunk_rows;
    const long long end = seg_ptr[lo + 1];
    const long long stop = (start + chunk_rows < end) ? start + chunk_rows : end;
    T acc = T(0);
    for (long long r = start; r < stop; ++r) acc += values[r * C + c];
    partial[t] = acc;
  }
}

template <typename T>
__device__ __forceinline__ void sc_segment_finish_impl(const T* __restrict__ partial,
                                                       const long long* __restrict__ chunk_ptr,
                                                       long long n_segments, int C,
                                                       T* __restrict__ out) {
  SC_GRID_STRIDE(t, n_segments * C) {
    const long long s = t / C;
    const int c = (int)(t - s * C);
    T acc = T(0);
    for (long long j = chunk_ptr[s]; j < chunk_ptr[s + 1]; ++j) acc += partial[j * C + c];
    out[t] = acc;
  }
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_sum_chunks_f32(const float* __restrict__ partial, long long n_chunks, long long m,
                  float* __restrict__ out) {
  sc_sum_chunks_impl<float>(partial, n_chunks, m, out);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_sum_chunks_f64(const double* __restrict__ partial, long long n_chunks, long long m,
                  double* __restrict__ out) {
  sc_sum_chunks_impl<double>(partial, n_chunks, m, out);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_segment_partial_f32(const float* __restrict__ values, const long long* __restrict__ seg_ptr,
                       const long long* __restrict__ chunk_ptr, long long n_segments,
                       long long n_chunks, int C, long long chunk_rows, float* __restrict__ partial) {
  sc_segment_partial_impl<float>(values, seg_ptr, chunk_ptr, n_segments, n_chunks, C, chunk_rows, partial);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_segment_partial_f64(const double* __restrict__ values, const long long* __restrict__ seg_ptr,
                       const long long* __restrict__ chunk_ptr, long long n_segments,
                       long long n_chunks, int C, long long chunk_rows, double* __restrict__ partial) {
  sc_segment_partial_impl<double>(values, seg_ptr, chunk_ptr, n_segments, n_chunks, C, chunk_rows, partial);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_segment_finish_f32(const float* __restrict__ partial, const long long* __restrict__ chunk_ptr,
                      long long n_segments, int C, float* __restrict__ out) {
  sc_segment_finish_impl<float>(partial, chunk_ptr, n_segments, C, out);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_segment_finish_f64(const double* __restrict__ partial, const long long* __restrict__ chunk_ptr,
                      long long n_segments, int C, double* __restrict__ out) {
  sc_segment_finish_impl<double>(partial, chunk_ptr, n_segments, C, out);
}
