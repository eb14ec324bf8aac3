"""01 — Coordinates and hashing: how a voxel becomes a key, and how a key finds its row.

    python examples/01_coordinates_and_hashing.py            # full size, figures into docs/figures
    python examples/01_coordinates_and_hashing.py --smoke    # a few seconds (CI), figures into --out

What it shows, in order:

1. **Packed keys.** A voxel ``[batch, z, y, x]`` is packed into one non-negative int64,
   ``batch << 48 | z << 32 | y << 16 | x`` (``sparseconv.coords.pack_keys``). Sorting keys sorts
   voxels in (batch, z, y, x) order — the *canonical order* every tensor keeps its rows in.
2. **The open-addressing table** of the Numba backend (``numba_cpu._build_index``): capacity a power
   of two ≥ 2N, home slot ``splitmix64(key) & (capacity − 1)``, linear probing on collision. A tiny
   table is printed slot by slot; a pure-Python copy of the algorithm rebuilds the library's table
   bit for bit.
3. **Probe lengths vs load factor** (figure): measured on CT-like keys, against Knuth's formulas
   for linear probing, and what happens without the mixer (``key & mask``).
4. **Neighbour lookup:** the 27 neighbours of a voxel on the grid's edge by key arithmetic, found by
   the reference's sorted-array binary search and by the Numba hash table — the same rows — after a
   bounds check that refuses the neighbours outside the grid (off the edge, adding ``dx`` to the key
   would borrow from the y bits and name another voxel).

Figures: ``01_key_bits.png``, ``01_probe_lengths.png``, ``01_neighbour_lookup.png``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sparseconv  # noqa: E402
from sparseconv import SparseTensor  # noqa: E402
from sparseconv import coords as C  # noqa: E402
from sparseconv.backends import load_backend  # noqa: E402
from sparseconv.kmap import centred_offsets  # noqa: E402

from ct_like import ct_like_coords  # noqa: E402

MASK64 = (1 << 64) - 1


def splitmix64(key: int) -> int:
    """The mixer of ``numba_cpu._mix``, in plain Python integers (wrapping at 64 bits)."""
    z = key & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def splitmix64_np(keys: np.ndarray) -> np.ndarray:
    """The same mixer, vectorised over a uint64 array."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def build_table_python(keys, capacity, mix=splitmix64):
    """Open addressing with linear probing, exactly as ``numba_cpu._build_index`` (but readable)."""
    slot_keys = [-1] * capacity  # -1 marks a free slot (packed keys are >= 0)
    slot_rows = [-1] * capacity
    for row, key in enumerate(int(k) for k in keys):
        s = mix(key) & (capacity - 1)  # the home slot
        while slot_keys[s] != -1:  # occupied: try the next slot (wrapping around)
            s = (s + 1) & (capacity - 1)
        slot_keys[s], slot_rows[s] = key, row
    return np.array(slot_keys, np.int64), np.array(slot_rows, np.int32)


def probe_lengths(slot_keys, homes_of_stored, query_homes):
    """Probes per successful lookup (each stored key) and per unsuccessful one (each query home).

    A stored key found in slot s from home h took ``(s − h) mod capacity + 1`` probes; a miss that
    starts at home h walks to the first free slot at or after h.
    """
    cap = len(slot_keys)
    occupied = slot_keys != -1
    stored_slots = np.flatnonzero(occupied)
    hits = ((stored_slots - homes_of_stored) % cap) + 1
    # distance from each slot to the next free slot (circular), by scanning twice around
    idx = np.arange(2 * cap)
    free2 = np.concatenate([~occupied, ~occupied])
    next_free = np.where(free2, idx, 2 * cap)
    next_free = np.minimum.accumulate(next_free[::-1])[::-1][:cap]
    misses = next_free[query_homes] - query_homes + 1
    return hits, misses


_BUILD = []


