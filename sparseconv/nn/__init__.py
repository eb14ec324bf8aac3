"""Layers and containers: ``Module``, ``Parameter``, sparse convolutions, norms, activations.

Names and arguments follow spconv / PyTorch (``SubMConv3d(in_channels, out_channels, kernel_size,
stride, padding, dilation, bias)``), so ported code reads the same.
"""
from .layers import (GELU, GRN, AvgPool, BatchNorm, BatchNorm1d, DepthwiseSubMConv3d, Dropout, Identity,
                     LayerNorm, LeakyReLU, Linear, ReLU, Sigmoid, SparseAvgPool3d, SparseConv3d,
                     SparseInverseConv3d, SubMConv3d)
from .checkpoint import load_checkpoint, save_checkpoint
from .unet import ConvNeXtV2Block, SparseUNet
from .module import Module, ModuleList, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "SubMConv3d", "DepthwiseSubMConv3d",
           "SparseConv3d", "SparseInverseConv3d", "Linear", "LayerNorm", "BatchNorm", "BatchNorm1d", "GRN",
           "GELU", "ReLU", "LeakyReLU", "Sigmoid", "AvgPool", "SparseAvgPool3d", "Dropout", "Identity",
           "save_checkpoint", "load_checkpoint", "ConvNeXtV2Block", "SparseUNet"]
