"""Shared pytest setup: a seeded hypothesis profile and the list of CPU backends to test."""
import os

import pytest
from hypothesis import HealthCheck, settings

import sparseconv

SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
# CI runs a fixed, derandomised sample; SPARSECONV_SLOW=1 runs many more examples.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=30,
                          suppress_health_check=SUPPRESS)
settings.register_profile("slow", derandomize=False, deadline=None, max_examples=500,
                          suppress_health_check=SUPPRESS)
settings.load_profile("slow" if os.environ.get("SPARSECONV_SLOW") else "ci")

CPU_BACKENDS = [name for name in sparseconv.available_backends() if name != "cupy"]


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    """Run the test body once per backend available on this machine."""
    with sparseconv.use_backend(request.param) as be:
        yield be


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SPARSECONV_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: set SPARSECONV_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
