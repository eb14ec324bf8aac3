// Dense-weight sparse convolution over a neighbour table, forward and weight gradient.
//
//   forward:      out[o, :]   = sum_k sum_ci feats[nbr[o, k], ci] * weight[k, ci, :]
//   weight grad:  dW[k, ci, co] = sum_o feats[nbr[o, k], ci] * grad_out[o, co]
//
// The input gradient is the forward kernel on the transposed table with the transposed weight
// (sparseconv/functional/conv.py), so it shares every property of the forward.
//
// Determinism: each output element is accumulated by exactly one thread, in a fixed order (k, then
// ci ascending; rows ascending within a chunk), and the weight gradient's chunk partials are summed
// in chunk order by sc_sum_chunks (reduce.cu). No atomics anywhere: results are bitwise reproducible
// for the same shapes and inputs, whatever the scheduling.
#include "sc_common.h"

// Output-stationary tiled kernel. Block (blockIdx.x, blockIdx.y) owns output rows
// [x*BM, x*BM+BM) and output channels [y*BN, y*BN+BN). For each offset k it gathers the BM input rows
// nbr[o, k] (a block-uniform skip when none is active), and runs a shared-memory GEMM tile
// (BM x BK) @ (BK x BN) over the input channels: the block's slice of W[k] is staged in shared
// memory once per BK channels and feeds all BM rows. Thread (tx, ty) owns rows ty + i*TY, columns
// tx + j*TX: an RM x RN register tile, each shared value loaded feeding RN or RM FMAs.
//
// Three tile shapes (sc_common.h; cuda_host.py picks one by Cout, so that few threads work on
// channels past Cout):
//   narrow  128 rows x 16 channels,  8 x 32 threads, 4 x 2 outputs each, Cout <= 16;
//   default 128 rows x 32 channels,  8 x 32 threads, 4 x 4 outputs each, Cout <= 32;
//   wide    128 rows x 64 channels, 16 x 16 threads, 8 x 4 outputs each.
// Every output is the same chain of FMAs in all three (k, then ci ascending), so the shape changes
// no bit.
template <typename T, int BM, int BN, int TX, int TY>
__device__ __forceinline__ void sc_conv_forward_tile(const T* __restrict__ feats,
                                                     const T* __restrict__ weight,
                                                     const int* __restrict__ neighbors,
                                                     T* __restrict__ out, long long n_out, int K,
                                                     int Cin, int Cout) {
  constexpr int BK = SC_CONV_BK, NT = TX * TY;
  constexpr int RM = BM / TY, RN = BN / TX;
  static_assert(BM % TY == 0 && BN % TX == 0 && BM <= NT, "tile shape");
  __shared__ T a_tile[BK][BM + 1];  // gathered features, transposed; +1 against bank conflicts
  __shared__ T b_tile[BK][BN];      // weight[k, c0:c0+BK, col0:col0+BN]
  __shared__ int rows[BM];          // nbr[row0:row0+BM, k]

  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TX + tx;
  const long long row0 = (long long)blockIdx.x * BM;
  const int col0 = blockIdx.y * BN;

  T acc[RM][RN];
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < RN; ++j) acc[i][j] = T(0);

  for (int k = 0; k < K; ++k) {
    int active = 0;
    if (tid < BM) {
      const long long o = row0 + tid;
      const int r = (o < n_out) ? neighbors[o * K + k] : -1;
      rows[tid] = r;
      active = r >= 0;
    }
    // Barrier (rows[] complete) and a block-uniform test: skip offsets no row of this tile uses.
    if (!__syncthreads_or(active)) continue;
    for (int c0 = 0; c0 < Cin; c0 += BK) {
      for (int e = tid; e < BM * BK; e += NT) {  // consecutive threads: consecutive channels of a row
        const int m = e / BK, kk = e - m * BK, ci = c0 + kk, r = rows[m];
        a_tile[kk][m] = (r >= 0 && ci < Cin) ? feats[(long long)r * Cin + ci] : T(0);
      }
      for (int e = tid; e < BK * BN; e += NT) {
        const int kk = e / BN, nn = e - kk * BN, ci = c0 + kk, co = col0 + nn;
        b_tile[kk][nn] = (ci < Cin && co < Cout) ? weight[((long long)k * Cin + ci) * Cout + co] : T(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        T a[RM], b[RN];
        for (int i = 0; i < RM; ++i) a[i] = a_tile[kk][ty + i * TY];
        for (int j = 0; j < RN; ++j) b[j] = b_tile[kk][tx + j * TX];
        for (int i = 0; i < RM; ++i)
          for (int j = 0; j < RN; ++j) acc[i][j] += a[i] * b[j];
      }
      __syncthreads();  // tiles (and rows[]) are rewritten next
    }
  }
  for (int i = 0; i < RM; ++i) {
    const long long o = row0 + ty + i * TY;
    if (o >= n_out) continue;
    for (int j = 0; j < RN; ++j) {
      const int co = col0 + tx + j * TX;
      if (co < Cout) out[o * Cout + co] = acc[i][j];
    }
  }
}