def table_with(keys, capacity, mixed: bool):
    """``build_table_python`` compiled with Numba, given precomputed home slots (for the plots)."""
    if not _BUILD:
        from numba import njit

        @njit
        def build(keys, homes, capacity):
            slot_keys = np.full(capacity, -1, np.int64)
            for row in range(len(keys)):
                s = homes[row]
                while slot_keys[s] != -1:
                    s = (s + 1) & (capacity - 1)
                slot_keys[s] = keys[row]
            return slot_keys

        _BUILD.append(build)
    mask = np.uint64(capacity - 1)
    homes = (splitmix64_np(keys) & mask) if mixed else (keys.astype(np.uint64) & mask)
    return _BUILD[0](keys, homes.astype(np.int64), capacity)


def part1_keys(out: Path):
    print("=" * 78)
    print("1. Packed keys: batch << 48 | z << 32 | y << 16 | x")
    print("=" * 78)
    coords = np.array([[0, 3, 1, 2], [0, 0, 65535, 7], [1, 0, 0, 0], [0, 3, 1, 1]], np.int32)
    keys = C.pack_keys(coords)
    print(f"{'[b, z, y, x]':<24}{'key (decimal)':>22}   key (hex: b | z | y | x)")
    for c, k in zip(coords, keys):
        h = f"{int(k):016x}"
        print(f"{str(c.tolist()):<24}{int(k):>22}   {h[0:4]} | {h[4:8]} | {h[8:12]} | {h[12:16]}")
    assert np.array_equal(C.unpack_keys(keys), coords)
    print("unpack_keys(pack_keys(c)) == c: True")
    x = SparseTensor(coords, np.arange(4, dtype=np.float32)[:, None], (4, 65536, 8), batch_size=2)
    print("\nA SparseTensor sorts its rows by key (canonical order); feats follow their rows:")
    for c, f in zip(x.coords, x.feats[:, 0]):
        print(f"  {c.tolist()}  feat {f:.0f}")
    try:
        SparseTensor(np.array([[0, 70000, 0, 0]]), np.zeros((1, 1), np.float32), (70001, 4, 4))
    except ValueError as err:
        print(f"\nToo large for 16 bits → refused, not wrapped:\n  ValueError: {err}")

    fig, ax = plt.subplots(figsize=(9, 1.9))
    fields = [("", 63, 1, "#bbbbbb"), ("batch\n15 bits", 48, 15, "#8da0cb"),
              ("z\n16 bits", 32, 16, "#66c2a5"), ("y\n16 bits", 16, 16, "#fc8d62"), ("x\n16 bits", 0, 16, "#e78ac3")]
    for label, lo, width, color in fields:
        ax.barh(0, width, left=63 - lo - width + 1, color=color, edgecolor="k")
        ax.text(63 - lo - width / 2 + 1, 0, label, ha="center", va="center", fontsize=9)
    ax.text(0.2, 0.45, "sign bit (always 0)", ha="left", va="bottom", fontsize=8)
    for b in (0, 16, 32, 48, 63):
        ax.text(63 - b + 0.5, -0.62, str(b), ha="center", fontsize=8)
    ax.set_xlim(0, 64)
    ax.set_ylim(-0.8, 0.8)
    ax.axis("off")
    ax.set_title("a packed key: one int64 per voxel (bit 63 … bit 0); integer order = (batch, z, y, x) order",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "01_key_bits.png", dpi=120)
    plt.close(fig)


