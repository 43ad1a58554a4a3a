"""Export rules: each computes exactly what a backward op computes, with forward operators only
(a transposed convolution written as a convolution, pooling backwards as matrices, ...).
They are the decomposition table of the trace, so the artifact holds no backward op and runs
where no autograd exists."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch._decomp import decomposition_table as _torch_decompositions
from torch._ops import OpOverload

from gradvis_export.core.maps import (
    along_axes,
    constant,
    identity_rows,
    interpolation_matrices,
    ints,
    transposed,
)
from gradvis_export.rules.explanation import Rule

aten = torch.ops.aten


def _flipped_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A conv weight turned into the weight of its adjoint: in/out swapped per group, kernel flipped."""
    out_ch, in_per_group = weight.shape[0], weight.shape[1]
    kernel = list(weight.shape[2:])
    w = weight.reshape([groups, out_ch // groups, in_per_group, *kernel]).transpose(1, 2)
    w = w.reshape([groups * in_per_group, out_ch // groups, *kernel])
    return w.flip(list(range(2, 2 + len(kernel))))


def convolution_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: object,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
):
    """Input gradient of a convolution as a forward convolution.

    Stride 1: an ordinary convolution with the adjoint weight (onnxruntime's fast path);
    strided: a transposed convolution with the output padding that restores the input size.
    Weight and bias gradients are not needed by any explainer; the original op computes them
    (and the export guard reports it if that ever reaches an artifact).
    """
    if transposed:
        return NotImplemented
    stride, padding, dilation = ints(stride), ints(padding), ints(dilation)
    kernel = ints(weight.shape[2:])
    in_sizes = ints(input.shape[2:])
    out_sizes = ints(grad_output.shape[2:])
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        if all(s == 1 for s in stride):
            pads = [d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding)]
            # sizes the adjoint must restore: in = out + d(k-1) - 2p
            extra = [
                i - (o + d * (k - 1) - 2 * p)
                for i, o, d, k, p in zip(in_sizes, out_sizes, dilation, kernel, padding)
            ]
            grad = grad_output
            if any(p < 0 for p in pads) or any(e != 0 for e in extra):
                pad_arg: list[int] = []
                for p, e in reversed(list(zip(pads, extra))):
                    pad_arg += [p, p + e]
                grad = aten.constant_pad_nd.default(grad, pad_arg, 0.0)
                pads = [0] * len(pads)
            grad_input = aten.convolution.default(
                grad,
                _flipped_weight(weight, groups),
                None,
                [1] * len(kernel),
                pads,
                dilation,
                False,
                [0] * len(kernel),
                groups,
            )
        else:
            out_pad = [
                i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
                for i, o, s, p, d, k in zip(in_sizes, out_sizes, stride, padding, dilation, kernel)
            ]
            grad_input = aten.convolution.default(
                grad_output, weight, None, stride, padding, dilation, True, out_pad, groups
            )
    if output_mask[1]:
        grad_weight = aten.convolution_backward.default(
            grad_output,
            input,
            weight,
            bias_sizes,
            stride,
            padding,
            dilation,
            transposed,
            output_padding,
            groups,
            [False, True, False],
        )[1]
    if output_mask[2]:
        grad_bias = grad_output.sum([0, *range(2, grad_output.dim())])
    return grad_input, grad_weight, grad_bias


def _adaptive_matrices(in_sizes: Sequence[int], out_sizes: Sequence[int], dtype: torch.dtype):
    def build() -> list[torch.Tensor]:
        return [
            F.adaptive_avg_pool1d(identity_rows(i, dtype), o)[:, 0, :].t().contiguous()
            for i, o in zip(in_sizes, out_sizes)
        ]

    return constant(build)


def _avg_pool_matrices(
    in_sizes, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, dtype
):
    """Average pooling is separable per axis (its divisor is a product of per-axis counts)."""
    n = len(in_sizes)
    kernel = ints(kernel) * (n if len(kernel) == 1 else 1)
    stride = ints(stride or kernel) * (n if len(stride or kernel) == 1 else 1)
    padding = ints(padding) * (n if len(padding) == 1 else 1)

    def build() -> list[torch.Tensor]:
        mats = []
        for i, k, s, p in zip(in_sizes, kernel, stride, padding):
            m = F.avg_pool1d(identity_rows(i, dtype), k, s, p, ceil_mode, count_include_pad)
            m = m[:, 0, :].t().contiguous()
            if divisor_override:
                m = (m > 0).to(dtype)
            mats.append(m)
        if divisor_override:
            mats[0] = mats[0] / float(divisor_override)
        return mats

    return constant(build)


def _avg_pool_backward(
    grad, self, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    spatial = len(kernel) if len(kernel) > 1 else self.dim() - 2
    in_sizes = ints(self.shape[-spatial:])
    mats = _avg_pool_matrices(
        in_sizes,
        kernel,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        grad.dtype,
    )
    return along_axes(grad, transposed(mats))


def _adaptive_avg_pool_backward(grad, self):
    spatial = grad.dim() - 2
    in_sizes = ints(self.shape[-spatial:])
    out_sizes = ints(grad.shape[-spatial:])
    return along_axes(grad, transposed(_adaptive_matrices(in_sizes, out_sizes, grad.dtype)))


def _adaptive_avg_pool(x, output_size):
    out_sizes = ints(output_size)
    if all(o == 1 for o in out_sizes):
        return x.mean(list(range(2, x.dim())), keepdim=True)
    in_sizes = ints(x.shape[-len(out_sizes) :])
    return along_axes(x, _adaptive_matrices(in_sizes, out_sizes, x.dtype))


def _upsample_linear_backward(grad, output_size, input_size, align_corners, *scales):
    spatial = len(output_size)
    scales = list(scales) + [None] * (spatial - len(scales))

    def one_d(rows, size, scale):
        return aten.upsample_linear1d.default(rows, size, align_corners, scale)

    mats = interpolation_matrices(
        ints(input_size[2:]), ints(output_size), scales, one_d, grad.dtype
    )
    return along_axes(grad, transposed(mats))


def _upsample_nearest_backward(grad, output_size, input_size, *scales):
    spatial = len(output_size)
    scales = list(scales) + [None] * (spatial - len(scales))

    def one_d(rows, size, scale):
        return aten.upsample_nearest1d.default(rows, size, scale)

    mats = interpolation_matrices(
        ints(input_size[2:]), ints(output_size), scales, one_d, grad.dtype
    )
    return along_axes(grad, transposed(mats))


def _max_pool_backward(grad, self, kernel, stride, padding, dilation, ceil_mode, indices):
    """Max-pool backward as a scatter-add of the gradient to the argmax positions."""
    flat_in = math.prod(ints(self.shape[2:]))
    zeros = aten.new_zeros.default(grad, [*self.shape[:2], flat_in])
    out = aten.scatter_add.default(zeros, 2, indices.flatten(2), grad.flatten(2))
    return out.reshape(self.shape)


def _adaptive_max_pool_backward(grad, self, indices):
    return _max_pool_backward(grad, self, None, None, None, None, None, indices)


def _replication_pad_backward(grad, self, padding):
    """Replication padding is separable and linear: per-axis matrices, transposed."""
    spatial = len(padding) // 2
    in_sizes = ints(self.shape[-spatial:])
    pads = list(reversed([ints(padding[2 * i : 2 * i + 2]) for i in range(spatial)]))

    def build() -> list[torch.Tensor]:
        return [
            F.pad(identity_rows(i, grad.dtype), p, mode="replicate")[:, 0, :].t().contiguous()
            for i, p in zip(in_sizes, pads)
        ]

    return along_axes(grad, transposed(constant(build)))


def _threshold_backward(grad, self, threshold):
    """ReLU backward as grad x mask: onnxruntime runs Mul far faster than Where with a scalar."""
    return grad * aten.gt.Scalar(self, threshold).to(grad.dtype)


def _backward_decompositions() -> dict[OpOverload, Rule]:
    """PyTorch's own forward-only decompositions of backward ops (BatchNorm, ReLU, softmax...)."""
    return {
        op: fn
        for op, fn in _torch_decompositions.items()
        if isinstance(op, OpOverload) and "backward" in op.name()
    }


@functools.cache
def export_rules() -> Mapping[OpOverload, Rule]:
    """The decomposition table used while tracing for export: backward ops -> forward ops."""
    rules = _backward_decompositions()
    rules.update(
        {
            aten.convolution_backward.default: convolution_backward,
            aten.threshold_backward.default: _threshold_backward,
            aten.avg_pool2d_backward.default: _avg_pool_backward,
            aten.avg_pool3d_backward.default: _avg_pool_backward,
            aten._adaptive_avg_pool2d_backward.default: _adaptive_avg_pool_backward,
            aten._adaptive_avg_pool3d_backward.default: _adaptive_avg_pool_backward,
            aten._adaptive_avg_pool2d.default: _adaptive_avg_pool,
            aten._adaptive_avg_pool3d.default: _adaptive_avg_pool,
            aten.max_pool2d_with_indices_backward.default: _max_pool_backward,
            aten.max_pool3d_with_indices_backward.default: _max_pool_backward,
            aten.adaptive_max_pool2d_backward.default: _adaptive_max_pool_backward,
            aten.adaptive_max_pool3d_backward.default: _adaptive_max_pool_backward,
            aten.replication_pad1d_backward.default: _replication_pad_backward,
            aten.replication_pad2d_backward.default: _replication_pad_backward,
            aten.replication_pad3d_backward.default: _replication_pad_backward,
            aten.upsample_bilinear2d_backward.default: _upsample_linear_backward,
            aten.upsample_trilinear3d_backward.default: _upsample_linear_backward,
            aten.upsample_linear1d_backward.default: _upsample_linear_backward,
            aten.upsample_nearest2d_backward.default: _upsample_nearest_backward,
            aten.upsample_nearest3d_backward.default: _upsample_nearest_backward,
            aten.upsample_nearest1d_backward.default: _upsample_nearest_backward,
        }
    )
    return rules
