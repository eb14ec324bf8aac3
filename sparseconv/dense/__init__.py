"""Dense twins of the sparse ops, in plain NumPy (channels-first, PyTorch layouts and semantics).

They are the test oracle (a sparse op must equal its dense twin read at the active voxels) and the
benchmark baseline (the same network run densely). Vectorised over voxels; each conv loops only
over its kernel taps. float32 and float64 are preserved.

    conv3d(x, w, bias=None, stride=1, padding=0, dilation=1)          w (Cout, Cin, kz, ky, kx)
    conv_transpose3d(x, w, bias=None, stride=1, padding=0, dilation=1, output_padding=0)
                                                                       w (Cin, Cout, kz, ky, kx)
    depthwise_conv3d(x, w, bias=None, padding=0, dilation=1)          w (C, kz, ky, kx)
    linear, layer_norm_channels, gelu, grn, avg_pool_k2s2             per-voxel / pooling ops
    *_backward(grad_out, <forward inputs>) → gradients of every array input (bias last)
"""
from .conv import (conv3d, conv3d_backward, conv_output_shape, conv_transpose3d,
                   conv_transpose3d_backward, depthwise_conv3d, depthwise_conv3d_backward)
from .pointwise import (avg_pool_k2s2, avg_pool_k2s2_backward, gelu, gelu_backward, grn,
                        grn_backward, layer_norm_channels, layer_norm_channels_backward, linear,
                        linear_backward)

__all__ = ["conv3d", "conv3d_backward", "conv_output_shape", "conv_transpose3d",
           "conv_transpose3d_backward", "depthwise_conv3d", "depthwise_conv3d_backward",
           "linear", "linear_backward", "layer_norm_channels", "layer_norm_channels_backward",
           "gelu", "gelu_backward", "grn", "grn_backward", "avg_pool_k2s2",
           "avg_pool_k2s2_backward"]