def part2_table():
    print("\n" + "=" * 78)
    print("2. The open-addressing table (Numba backend): capacity = power of two >= 2N")
    print("=" * 78)
    coords = np.array([[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 3, 3], [0, 2, 2, 3], [0, 1, 2, 5], [1, 1, 2, 3]], np.int32)
    keys = C.pack_keys(coords)
    numba_be = load_backend("numba")
    slot_keys, slot_rows = numba_be.build_index(keys)
    cap = len(slot_keys)
    mine_keys, mine_rows = build_table_python(keys, cap)
    assert np.array_equal(mine_keys, slot_keys) and np.array_equal(mine_rows, slot_rows)
    print(f"{len(keys)} voxels → capacity {cap} (load factor {len(keys) / cap:.2f}); the pure-Python "
          "build_table_python() gives the same slots as numba_cpu._build_index")
    print(f"{'slot':>4}  {'voxel [b,z,y,x]':<18}{'row':>4}{'home':>6}{'probes':>8}")
    for s in range(cap):
        if slot_keys[s] == -1:
            print(f"{s:>4}  {'(free)':<18}")
            continue
        home = splitmix64(int(slot_keys[s])) & (cap - 1)
        voxel = C.unpack_keys(slot_keys[s:s + 1])[0].tolist()
        print(f"{s:>4}  {str(voxel):<18}{slot_rows[s]:>4}{home:>6}{(s - home) % cap + 1:>8}")
    q = C.pack_keys(np.array([[0, 1, 2, 4], [0, 9, 9, 9]]))
    print(f"lookup([0,1,2,4]) → row {numba_be.lookup((slot_keys, slot_rows), q[:1])[0]};  "
          f"lookup([0,9,9,9]) → {numba_be.lookup((slot_keys, slot_rows), q[1:])[0]} (absent: the probe hit a free slot)")


