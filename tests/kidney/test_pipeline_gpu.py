"""The two-stage segmenter on the GPU (``Segmenter(device="cuda")``): the labels of the CPU run.

Marked ``gpu``: skipped where CuPy or a CUDA GPU is missing (``tests/test_gpu.py`` holds the kernel
checks; this is the whole pipeline, shipped weights, host and device arrays mixed as in ``kidney
segment --device cuda``).
"""
from __future__ import annotations

import numpy as np
import pytest

import sparseconv
from sparseconv.functional.activation import sigmoid_array

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy_backend():
    try:
        from sparseconv.backends import cupy_gpu  # noqa: F401 - raises ImportError without CuPy or a GPU
    except ImportError as err:
        pytest.skip(f"no GPU backend here: {err}")
    before = sparseconv.get_backend().name
    yield
    sparseconv.set_backend(before)  # Segmenter(device="cuda") selects the CuPy backend


def test_sigmoid_of_a_host_array_stays_on_the_host(cupy_backend):
    sparseconv.set_backend("cupy")
    x = np.array([-80.0, -1.0, 0.0, 2.0, 90.0], np.float32)
    y = sigmoid_array(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, 1.0 / (1.0 + np.exp(-x.astype(np.float64))), rtol=1e-6)


def test_segmenter_on_the_gpu_gives_the_cpu_labels(cupy_backend, tiny_phantom):
    from kidney.pipeline import Segmenter

    ph = tiny_phantom
    with sparseconv.use_backend("numba"):
        cpu = Segmenter().segment(ph.image, ph.spacing)
    gpu = Segmenter(device="cuda").segment(ph.image, ph.spacing)
    assert isinstance(gpu, np.ndarray) and gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    assert (cpu > 0).sum() > 0, "the shipped weights find no kidney on the tiny phantom"
    # Float32 sums in another order (GPU tiles, FMA contraction) may move a probability across the
    # threshold at a handful of voxels; nothing more.
    assert (gpu != cpu).mean() < 1e-4, f"{int((gpu != cpu).sum())} of {gpu.size} labels differ"


def test_training_steps_on_the_gpu_follow_the_cpu(cupy_backend, tmp_path):
    """Three optimiser steps of a tiny stage-1 network on the GPU: the losses follow the CPU run's
    (float32 sums in another order), the same seed repeats its bits on the GPU, and the weights
    come back to the host."""
    from kidney import phantom
    from kidney.train import Trainer, TrainConfig, load_samples

    data = tmp_path / "data"
    phantom.write_dataset(data, 2, seed=11, preset="tiny")
    cfg = TrainConfig(stage=1, model="tiny", spacing=8.0, steps=3, accumulate=1, lr=1e-3, warmup_steps=1,
                      checkpoint_every=3, seed=5)
    samples = load_samples(data, cfg)
    with sparseconv.use_backend("numba"):
        cpu = Trainer(cfg, samples, tmp_path / "cpu", progress=False).run()
    gpu = [Trainer(cfg, samples, tmp_path / f"gpu{i}", progress=False, device="cuda").run() for i in range(2)]
    losses = [[h["loss"] for h in t.history] for t in (cpu, *gpu)]
    assert np.allclose(losses[1], losses[0], rtol=1e-3), losses
    assert losses[1] == losses[2], "the same seed on the same GPU must repeat its losses"
    for (name, a), (_, b) in zip(gpu[0].model.state_dict().items(), gpu[1].model.state_dict().items()):
        assert isinstance(a, np.ndarray) and np.array_equal(a, b), name
