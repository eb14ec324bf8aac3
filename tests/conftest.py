"""Shared pytest setup: a seeded hypothesis profile and the backends every backend test runs on."""
import functools
import os

import pytest
from hypothesis import HealthCheck, settings

import sparseconv

if os.environ.get("SPARSECONV_FAKE_CUPY") == "1":  # dry run of the GPU tests on a CPU (fake_cupy.py)
    from sparseconv.backends.cuda_emulation import fake_cupy
    fake_cupy.install()

SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
# CI runs a fixed, derandomised sample; SPARSECONV_SLOW=1 runs many more examples.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=30,
                          suppress_health_check=SUPPRESS)
settings.register_profile("slow", derandomize=False, deadline=None, max_examples=500,
                          suppress_health_check=SUPPRESS)
settings.load_profile("slow" if os.environ.get("SPARSECONV_SLOW") else "ci")

EMULATED = "cuda-emu"  # the CUDA backend's kernels and host code, run by the CPU emulation
# The shipped backends, each a parameter everywhere (skipped, with the reason, where it cannot run),
# then any other backend that loads here, such as one a -p plugin registered.
SHIPPED = ["reference", "numba", EMULATED, "cupy"]
BACKENDS = SHIPPED + [name for name in sparseconv.available_backends() if name not in SHIPPED]


@functools.lru_cache(maxsize=None)
def emulated_backend():
    """One emulated CUDA backend for the whole run (its library is built once, then cached on disk)."""
    from sparseconv.backends.cuda_emulation import EmulatedCudaBackend, find_compiler
    if find_compiler() is None:
        pytest.skip("no C++ compiler (g++/c++/clang++) on PATH: cannot build the CUDA emulation")
    return EmulatedCudaBackend()


def _load(name):
    if name == EMULATED:
        return emulated_backend()
    try:
        return sparseconv.backends.load_backend(name)
    except ImportError as err:
        pytest.skip(str(err))


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.gpu) if n == "cupy" else n for n in BACKENDS])
def backend(request):
    """Run the test body once per backend: the same tests, the same number of them, on each."""
    with sparseconv.use_backend(_load(request.param)) as be:
        yield be


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SPARSECONV_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: set SPARSECONV_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def registry():
    """Whatever a test registers with :func:`sparseconv.register_backend` is unregistered afterwards."""
    from sparseconv import backends

    before = dict(backends._registered)
    yield
    backends._registered.clear()
    backends._registered.update(before)
