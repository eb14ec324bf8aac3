"""sparseconv: submanifold sparse convolutional networks without PyTorch.

Start with :class:`SparseTensor`, build kernel maps with :mod:`sparseconv.kmap`, run convolutions
from :mod:`sparseconv.functional`. Pick a backend with :func:`set_backend`.
"""
from .backends import available_backends, get_backend, register_backend, set_backend, use_backend
from .tensor import SparseTensor
from .autograd import Tensor, no_grad
from .init import manual_seed

__version__ = "0.1.0"
__all__ = ["SparseTensor", "set_backend", "get_backend", "use_backend", "register_backend",
           "available_backends",
           "Tensor", "no_grad", "manual_seed"]