def part3_probes(out: Path, smoke: bool):
    print("\n" + "=" * 78)
    print("3. Probe lengths vs load factor (linear probing, CT-like keys)")
    print("=" * 78)
    shape = (16, 32, 32) if smoke else (64, 128, 128)
    keys = C.pack_keys(ct_like_coords(shape, 0.15))  # canonical order: long runs of consecutive keys
    cap = 1 << (10 if smoke else 15)
    rng = np.random.default_rng(0)
    loads = np.array([0.1, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    absent = rng.integers(0, 1 << 62, 4096, dtype=np.int64)  # random keys not in the table
    rows = {"mixed": ([], []), "identity": ([], [])}
    print(f"{len(keys):,} CT-like keys in {shape}; first alpha·capacity of them (a slab of the volume), "
          f"capacity {cap:,}")
    print(f"{'load':>6}{'hit (splitmix)':>16}{'miss (splitmix)':>17}{'hit (key&mask)':>16}{'miss (key&mask)':>17}"
          f"{'Knuth hit':>11}{'Knuth miss':>12}")
    for a in loads:
        n = int(a * cap)
        sub = keys[:n]
        line = []
        for kind in ("mixed", "identity"):
            table = table_with(sub, cap, kind == "mixed")
            mask = np.uint64(cap - 1)
            home = (lambda k: splitmix64_np(k) & mask) if kind == "mixed" else (lambda k: k.astype(np.uint64) & mask)
            stored = table[table != -1]  # in slot order
            hits, misses = probe_lengths(table, home(stored).astype(np.int64), home(absent).astype(np.int64))
            rows[kind][0].append(hits.mean())
            rows[kind][1].append(misses.mean())
            line += [hits.mean(), misses.mean()]
        kh, km = 0.5 * (1 + 1 / (1 - a)), 0.5 * (1 + 1 / (1 - a) ** 2)
        print(f"{a:>6.2f}{line[0]:>16.2f}{line[1]:>17.2f}{line[2]:>16.1f}{line[3]:>17.1f}{kh:>11.2f}{km:>12.2f}")
    print("The library sizes its table so the load stays in (0.25, 0.5]: about 1.2–1.5 probes per hit.")
    print("Without the mixer, keys that differ only in y or z (multiples of 2^16) share a home slot,")
    print("so whole rows of the volume pile onto the same run of slots.")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fine = np.linspace(0.05, 0.92, 100)
    ax = axes[0]
    ax.plot(loads, rows["mixed"][0], "o-", label="hit, splitmix64 (measured)")
    ax.plot(loads, rows["mixed"][1], "s-", label="miss, splitmix64 (measured)")
    ax.plot(fine, 0.5 * (1 + 1 / (1 - fine)), "k--", lw=1, label="Knuth: ½(1 + 1/(1−α))")
    ax.plot(fine, 0.5 * (1 + 1 / (1 - fine) ** 2), "k:", lw=1, label="Knuth: ½(1 + 1/(1−α)²)")
    ax.axvspan(0.25, 0.5, color="tab:green", alpha=0.12, label="sparseconv's load range")
    ax.set_xlabel("load factor α = N / capacity")
    ax.set_ylabel("mean probes per lookup")
    ax.set_ylim(0, 12)
    ax.set_title("linear probing with a strong mixer")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogy(loads, rows["mixed"][0], "o-", label="hit, splitmix64")
    ax.semilogy(loads, rows["identity"][0], "o--", color="tab:red", label="hit, key & mask (no mixer)")
    ax.semilogy(loads, rows["identity"][1], "s--", color="tab:purple", label="miss, key & mask (no mixer)")
    ax.set_xlabel("load factor α")
    ax.set_ylabel("mean probes per lookup (log)")
    ax.set_title("why the mixer: CT-like keys come in runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "01_probe_lengths.png", dpi=120)
    plt.close(fig)


def part4_neighbours(out: Path, smoke: bool):
    print("\n" + "=" * 78)
    print("4. Neighbour lookup at the grid's edge: bounds check + key arithmetic + index lookup")
    print("=" * 78)
    shape = (8, 24, 24) if smoke else (16, 48, 48)
    coords = ct_like_coords(shape, 0.3)
    # crop the volume at the left so the body touches the grid edge x = 0 (a scan whose field of view
    # clips the body): the voxel drawn below sits on that edge, where the bounds check matters
    x_cut = int(coords[:, 3].min()) + shape[2] // 8
    coords = coords[coords[:, 3] >= x_cut] - np.array([0, 0, 0, x_cut], np.int32)
    shape = (shape[0], shape[1], shape[2] - x_cut)
    x = SparseTensor(coords, np.zeros((len(coords), 1), np.float32), shape)
    z0 = shape[0] // 2
    offsets = centred_offsets(3)
    on_edge = np.flatnonzero((x.coords[:, 1] == z0) & (x.coords[:, 3] == 0))
    # a voxel on the edge x = 0 of the middle slice, with a few inactive neighbours inside the grid too
    ref = load_backend("reference")
    table = ref.neighbor_table(ref.build_index(x.keys), x.coords[on_edge], shape, offsets)
    inactive = 18 - (table >= 0).sum(axis=1)  # of the 18 neighbours inside the grid (y, z are interior here)
    centre_row = int(on_edge[np.argmin(np.abs(inactive - 5))])
    p = x.coords[centre_row]
    target = p[None, 1:].astype(np.int64) + offsets
    inside = np.all((target >= 0) & (target < np.array(shape)), axis=1)
    # inside the grid, moving by (dz, dy, dx) adds dz·2^32 + dy·2^16 + dx to the key
    delta = (offsets[:, 0].astype(np.int64) << 32) + (offsets[:, 1].astype(np.int64) << 16) + offsets[:, 2]
    qkeys = x.keys[centre_row] + delta
    assert np.array_equal(qkeys[inside], C.pack_keys(np.c_[np.zeros(inside.sum(), int), target[inside]]))
    # off the edge the same addition borrows from the y bits: x = -1 becomes x = 65535 one row up
    k_off = int(np.flatnonzero(~inside & (offsets[:, 2] == -1) & (offsets[:, 0] == 0) & (offsets[:, 1] == 0))[0])
    wrapped = C.unpack_keys(qkeys[k_off:k_off + 1])[0]
    assert wrapped[3] == C.MAX_AXIS - 1 and wrapped[2] == p[2] - 1
    print(f"voxel {p.tolist()} sits on the grid edge x = 0 of a grid {shape}; {int((~inside).sum())} of its 27 "
          "neighbours are outside the grid (x = -1)")
    print(f"without the bounds check, offset k={k_off} {offsets[k_off].tolist()} would look up key + "
          f"({int(delta[k_off])}) = {int(qkeys[k_off])} = {wrapped.tolist()}: the x bits borrow from y, naming "
          f"x = {wrapped[3]} one row up, not x = -1")
    found = {}
    for name in ("reference", "numba"):
        be = load_backend(name)
        t0 = time.perf_counter()
        index = be.build_index(x.keys)
        rows = np.full(27, -1, np.int32)
        rows[inside] = be.lookup(index, qkeys[inside])  # only the neighbours inside the grid are looked up
        found[name] = rows
        print(f"{name:>9}: index of {len(x):,} keys + {int(inside.sum())} lookups in "
              f"{(time.perf_counter() - t0) * 1e3:.1f} ms")
    assert np.array_equal(found["reference"], found["numba"])
    rows = found["numba"]
    print(f"voxel {p.tolist()} (row {centre_row}): {int((rows >= 0).sum())} of 27 neighbours active "
          "(both backends agree)")
    print(f"{'k':>3}{'offset':>14}{'key delta':>14}{'row':>18}")
    for k in range(27):
        print(f"{k:>3}{str(offsets[k].tolist()):>14}{int(delta[k]):>14}"
              f"{int(rows[k]) if inside[k] else 'outside the grid':>18}")

    fig, axes = plt.subplots(1, 3, figsize=(11, 4.4))
    x_lo, x_hi = -4, 8  # a window that shows the grid edge and the outside on its left
    for j, dz in enumerate((-1, 0, 1)):
        ax = axes[j]
        z = int(p[1]) + dz
        sl = np.zeros(shape[1:], bool)
        m = x.coords[:, 1] == z
        sl[x.coords[m, 2], x.coords[m, 3]] = True
        ax.imshow(sl, cmap="Greys", vmin=0, vmax=2.5, origin="upper", extent=(-0.5, shape[2] - 0.5, shape[1] - 0.5, -0.5))
        ax.axvspan(x_lo - 0.5, -0.5, facecolor="none", edgecolor="#999999", hatch="///", lw=0)
        ax.axvline(-0.5, color="k", lw=2)
        for k in np.flatnonzero(offsets[:, 0] == dz):
            yy, xx = p[2] + offsets[k, 1], p[3] + offsets[k, 2]
            if not inside[k]:
                ax.plot(xx, yy, "s", color="#777777", mfc="white", ms=8, mew=1.5)
            else:
                ok = rows[k] >= 0
                ax.plot(xx, yy, "o" if ok else "x", color="tab:green" if ok else "tab:red", ms=8, mew=2)
            ax.annotate(f"{k}", (xx, yy), textcoords="offset points", xytext=(5, 5), fontsize=7)
        if dz == 0:
            ax.plot(p[3], p[2], "*", color="gold", ms=14, mec="k")
            ax.text(-0.8, p[2] + 4.5, "grid edge\nx = 0", ha="right", va="center", fontsize=8)
        ax.set_xlim(x_lo - 0.5, x_hi + 0.5)
        ax.set_ylim(p[2] + 6.5, p[2] - 6.5)
        ax.set_title(f"slice z = {z} (dz = {dz:+d})")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(f"the 27 neighbours of voxel {p.tolist()[1:]} on the grid edge x = 0: ● found in the index, "
                 "✕ inactive, □ outside the grid (hatched): refused by the bounds check, never looked up\n"
                 "(labels = offset index k; without the check, key + dx for x = −1 would borrow from y and "
                 f"name [{wrapped[1]}, {wrapped[2]}, {wrapped[3]}])", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "01_neighbour_lookup.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG figures")
    p.add_argument("--smoke", "--quick", action="store_true", help="small sizes: a few seconds (CI)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    part1_keys(out)
    part2_table()
    part3_probes(out, args.smoke)
    part4_neighbours(out, args.smoke)
    print(f"\nfigures written to {out} ({time.perf_counter() - t0:.1f} s, sparseconv {sparseconv.__version__})")


if __name__ == "__main__":
    main()