// Weight-gradient partials. Block (x, y) = (offset k * channel tiles + tile, row chunk): it reduces
// the rows [y*chunk_rows, (y+1)*chunk_rows) of offset k into a BCI x BCO tile of
// partial[y, k, ci0:ci0+BCI, co0:co0+BCO]. The host sums the chunks in order (sc_sum_chunks), or
// points `partial` at dW itself when there is one chunk.
//
// Three tile shapes (sc_common.h; cuda_host.py picks one): 16 x 16 channels on 8 x 8 threads when Cin
// and Cout are both <= 16; 64 x 64 on 16 x 16 threads when both are > 32; 32 x 32 on 8 x 16 threads
// otherwise. Every entry sums its rows in the same order in all three; the host's chunking is a
// function of the shapes only (counted in default tiles), so the tile changes no bit.
template <typename T, int BCI, int BCO, int BR, int TX, int TY>
__device__ __forceinline__ void sc_conv_wgrad_tile(const T* __restrict__ feats,
                                                   const T* __restrict__ grad_out,
                                                   const int* __restrict__ neighbors,
                                                   T* __restrict__ partial, long long n_out, int K,
                                                   int Cin, int Cout, long long chunk_rows) {
  constexpr int NT = TX * TY;
  constexpr int RI = BCI / TY, RJ = BCO / TX;
  static_assert(BCI % TY == 0 && BCO % TX == 0, "tile shape");
  __shared__ T f_tile[BR][BCI];
  __shared__ T g_tile[BR][BCO];

  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TX + tx;
  const int n_co_tiles = (Cout + BCO - 1) / BCO;
  const int n_tiles = ((Cin + BCI - 1) / BCI) * n_co_tiles;
  const int k = (int)(blockIdx.x / n_tiles);
  const int tile = (int)(blockIdx.x - (unsigned)k * n_tiles);
  const int ci0 = (tile / n_co_tiles) * BCI;
  const int co0 = (tile % n_co_tiles) * BCO;
  const long long chunk = blockIdx.y;
  const long long start = chunk * chunk_rows;
  const long long stop = (start + chunk_rows < n_out) ? start + chunk_rows : n_out;

  T acc[RI][RJ];
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) acc[i][j] = T(0);

  for (long long r0 = start; r0 < stop; r0 += BR) {
    int active = 0;
    for (int e = tid; e < BR * BCI; e += NT) {
      const int r = e / BCI, c = e - r * BCI, ci = ci0 + c;
      const long long o = r0 + r;
      const int nb = (o < stop) ? neighbors[o * K + k] : -1;
      active |= nb >= 0;
      f_tile[r][c] = (nb >= 0 && ci < Cin) ? feats[(long long)nb * Cin + ci] : T(0);
    }
    for (int e = tid; e < BR * BCO; e += NT) {
      const int r = e / BCO, c = e - r * BCO, co = co0 + c;
      const long long o = r0 + r;
      g_tile[r][c] = (o < stop && co < Cout) ? grad_out[o * Cout + co] : T(0);
    }
    if (!__syncthreads_or(active)) continue;  // no pair in these rows: nothing to add
    for (int r = 0; r < BR; ++r) {
      T f[RI], g[RJ];
      for (int i = 0; i < RI; ++i) f[i] = f_tile[r][ty + i * TY];
      for (int j = 0; j < RJ; ++j) g[j] = g_tile[r][tx + j * TX];
      for (int i = 0; i < RI; ++i)
        for (int j = 0; j < RJ; ++j) acc[i][j] += f[i] * g[j];
    }
    __syncthreads();
  }
  T* dst = partial + (chunk * K + k) * (long long)Cin * Cout;
  for (int i = 0; i < RI; ++i) {
    const int ci = ci0 + ty + i * TY;
    if (ci >= Cin) continue;
    for (int j = 0; j < RJ; ++j) {
      const int co = co0 + tx + j * TX;
      if (co < Cout) dst[(long long)ci * Cout + co] = acc[i][j];
    }
  }
}

