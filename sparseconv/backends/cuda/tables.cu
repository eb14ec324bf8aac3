// Neighbour-table algebra: the full submanifold table from its lower half, the transpose of a
// table (outputs <-> inputs), and the table of a strided ("down") map. All are scatters without
// collisions: within one offset every row occurs at most once (docs/design.md, Conventions:
// KernelMap), so no atomics are needed and the result does not depend on thread order. The host
// fills the output with -1 first.
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

// Strided ("down") map, step 1 of 2. One thread per (i, k): the packed key of the output o that input
// row i feeds through window offset k, i.e. coords[i] + padding - offsets[k] == o * stride (exact
// division) with 0 <= o < (D, H, W), or SC_EMPTY_KEY (-1 as a signed key) when there is none.
// The host then sorts the valid keys (xp.unique: the output sites in canonical order) and indexes them.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_down_candidates(const int* __restrict__ coords, long long n,
                   const int* __restrict__ offsets, int n_offsets,
                   int sz, int sy, int sx, int pz, int py, int px, int D, int H, int W,
                   long long* __restrict__ cand) {
  SC_GRID_STRIDE(t, n * n_offsets) {
    const long long i = t / n_offsets;
    const int k = (int)(t - i * n_offsets);
    const int* c = coords + 4 * i;
    const int* off = offsets + 3 * k;
    const int nz = c[1] + pz - off[0], ny = c[2] + py - off[1], nx = c[3] + px - off[2];
    long long key = (long long)SC_EMPTY_KEY;
    if (nz >= 0 && ny >= 0 && nx >= 0 && nz % sz == 0 && ny % sy == 0 && nx % sx == 0) {
      const int oz = nz / sz, oy = ny / sy, ox = nx / sx;
      if (oz < D && oy < H && ox < W) key = sc_pack_key(c[0], oz, oy, ox);
    }
    cand[t] = key;
  }
}

// Step 2 of 2: table[row of cand[i, k] among the output sites, k] = i, for every valid candidate.
// The output sites' hash index is built by sc_hash_insert; the host fills the table with -1 first.
// Each (output, k) is fed by at most one input (input coords are unique): no collisions, no atomics.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_down_fill(const long long* __restrict__ cand, long long n, int n_offsets,
             const unsigned long long* __restrict__ table_keys,
             const int* __restrict__ table_vals, unsigned long long mask,
             int* __restrict__ table) {
  SC_GRID_STRIDE(t, n * n_offsets) {
    const long long key = cand[t];
    if (key >= 0) {
      const int o = sc_hash_find(table_keys, table_vals, mask, (unsigned long long)key);
      const long long i = t / n_offsets;
      const int k = (int)(t - i * n_offsets);
      if (o >= 0) table[(long long)o * n_offsets + k] = (int)i;
    }
  }
}
