"""Moving data between devices: ``SparseTensor.to``, ``Tensor.to``, ``Module.to``, and the guard that
refuses GPU arrays on a CPU backend. The GPU round trips are in ``tests/test_gpu.py`` (marked ``gpu``)."""
from __future__ import annotations

import numpy as np
import pytest

import sparseconv
from sparseconv import SparseTensor, Tensor, nn
from sparseconv.backends import load_backend
from sparseconv.device import (check_backend_device, device_of, normalize_device, to_device, to_host,
                               use_device_backend)


def _has_gpu() -> bool:
    try:
        load_backend("cupy")
        return True
    except ImportError:
        return False


def _tensor(requires_grad=False):
    coords = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [0, 2, 2, 2]], np.int32)
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    return SparseTensor(coords, Tensor(feats, requires_grad=True) if requires_grad else feats, (4, 4, 4))


class FakeDeviceArray:
    """Something that says it lives on a GPU (the guard must not need CuPy to recognise it)."""

    __cuda_array_interface__ = {"shape": (3, 2), "typestr": "<f4", "data": (0, False), "version": 3}
    ndim, shape, dtype = 2, (3, 2), np.dtype(np.float32)


@pytest.mark.parametrize("name,expected", [("cpu", "cpu"), ("CUDA", "cuda"), ("cuda:0", "cuda"), ("gpu", "cuda")])
def test_device_names(name, expected):
    assert normalize_device(name) == expected


@pytest.mark.parametrize("bad", ["tpu", "cuda:1", ""])
def test_unknown_device_is_refused(bad):
    with pytest.raises(ValueError, match="device"):
        normalize_device(bad)


def test_to_same_device_is_identity():
    x = _tensor()
    assert x.device == "cpu" and x.to("cpu") is x
    a = np.ones(3)
    assert to_device(a, "cpu") is a and device_of(a) == "cpu"
    t = Tensor(a, requires_grad=True)
    assert t.device == "cpu" and t.to("cpu") is t


class FakeCupyArray:
    """A device array as CuPy shapes it: ``.get()`` copies it to the host."""

    __cuda_array_interface__ = FakeDeviceArray.__cuda_array_interface__

    def __init__(self, host):
        self.host = host

    def get(self):
        return self.host.copy()


def test_to_host_gives_numpy_for_host_device_and_autograd_arrays():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert to_host(a) is a  # no copy on the host
    for value in (FakeCupyArray(a), Tensor(a), a.tolist()):
        got = to_host(value)
        assert type(got) is np.ndarray and np.array_equal(got, a)
    assert to_host(FakeCupyArray(a)) is not a and to_device(FakeCupyArray(a), "cpu").dtype == np.float32


@pytest.mark.skipif(_has_gpu(), reason="a GPU backend is usable here; the error path cannot be reached")
def test_to_cuda_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="cannot move data to 'cuda'.*(CuPy|GPU)"):
        _tensor().to("cuda")
    with pytest.raises(RuntimeError, match="cannot move data to 'cuda'"):
        nn.SubMConv3d(2, 2, 3).to("cuda")


def test_use_device_backend_selects_a_backend_that_runs_there():
    before = sparseconv.get_backend()
    assert use_device_backend("CPU") == "cpu" and sparseconv.get_backend() is before
    with pytest.raises(ValueError, match="unknown device"):
        use_device_backend("tpu")
    if not _has_gpu():
        with pytest.raises(ImportError, match="CuPy|GPU"):
            use_device_backend("cuda")
        assert sparseconv.get_backend() is before
        return
    try:
        assert use_device_backend("gpu") == "cuda" and sparseconv.get_backend().name == "cupy"
        assert use_device_backend("cuda") == "cuda" and sparseconv.get_backend().name == "cupy"
    finally:
        sparseconv.set_backend(before.name)


def test_module_to_cpu_keeps_values_and_drops_grads():
    layer = nn.SubMConv3d(2, 3, 3)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    layer.weight.grad = np.ones_like(layer.weight.data)
    assert layer.to("cpu") is layer
    assert layer.weight.grad is None
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_gpu_arrays_on_a_cpu_backend_get_a_clear_error():
    for name in ("reference", "numba"):
        with pytest.raises(ValueError, match=f"on 'cuda' but the '{name}' backend runs on the CPU"):
            check_backend_device(FakeDeviceArray(), load_backend(name), "features")
    check_backend_device(np.zeros((3, 2)), load_backend("numba"))  # host arrays pass


def test_conv_refuses_gpu_features_on_cpu_backend():
    x = _tensor()
    layer = nn.SubMConv3d(2, 2, 3)
    fake = SparseTensor._trusted(x.coords, FakeDeviceArray(), x.spatial_shape, 1, (1, 1, 1))
    with sparseconv.use_backend("numba"), pytest.raises(ValueError, match="conv: features are on 'cuda'"):
        layer(fake)