// ---- entry points --------------------------------------------------------------------------------
// One per tile shape and dtype; block = that tile's TX x TY threads.

extern "C" __global__ void __launch_bounds__(SC_CONV_NARROW_TX * SC_CONV_NARROW_TY)
sc_conv_forward_narrow_f32(const float* __restrict__ feats, const float* __restrict__ weight,
                           const int* __restrict__ neighbors, float* __restrict__ out, long long n_out,
                           int K, int Cin, int Cout) {
  sc_conv_forward_tile<float, SC_CONV_NARROW_BM, SC_CONV_NARROW_BN, SC_CONV_NARROW_TX, SC_CONV_NARROW_TY>(
      feats, weight, neighbors, out, n_out, K, Cin, Cout);
}

extern "C" __global__ void __launch_bounds__(SC_CONV_NARROW_TX * SC_CONV_NARROW_TY)
sc_conv_forward_narrow_f64(const double* __restrict__ feats, const double* __restrict__ weight,
                           const int* __restrict__ neighbors, double* __restrict__ out, long long n_out,
                           int K, int Cin, int Cout) {
  sc_conv_forward_tile<double, SC_CONV_NARROW_BM, SC_CONV_NARROW_BN, SC_CONV_NARROW_TX, SC_CONV_NARROW_TY>(
      feats, weight, neighbors, out, n_out, K, Cin, Cout);
}

extern "C" __global__ void __launch_bounds__(SC_CONV_TX * SC_CONV_TY)
sc_conv_forward_f32(const float* __restrict__ feats, const float* __restrict__ weight,
                    const int* __restrict__ neighbors, float* __restrict__ out, long long n_out,
                    int K, int Cin, int Cout) {
  sc_conv_forward_tile<float, SC_CONV_BM, SC_CONV_BN, SC_CONV_TX, SC_CONV_TY>(
      feats, weight, neighbors, out, n_out, K, Cin, Cout);
}

extern "C" __global__ void __launch_bounds__(SC_CONV_TX * SC_CONV_TY)
sc_conv_forward_f64(const double* __restrict__ feats, const double* __restrict__ weight,
                    const int* __restrict__ neighbors, double* __restrict__ out, long long n_out,
                    int K, int Cin, int Cout) {
  sc_conv_forward_tile<double, SC_CONV_BM, SC_CONV_BN, SC_CONV_TX, SC_CONV_TY>(
      feats, weight, neighbors, out, n_out, K, Cin, Cout);
}

extern "C" __global__ void __launch_bounds__(SC_CONV_WIDE_TX * SC_CONV_WIDE_TY)
sc_conv_forward_wide_f32(const float* __restrict__ feats, const float* __restrict__ weight,
                         const int* __restrict__ neighbors, float* __restrict__ out, long long n_out,
                         int K, int Cin, int Cout) {
  sc_conv_forward_tile<float, SC_CONV_WIDE_BM, SC_CONV_WIDE_BN, SC_CONV_WIDE_TX, SC_CONV_WIDE_TY>(
      feats, weight, neighbors, out, n_out, K, Cin, Cout);
}

extern "C" __global__ void __launch_bounds__(SC_CONV_WIDE_TX * SC_CONV_WIDE_TY)
sc_conv_forward_wide_f64(const double* __restrict__ feats, const double* __restrict__ weight,
                         const int* __restrict__ neighbors, double* __restrict__ out, long long n_out,
                         int K, int Cin, int Cout) {
  sc_conv_forward_tile<double, SC_CONV_WIDE_BM, SC_CONV_WIDE_BN, SC_CONV_WIDE_TX, SC_CONV_WIDE_TY>(
      feats, weight, neighbors, out, n_out, K, Cin, Cout);
}

