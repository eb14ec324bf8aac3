"""Quick start: a random sparse volume, one submanifold convolution on every backend, checked
against the dense convolution of the same volume and timed.

    python examples/quickstart.py [--size 48] [--density 0.1] [--channels 16]
"""
import argparse
import time

import numpy as np

import sparseconv
from sparseconv import SparseTensor, dense
from sparseconv.functional.conv import conv_forward
from sparseconv.kmap import submanifold_map
from sparseconv.testing.conformance import dense_weight


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=48, help="grid side (default 48)")
    p.add_argument("--density", type=float, default=0.1, help="fraction of active voxels (default 0.1)")
    p.add_argument("--channels", type=int, default=16, help="input and output channels (default 16)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    shape = (args.size,) * 3
    coords = np.argwhere(rng.random((1, *shape)) < args.density).astype(np.int32)
    x = SparseTensor(coords, rng.standard_normal((len(coords), args.channels)).astype(np.float32), shape)
    weight = (rng.standard_normal((27, args.channels, args.channels)) / np.sqrt(27 * args.channels)).astype(np.float32)
    print(f"{len(x):,} active voxels of {np.prod(shape):,} ({len(x) / np.prod(shape):.1%}), "
          f"C={args.channels}, kernel 3x3x3")

    t0 = time.perf_counter()
    want = dense.conv3d(x.dense(), dense_weight(weight, 3), padding=1)
    t_dense = time.perf_counter() - t0
    b, z, y, xx = x.coords.T
    want = want[b, :, z, y, xx]
    print(f"{'backend':<12}{'kernel map (ms)':>17}{'conv (ms)':>12}{'max |sparse - dense|':>23}")
    for name in sparseconv.available_backends():
        if name == "cupy":
            continue
        with sparseconv.use_backend(name):
            warm = SparseTensor(x.coords, x.feats, shape)  # a fresh tensor has no cached kernel maps
            conv_forward(x.feats, weight, submanifold_map(warm, 3))  # warm-up (JIT compile)
            fresh = SparseTensor(x.coords, x.feats, shape)
            t0 = time.perf_counter()
            kmap = submanifold_map(fresh, 3)
            t1 = time.perf_counter()
            out = conv_forward(x.feats, weight, kmap)
            t2 = time.perf_counter()
        err = np.abs(out - want).max()
        print(f"{name:<12}{(t1 - t0) * 1e3:>17.1f}{(t2 - t1) * 1e3:>12.1f}{err:>23.2e}")
        assert err < 1e-4, f"{name} disagrees with the dense convolution"
    print(f"{'dense NumPy':<12}{'':>17}{t_dense * 1e3:>12.1f}{'(reference)':>23}")


if __name__ == "__main__":
    main()
