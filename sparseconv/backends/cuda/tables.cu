// Neighbour-table algebra: the full submanifold table from its lower half, and the transpose of a
// table (outputs <-> inputs). Both are scatters without collisions: within one offset every row
// occurs at most once (DESIGN §2), so no atomics are needed and the result does not depend on
// thread order. The host fills the output with -1 first.
#include "sc_common.h"

// lower (n, half) -> table (n, K = 2*half+1):
//   table[i, j] = lower[i, j] (j < half);  table[i, half] = i;  table[lower[i, j], K-1-j] = i.
// One thread per (i, j), j in [0, half]; j == half writes the centre.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_mirror_table(const int* __restrict__ lower, long long n, int half, int* __restrict__ table) {
  const int K = 2 * half + 1;
  SC_GRID_STRIDE(t, n * (half + 1)) {
    const long long i = t / (half + 1);
    const int j = (int)(t - i * (half + 1));
    if (j == half) {
      table[i * K + half] = (int)i;
    } else {
      const int nb = lower[i * half + j];
      table[i * K + j] = nb;
      if (nb >= 0) table[(long long)nb * K + (K - 1 - j)] = (int)i;  // i sees nb at +d <=> nb sees i at -d
    }
  }
}

// neighbors (n_out, K) -> table (n_in, K): table[neighbors[o, k], k] = o.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_transpose_table(const int* __restrict__ neighbors, long long n_out, int K, int* __restrict__ table) {
  SC_GRID_STRIDE(t, n_out * K) {
    const int i = neighbors[t];
    if (i >= 0) {
      const long long o = t / K;
      const int k = (int)(t - o * K);
      table[(long long)i * K + k] = (int)o;
    }
  }
}
