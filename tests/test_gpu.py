"""The CUDA backend on a real GPU: what only a device can show (device arrays in and out, sizes too big
for the emulation, a model moved to the GPU) and the reduction knobs shrunk so the suite's cases take
the multi-chunk paths.

The conformance suite itself runs on CuPy through the ``backend`` fixture (tests/conftest.py), which
has a ``cupy`` parameter wherever CuPy and a GPU are usable. Marked ``gpu``; skipped with the reason
when CuPy or a CUDA GPU is missing. ``benchmarks/gpu_check.py`` runs the suite too, then times the kernels.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import sparseconv
from sparseconv.backends.reference import backend as REF
from sparseconv.testing import kernel_checks as checks
from sparseconv.testing import suite
from sparseconv.testing.compare import assert_close

pytestmark = pytest.mark.gpu


def _load():
    if os.environ.get("SPARSECONV_FAKE_CUPY") == "1":  # dry run of this file on a CPU (fake_cupy.py)
        from sparseconv.backends.cuda_emulation import fake_cupy
        fake_cupy.install()
    try:
        from sparseconv.backends import cupy_gpu
    except ImportError as err:
        pytest.skip(f"no GPU backend here: {err}")
    return cupy_gpu


@pytest.fixture(scope="module")
def gpu():
    return _load().backend


@pytest.fixture(scope="module")
def gpu_small_chunks():
    be = _load().CupyBackend()
    be.WGRAD_TARGET_BLOCKS = 64
    be.WGRAD_MIN_CHUNK_ROWS = 16
    be.DW_WGRAD_TARGET_THREADS = 4096
    be.DW_WGRAD_MIN_CHUNK_ROWS = 5
    be.SEGMENT_CHUNK_ROWS = 7
    be.MAX_BLOCKS_1D = 3
    return be


SMALL = [c for c in suite.cases() if c.name.startswith(("conv_b2_odd", "depthwise_b2_odd", "segment_sum"))]


@pytest.mark.parametrize("case", SMALL, ids=[c.name for c in SMALL])
def test_kernel_matches_reference_small_chunks(gpu_small_chunks, case):
    result = suite.run_case(gpu_small_chunks, case)
    assert result.passed, result.problems


def test_device_arrays_in_device_arrays_out(gpu):
    import cupy

    x, maps = checks.sites_and_maps(0, "b2_odd")
    kmap = maps["subm_k3_d1"]
    rng = np.random.default_rng(0)
    f = rng.standard_normal((kmap.n_in, 8)).astype(np.float32)
    w = rng.standard_normal((27, 8, 16)).astype(np.float32)
    out = gpu.conv_forward(cupy.asarray(f), cupy.asarray(w), kmap)
    assert isinstance(out, cupy.ndarray)
    assert_close(out, REF.conv_forward(f, w, kmap), "conv_forward with CuPy inputs")
    index = gpu.build_index(cupy.asarray(x.keys))
    assert isinstance(gpu.lookup(index, cupy.asarray(x.keys)), cupy.ndarray)


def test_selected_by_name(gpu):
    assert sparseconv.backends.load_backend("cupy") is gpu
    assert "cupy" in sparseconv.available_backends()
    with sparseconv.use_backend("cupy") as be:
        assert be.xp.__name__ == "cupy"


def test_large_rows_and_channels(gpu):
    """A case too big for the emulation: 40k rows, 3 tiles of channels, many weight-grad chunks."""
    rng = np.random.default_rng(1)
    x = checks.random_sites(2, shape=(40, 40, 40), batch=1, density=0.6)
    with sparseconv.use_backend("reference"):
        from sparseconv import kmap as KM
        kmap = KM.submanifold_map(x, 3)
    f = rng.standard_normal((len(x), 70)).astype(np.float32)
    w = rng.standard_normal((27, 70, 80)).astype(np.float32)
    g = rng.standard_normal((len(x), 80)).astype(np.float32)
    assert_close(gpu.conv_forward(f, w, kmap), REF.conv_forward(f, w, kmap), "conv_forward 40k")
    assert_close(gpu.conv_weight_grad(f, g, kmap), REF.conv_weight_grad(f, g, kmap), "conv wgrad 40k")


def test_model_and_tensor_move_to_the_gpu_and_back(gpu):
    """``model.to("cuda")`` + ``x.to("cuda")`` + the cupy backend = the CPU result; gradients come home."""
    from sparseconv import Tensor, nn
    from sparseconv.nn.unet import SparseUNet

    rng = np.random.default_rng(3)
    x = checks.random_sites(4, shape=(12, 13, 11), batch=2, density=0.3)
    feats = rng.standard_normal((len(x), 2)).astype(np.float32)
    sparseconv.manual_seed(0)
    with sparseconv.use_backend("numba"):  # parameters are made on the host
        net = nn.Sequential(nn.SubMConv3d(2, 8, 3), SparseUNet(8, 3, dims=(8, 16), depths=(1, 1)))

    def run(device, backend):
        leaf = Tensor(feats.copy(), requires_grad=True)
        net.to(device)
        with sparseconv.use_backend(backend):
            xin = x.replace_feats(leaf).to(device)
            out = net(xin)
            loss = (out.feats_tensor * out.feats_tensor).sum()
            loss.backward()
        return out.to("cpu").feats, leaf.grad, {k: p.grad for k, p in net.named_parameters()}

    out_cpu, g_cpu, pg_cpu = run("cpu", "numba")
    net.zero_grad()
    out_gpu, g_gpu, pg_gpu = run("cuda", "cupy")
    assert net.to("cpu").state_dict().keys() == pg_cpu.keys()
    assert_close(out_gpu, out_cpu, "network forward on the GPU")
    assert isinstance(g_gpu, np.ndarray), "the input gradient must come back to the host leaf"
    assert_close(g_gpu, g_cpu, "input gradient through Tensor.to")
    for k in pg_cpu:
        assert_close(pg_gpu[k], pg_cpu[k], f"parameter gradient {k}")