extern "C" __global__ void __launch_bounds__(SC_WGRAD_NARROW_TX * SC_WGRAD_NARROW_TY)
sc_conv_wgrad_narrow_f32(const float* __restrict__ feats, const float* __restrict__ grad_out,
                         const int* __restrict__ neighbors, float* __restrict__ partial, long long n_out,
                         int K, int Cin, int Cout, long long chunk_rows) {
  sc_conv_wgrad_tile<float, SC_WGRAD_NARROW_BCI, SC_WGRAD_NARROW_BCO, SC_WGRAD_NARROW_BR, SC_WGRAD_NARROW_TX,
                     SC_WGRAD_NARROW_TY>(
      feats, grad_out, neighbors, partial, n_out, K, Cin, Cout, chunk_rows);
}

extern "C" __global__ void __launch_bounds__(SC_WGRAD_NARROW_TX * SC_WGRAD_NARROW_TY)
sc_conv_wgrad_narrow_f64(const double* __restrict__ feats, const double* __restrict__ grad_out,
                         const int* __restrict__ neighbors, double* __restrict__ partial, long long n_out,
                         int K, int Cin, int Cout, long long chunk_rows) {
  sc_conv_wgrad_tile<double, SC_WGRAD_NARROW_BCI, SC_WGRAD_NARROW_BCO, SC_WGRAD_NARROW_BR, SC_WGRAD_NARROW_TX,
                     SC_WGRAD_NARROW_TY>(
      feats, grad_out, neighbors, partial, n_out, K, Cin, Cout, chunk_rows);
}

extern "C" __global__ void __launch_bounds__(SC_WGRAD_TX * SC_WGRAD_TY)
sc_conv_wgrad_f32(const float* __restrict__ feats, const float* __restrict__ grad_out,
                  const int* __restrict__ neighbors, float* __restrict__ partial, long long n_out,
                  int K, int Cin, int Cout, long long chunk_rows) {
  sc_conv_wgrad_tile<float, SC_WGRAD_BCI, SC_WGRAD_BCO, SC_WGRAD_BR, SC_WGRAD_TX, SC_WGRAD_TY>(
      feats, grad_out, neighbors, partial, n_out, K, Cin, Cout, chunk_rows);
}

extern "C" __global__ void __launch_bounds__(SC_WGRAD_TX * SC_WGRAD_TY)
sc_conv_wgrad_f64(const double* __restrict__ feats, const double* __restrict__ grad_out,
                  const int* __restrict__ neighbors, double* __restrict__ partial, long long n_out,
                  int K, int Cin, int Cout, long long chunk_rows) {
  sc_conv_wgrad_tile<double, SC_WGRAD_BCI, SC_WGRAD_BCO, SC_WGRAD_BR, SC_WGRAD_TX, SC_WGRAD_TY>(
      feats, grad_out, neighbors, partial, n_out, K, Cin, Cout, chunk_rows);
}

extern "C" __global__ void __launch_bounds__(SC_WGRAD_WIDE_TX * SC_WGRAD_WIDE_TY)
sc_conv_wgrad_wide_f32(const float* __restrict__ feats, const float* __restrict__ grad_out,
                       const int* __restrict__ neighbors, float* __restrict__ partial, long long n_out,
                       int K, int Cin, int Cout, long long chunk_rows) {
  sc_conv_wgrad_tile<float, SC_WGRAD_WIDE_BCI, SC_WGRAD_WIDE_BCO, SC_WGRAD_WIDE_BR, SC_WGRAD_WIDE_TX,
                     SC_WGRAD_WIDE_TY>(
      feats, grad_out, neighbors, partial, n_out, K, Cin, Cout, chunk_rows);
}

extern "C" __global__ void __launch_bounds__(SC_WGRAD_WIDE_TX * SC_WGRAD_WIDE_TY)
sc_conv_wgrad_wide_f64(const double* __restrict__ feats, const double* __restrict__ grad_out,
                       const int* __restrict__ neighbors, double* __restrict__ partial, long long n_out,
                       int K, int Cin, int Cout, long long chunk_rows) {
  sc_conv_wgrad_tile<double, SC_WGRAD_WIDE_BCI, SC_WGRAD_WIDE_BCO, SC_WGRAD_WIDE_BR, SC_WGRAD_WIDE_TX,
                     SC_WGRAD_WIDE_TY>(
      feats, grad_out, neighbors, partial, n_out, K, Cin, Cout, chunk_rows);
}
