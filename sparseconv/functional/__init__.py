"""Operations on sparse tensors, each differentiable through :mod:`sparseconv.autograd`.

``conv`` also holds the kernel-map-level convolution maths (raw arrays in, raw arrays out). The
functions here take a :class:`~sparseconv.SparseTensor` (they differentiate through its
``feats_tensor``) and return one on the right sites: the same sites for pointwise ops and submanifold
convolutions, the coarse sites for down convolutions and pooling, the fine sites for inverse ones.
"""
from .activation import dropout, gelu, leaky_relu, linear, relu, sigmoid
from .combine import add, cat
from .conv import (conv_with_map, depthwise_subm_conv3d, sparse_conv3d, sparse_inverse_conv3d,
                   subm_conv3d)
from .losses import bce_with_logits, cross_entropy, dice_score, soft_dice_loss, topk_bce_with_logits
from .norm import batch_norm, grn, layer_norm
from .pooling import avg_pool

__all__ = ["subm_conv3d", "depthwise_subm_conv3d", "sparse_conv3d", "sparse_inverse_conv3d",
           "conv_with_map", "linear", "layer_norm", "batch_norm", "grn", "gelu", "relu", "leaky_relu",
           "sigmoid", "dropout", "avg_pool", "add", "cat", "soft_dice_loss", "bce_with_logits",
           "topk_bce_with_logits", "cross_entropy", "dice_score"]
