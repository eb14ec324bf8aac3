"""Where arrays live: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy, on the current GPU).

The backend decides *how* an op runs; the device says *where its arrays are*. The two must agree:
the ``reference`` and ``numba`` backends read host arrays, the ``cupy`` backend device arrays
(it also accepts host arrays and copies them over). Moving data is explicit, as in PyTorch::

    x = x.to("cuda"); model.to("cuda"); sparseconv.set_backend("cupy")

Coordinates always stay on the host (``(N, 4) int32`` NumPy): kernel maps are built from them
once per level and the GPU backend uploads what its kernels need.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DEVICES", "normalize_device", "device_of", "to_host", "to_device", "check_backend_device",
           "use_device_backend"]

DEVICES = ("cpu", "cuda")


def normalize_device(device) -> str:
    """``"cpu"`` or ``"cuda"`` from ``"cpu"``, ``"cuda"``, ``"cuda:0"``, ``"gpu"``; else ``ValueError``."""
    name = str(device).strip().lower()
    if name == "gpu" or name == "cuda:0":
        name = "cuda"
    if name.startswith("cuda:"):
        raise ValueError(f"device {device!r}: only the current GPU is supported; select it with "
                         "cupy.cuda.Device(n).use() and pass 'cuda'")
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    return name


def device_of(array) -> str:
    """``"cuda"`` for a CuPy (or any ``__cuda_array_interface__``) array, else ``"cpu"``."""
    return "cuda" if hasattr(array, "__cuda_array_interface__") else "cpu"


def to_host(array) -> np.ndarray:
    """``array`` as a NumPy array: a CuPy array (anything with ``.get()``) is copied off the GPU,
    anything else goes through ``np.asarray`` (no copy for a NumPy array)."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _cupy():
    """CuPy, or one clear error saying why the GPU cannot be used here."""
    from .backends import load_backend
    try:
        load_backend("cupy")  # raises ImportError naming the reason (no CuPy, no usable GPU)
    except ImportError as err:
        raise RuntimeError(f"cannot move data to 'cuda': {err}") from err
    import cupy
    return cupy


def to_device(array, device):
    """``array`` on ``device`` (the same object when it is already there)."""
    device = normalize_device(device)
    if device_of(array) == device:
        return array
    if device == "cpu":
        return to_host(array)
    return _cupy().asarray(array)


def use_device_backend(device) -> str:
    """Make the selected backend one that runs on ``device``; returns the normalised device.

    ``"cuda"``: the CuPy backend, unless a device backend is selected already (``ImportError``
    naming the reason without CuPy or a GPU). ``"cpu"``: the selection is left as it is."""
    device = normalize_device(device)
    if device == "cuda":
        from .backends import get_backend, set_backend
        if get_backend().xp is np:
            set_backend("cupy")
    return device


def check_backend_device(array, backend, what: str = "features") -> None:
    """Refuse GPU arrays on a host backend with a message that says how to fix it."""
    if getattr(backend, "xp", np) is np and device_of(array) == "cuda":
        raise ValueError(f"{what} are on 'cuda' but the {backend.name!r} backend runs on the CPU: "
                         "call sparseconv.set_backend('cupy'), or move the data with .to('cpu')")
