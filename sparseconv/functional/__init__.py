"""Operations on sparse tensors. ``conv`` holds the kernel-map-level convolution maths."""
