// Depthwise sparse convolution over a neighbour table, forward and weight gradient.
//
//   forward:      out[o, c]  = sum_k weight[k, c] * feats[nbr[o, k], c]
//   weight grad:  dW[k, c]   = sum_o feats[nbr[o, k], c] * grad_out[o, c]
//
// One thread per output element (consecutive threads: consecutive channels, so loads coalesce),
// accumulating in a fixed order; the weight gradient reduces fixed row chunks into partials that
// sc_sum_chunks (reduce.cu) adds in chunk order. No atomics: bitwise reproducible.
#include "sc_common.h"

template <typename T>
__device__ __forceinline__ void sc_depthwise_forward_impl(const T* __restrict__ feats,
                                                          const T* __restrict__ weight,
                                                          const int* __restrict__ neighbors,
                                                          T* __restrict__ out, long long n_out,
                                                          int K, int C) {
  SC_GRID_STRIDE(t, n_out * C) {
    const long long o = t / C;
    const int c = (int)(t - o * C);
    const int* nb_row = neighbors + o * K;
    T acc = T(0);
    for (int k = 0; k < K; ++k) {
      const int nb = nb_row[k];
      if (nb >= 0) acc += feats[(long long)nb * C + c] * weight[(long long)k * C + c];
    }
    out[t] = acc;
  }
}

// partial[chunk, k, c] = sum over rows o of the chunk of feats[nbr[o, k], c] * grad_out[o, c].
template <typename T>
__device__ __forceinline__ void sc_depthwise_wgrad_impl(const T* __restrict__ feats,
                                                        const T* __restrict__ grad_out,
                                                        const int* __restrict__ neighbors,
                                                        T* __restrict__ partial, long long n_out,
                                                        int K, int C, long long chunk_rows,
                                                        long long n_chunks) {
  SC_GRID_STRIDE(t, n_chunks * K * C) {
    const long long kc = t / C;
    const int c = (int)(t - kc * C);
    const long long chunk = kc / K;
    const int k = (int)(kc - chunk * K);
    const long long start = chunk * chunk_rows;
    const long long stop = (start + chunk_rows < n_out) ? start + chunk_rows : n_out;
    T acc = T(0);
    for (long long o = start; o < stop; ++o) {
      const int nb = neighbors[o * K + k];
      if (nb >= 0) acc += feats[(long long)nb * C + c] * grad_out[o * C + c];
    }
    partial[t] = acc;
  }
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_depthwise_forward_f32(const float* __restrict__ feats, const float* __restrict__ weight,
                         const int* __restrict__ neighbors, float* __restrict__ out,
                         long long n_out, int K, int C) {
  sc_depthwise_forward_impl<float>(feats, weight, neighbors, out, n_out, K, C);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_depthwise_forward_f64(const double* __restrict__ feats, const double* __restrict__ weight,
                         const int* __restrict__ neighbors, double* __restrict__ out,
                         long long n_out, int K, int C) {
  sc_depthwise_forward_impl<double>(feats, weight, neighbors, out, n_out, K, C);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_depthwise_wgrad_f32(const float* __restrict__ feats, const float* __restrict__ grad_out,
                       const int* __restrict__ neighbors, float* __restrict__ partial,
                       long long n_out, int K, int C, long long chunk_rows, long long n_chunks) {
  sc_depthwise_wgrad_impl<float>(feats, grad_out, neighbors, partial, n_out, K, C, chunk_rows, n_chunks);
}

extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_depthwise_wgrad_f64(const double* __restrict__ feats, const double* __restrict__ grad_out,
                       const int* __restrict__ neighbors, double* __restrict__ partial,
                       long long n_out, int K, int C, long long chunk_rows, long long n_chunks) {
  sc_depthwise_wgrad_impl<double>(feats, grad_out, neighbors, partial, n_out, K, C, chunk_rows, n_chunks);
}
