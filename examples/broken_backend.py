"""A backend of your own — and how ``python -m sparseconv.verify`` catches its bug.

This file is a complete sparseconv backend in a dozen lines: it inherits every kernel of the NumPy
reference and replaces one, ``depthwise_weight_grad``, with a version that has a deliberate,
realistic bug: it swaps the two row lists of each pair (``in_rows`` ↔ ``out_rows``). On a
submanifold map that typo does not crash and does not touch the forward pass or the input
gradient — the pair (i → j) at offset +d is the pair (j → i) at −d, so the swap just reads the
kernel mirrored (dW[k] comes out as dW[K−1−k]). The centre offset and every 1×1×1 kernel are still
right, so a model with this backend runs, its loss goes down for a while, and nothing looks wrong.
The conformance suite compares dW with the dense twin's and names the op at once::

    python -m sparseconv.verify --plugin examples/broken_backend.py --quick   # exit status 1, "depthwise"
    python examples/broken_backend.py                                         # the same, and explains

A plugin module only has to call :func:`sparseconv.register_backend` when it is imported (or define
a module-level ``backend``); ``verify`` then checks every backend the module registered. See
docs/backends.md for the kernel interface.
"""
from __future__ import annotations

import sys

import numpy as np

import sparseconv
from sparseconv.backends.reference import ReferenceBackend


class BrokenBackend(ReferenceBackend):
    """The reference, with a deliberate bug in the depthwise weight gradient."""

    name = "broken"

    def depthwise_weight_grad(self, feats, grad_out, kmap):
        grad_w = np.zeros((kmap.K, feats.shape[1]), dtype=feats.dtype)
        for k in range(kmap.K):
            in_rows, out_rows = kmap.pairs(k)
            # BUG (deliberate): should be feats[in_rows] * grad_out[out_rows].
            grad_w[k] = (feats[out_rows] * grad_out[in_rows]).sum(axis=0)
        return grad_w


backend = BrokenBackend()
sparseconv.register_backend(backend.name, backend)


def main(argv=None) -> int:
    import argparse

    from sparseconv import verify

    p = argparse.ArgumentParser(description="Run the conformance suite on the deliberately broken backend.")
    p.add_argument("--quick", "--smoke", action="store_true", help="the quick suite (a few seconds)")
    args = p.parse_args(argv)
    status = verify.main(["--backend", backend.name] + (["--quick"] if args.quick else []))
    if status == 1:
        print("\nAs intended: verify exits with status 1 and names the op whose dW is wrong (depthwise);"
              "\nforward and dX pass, which is why this bug would survive a training run.")
        return 0
    print(f"\nUnexpected: verify returned {status}; the deliberate bug was not caught.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
