"""A faster CPU backward for depthwise Conv3d, so X3D trains on two cores in minutes.

PyTorch's CPU backward of a depthwise (groups == channels) Conv3d is 5-10x slower than its
forward: training the shipped X3D-XS spends three quarters of each step there.  Both of its
gradients are again depthwise convolutions, which run at forward speed:

    grad_input   = conv3d(zero-inserted, padded grad_output, flipped weight, groups=C)
    grad_weight  = conv3d(padded input as one sample of N*C channels, grad_output as N*C
                   kernels, dilation=stride, groups=N*C), summed over the batch

`fast_depthwise(model)` routes a model's depthwise Conv3d layers through it while training;
the weights, the forward values and the gradients are the same (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class DepthwiseConv3d(torch.autograd.Function):
    """conv3d(x, weight, None, stride, padding, groups=channels) with the backward above."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):  # noqa: D102
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv3d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        n, c = x.shape[:2]
        kernel, out = weight.shape[2:], grad.shape[2:]
        padded = [x.shape[2 + d] + 2 * padding[d] for d in range(3)]
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            spread = grad
            if any(s > 1 for s in stride):  # put grad_output back on the input's grid
                size = [(out[d] - 1) * stride[d] + 1 for d in range(3)]
                spread = grad.new_zeros(n, c, *size)
                spread[:, :, :: stride[0], :: stride[1], :: stride[2]] = grad
            # a full correlation with the flipped kernel, cut to the input (negative pads cut)
            left = [kernel[d] - 1 - padding[d] for d in range(3)]
            right = [left[d] + padded[d] - (out[d] - 1) * stride[d] - kernel[d] for d in range(3)]
            flipped = weight.flip(2, 3, 4)
            # itself a depthwise convolution: through this class, a second derivative (of a
            # loss on gradients, create_graph=True) takes the fast path too
            if left == right and min(left) >= 0:
                grad_x = DepthwiseConv3d.apply(spread, flipped, (1, 1, 1), tuple(left))
            else:
                pad = [p for d in (2, 1, 0) for p in (left[d], right[d])]
                grad_x = DepthwiseConv3d.apply(F.pad(spread, pad), flipped, (1, 1, 1), (0, 0, 0))
        if ctx.needs_input_grad[1]:
            pad = [p for d in (2, 1, 0) for p in (padding[d], padding[d])]
            xp = F.pad(x, pad).reshape(1, n * c, *padded)
            taps = F.conv3d(xp, grad.reshape(n * c, 1, *out), None, 1, 0, stride, n * c)
            taps = taps[:, :, : kernel[0], : kernel[1], : kernel[2]]
            grad_w = taps.reshape(n, c, 1, *kernel).sum(0)
        return grad_x, grad_w, None, None


def is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv3d)
        and module.groups == module.in_channels == module.out_channels
        and module.padding_mode == "zeros"
        and module.dilation == (1, 1, 1)
        and isinstance(module.padding, tuple)
    )


def _forward(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    y = DepthwiseConv3d.apply(x, self.weight, tuple(self.stride), tuple(self.padding))
    return y if self.bias is None else y + self.bias.view(1, -1, 1, 1, 1)


@contextmanager
def fast_depthwise(model: nn.Module) -> Iterator[int]:
    """Within the block, `model`'s depthwise Conv3d layers use DepthwiseConv3d (yields how
    many); afterwards they are plain nn.Conv3d again (nothing of this is saved or exported)."""
    layers = [m for m in model.modules() if is_depthwise(m)]
    for layer in layers:
        layer.forward = _forward.__get__(layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward
