"""A whole training step of a kidney network gives the same bits on 1 and 2 threads (Numba's and
OpenBLAS's, set together as ``benchmarks/bench_train.py`` sets them).

The kernel-level check (``python -m sparseconv.verify``, tests/test_verify.py) compares every kernel
call at 1 and N threads; this one runs the network as the trainer does — forward, the deep-supervised
loss, backward, AdamW — and compares the outputs, the loss, every parameter's gradient and the
updated weights. It runs in a subprocess with ``NUMBA_NUM_THREADS=2`` and ``OPENBLAS_NUM_THREADS=1``,
whatever this run has (OpenBLAS is raised to 2 at run time), and with every kernel forced parallel
(``parallel_min_work = 0``), so small inputs reach the threaded code. A third step runs without the
backend's optional ``add``, ``column_sum``, ``conv_forward_bias`` and ``depthwise_forward_bias`` kernels (NumPy's expressions
instead: ``a + b``, ``x.sum(axis=0)``, ``out += bias``): they promise NumPy's bits, so it must equal
the others.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import sys
import numba
import numpy as np
from kidney.model import KidneyNet
from kidney.train import TrainConfig, loss_and_dice
from sparseconv import SparseTensor
from sparseconv.backends.numba_cpu import backend as nb
from sparseconv.optim import AdamW, param_groups
from sparseconv.testing.threads import control_for

nb.parallel_min_work = 0  # every kernel on the threads, however small its input
rng = np.random.default_rng(3)
shape = (20, 26, 23)  # odd sizes: partial windows at the down convs' borders
coords = np.argwhere(rng.random((2,) + shape) < 0.25).astype(np.int32)  # two samples: GRN per sample
feats = rng.standard_normal((len(coords), 1)).astype(np.float32)
u = rng.random(len(coords))
targets = np.stack([u < 0.3, u < 0.1, u < 0.05], axis=1).astype(np.float32)


pools = control_for(nb)  # Numba's and, where NumPy runs on one, OpenBLAS's
assert "Numba" in {p.name for p in pools.pools}, pools.describe()


def step():
    c = TrainConfig()
    model = KidneyNet("compact", seed=0)  # channels up to 64: the BLAS-blocked conv kernels run too
    model.train()
    opt = AdamW(param_groups(model, c.weight_decay), lr=c.lr, betas=c.betas, eps=c.eps)
    outs = []
    loss, _ = loss_and_dice(lambda x: outs.extend(model(x)) or outs, SparseTensor(coords, feats, shape),
                            targets, c.ds_weights, "dice+bce")
    loss.backward()
    record = {f"output {i}": o.feats for i, o in enumerate(outs)}
    record["loss"] = np.asarray(loss.data)
    params = dict(model.named_parameters())
    assert all(p.grad is not None for p in params.values()), "a parameter got no gradient"
    record.update({f"grad {name}": p.grad for name, p in params.items()})
    opt.step()
    record.update({f"updated {name}": p.data for name, p in model.named_parameters()})
    return record


OPTIONAL = ("add", "column_sum", "conv_forward_bias", "depthwise_forward_bias")


class WithoutOptional:  # the Numba backend without those optional kernels (NumPy's expressions then)

    def __getattr__(self, name):
        if name in OPTIONAL:
            raise AttributeError(name)
        return getattr(nb, name)


for n, path in ((1, sys.argv[1]), (2, sys.argv[2])):
    with pools.threads(n):  # Numba's and OpenBLAS's thread counts together
        np.savez(path, **step())
from sparseconv import use_backend
assert all(hasattr(nb, k) and not hasattr(WithoutOptional(), k) for k in OPTIONAL)
with pools.threads(2), use_backend(WithoutOptional()):
    np.savez(sys.argv[3], **step())
"""


def test_training_step_same_bits_on_1_and_2_threads(tmp_path):
    pytest.importorskip("numba")
    one, two, plain = tmp_path / "one.npz", tmp_path / "two.npz", tmp_path / "plain.npz"
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(one), str(two), str(plain)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = np.load(one), np.load(two)
    assert a.files == b.files
    names = a.files
    from kidney.model import KidneyNet
    assert sum(n.startswith("grad ") for n in names) == len(dict(KidneyNet("compact").named_parameters())) > 100
    differ = [n for n in names if a[n].dtype != b[n].dtype or a[n].tobytes() != b[n].tobytes()]
    assert not differ, f"{len(differ)} of {len(names)} arrays differ between 1 and 2 threads: {differ[:8]}"
    assert all(np.isfinite(a[n]).all() for n in names) and a["loss"] > 0
    c = np.load(plain)
    differ = [n for n in names if a[n].tobytes() != c[n].tobytes()]
    assert c.files == names and not differ, f"without the optional kernels: {differ[:8]} differ"

