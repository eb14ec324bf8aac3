// Coordinate index: an open-addressing hash table on packed int64 voxel keys, and the kernels that
// query it (point lookups and the neighbour table of a set of kernel offsets).
//
// Table: capacity a power of two >= 2N (load <= 1/2), slots `table_keys` (EMPTY = all ones) and
// `table_vals` (row, -1 when empty), both filled by the host before sc_hash_insert runs.
#include "sc_common.h"

// One thread per key: claim a slot with atomicCAS, probing linearly. Keys must be unique (SparseTensor
// guarantees it); with a duplicate key the stored row would be whichever thread wrote last.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_hash_insert(const long long* __restrict__ keys, long long n,
               unsigned long long* __restrict__ table_keys, int* __restrict__ table_vals,
               unsigned long long mask) {
  SC_GRID_STRIDE(i, n) {
    const unsigned long long key = (unsigned long long)keys[i];
    unsigned long long slot = sc_mix64(key) & mask;
    for (unsigned long long probe = 0; probe <= mask; ++probe) {
      const unsigned long long prev = atomicCAS(table_keys + slot, SC_EMPTY_KEY, key);
      if (prev == SC_EMPTY_KEY || prev == key) {
        table_vals[slot] = (int)i;  // read only by later kernels: stream order makes it visible
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
}

// out[i] = row of queries[i], or -1.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_hash_lookup(const long long* __restrict__ queries, long long m,
               const unsigned long long* __restrict__ table_keys,
               const int* __restrict__ table_vals, unsigned long long mask,
               int* __restrict__ out) {
  SC_GRID_STRIDE(i, m) {
    out[i] = sc_hash_find(table_keys, table_vals, mask, (unsigned long long)queries[i]);
  }
}

// out[i, j] = row of coords[i] + offsets[j] (spatial part), or -1 if absent or outside [0, D/H/W).
// One thread per (i, j); consecutive threads write consecutive entries of out.
extern "C" __global__ void __launch_bounds__(SC_BLOCK)
sc_neighbor_table(const int* __restrict__ coords, long long n,
                  const int* __restrict__ offsets, int n_offsets,
                  int D, int H, int W,
                  const unsigned long long* __restrict__ table_keys,
                  const int* __restrict__ table_vals, unsigned long long mask,
                  int* __restrict__ out) {
  SC_GRID_STRIDE(t, n * n_offsets) {
    const long long i = t / n_offsets;
    const int j = (int)(t - i * n_offsets);
    const int* c = coords + 4 * i;
    const int z = c[1] + offsets[3 * j];
    const int y = c[2] + offsets[3 * j + 1];
    const int x = c[3] + offsets[3 * j + 2];
    int row = -1;
    if (z >= 0 && z < D && y >= 0 && y < H && x >= 0 && x < W) {
      row = sc_hash_find(table_keys, table_vals, mask, (unsigned long long)sc_pack_key(c[0], z, y, x));
    }
    out[t] = row;
  }
}
