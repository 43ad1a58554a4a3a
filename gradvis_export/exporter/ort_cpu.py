"""The onnxruntime-CPU export profile: graph rewrites that pay off on onnxruntime's CPU provider.

* `split_depthwise_conv3d`: a depthwise Conv3d (X3D's 3x3x3 convolutions, one filter per
  channel) runs on onnxruntime's CPU provider as one small GEMM per channel, ~7 ms per call
  whatever the size once the frames are small (X3D-S's last stages: 216 channels at 10x10,
  432 at 5x5, 13 frames).  The same convolution as kt depthwise *2-D* convolutions over the
  frames (one per temporal tap, shifted and summed) takes MLAS's depthwise kernel: measured
  here 7.5 -> 1.3 ms (10x10) and 7.4 -> 0.8 ms (5x5), 7.3 -> 6.1 ms at 20x20, but 13.6 -> 22 ms
  at 40x40 -- so only frames of at most MAX_PIXELS pixels are split.  torch's own kernels
  (TorchScript, AOTInductor) and GPU engines run the 3-D form fast, hence a profile and not
  the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

#: frames of at most this many pixels (H * W at the convolution's input) are split
MAX_PIXELS = 32 * 32


def depthwise_conv3d_by_frames(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
) -> torch.Tensor:
    """conv3d(x, weight, bias, stride, padding, groups=C) for weight (C, 1, kt, kh, kw), as kt
    depthwise conv2d over the frames: out[t] = sum_a conv2d(x[t * st + a], weight[:, :, a])."""
    channels, kt = weight.shape[0], weight.shape[2]
    (st, sh, sw), (pt, ph, pw) = stride, padding
    if pt:
        x = F.pad(x, (0, 0, 0, 0, pt, pt))
    frames_in, height, width = x.shape[2], x.shape[3], x.shape[4]
    frames_out = (frames_in - kt) // st + 1
    by_frame = x.transpose(1, 2).contiguous()  # (B, T, C, H, W)
    out = None
    for a in range(kt):
        taps = by_frame[:, a : a + st * (frames_out - 1) + 1 : st]
        y = F.conv2d(
            taps.reshape(-1, channels, height, width),
            weight[:, :, a],
            None,
            (sh, sw),
            (ph, pw),
            1,
            channels,
        )
        y = y.reshape(-1, frames_out, channels, y.shape[2], y.shape[3])
        out = y if out is None else out + y
    out = out.transpose(1, 2)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    return out.contiguous()  # the graph's later views expect conv3d's contiguous layout


def _splittable(node: fx.Node) -> bool:
    """A 3-D depthwise convolution (no dilation, not transposed) on small frames."""
    if node.op != "call_function" or node.target is not torch.ops.aten.convolution.default:
        return False
    x, weight = node.args[0], node.args[1]
    stride, padding, dilation, transposed, _, groups = node.args[3:9]
    x_val = x.meta.get("val") if isinstance(x, fx.Node) else None
    w_val = weight.meta.get("val") if isinstance(weight, fx.Node) else None
    if x_val is None or w_val is None or x_val.dim() != 5 or transposed:
        return False
    if list(dilation) != [1, 1, 1] or w_val.shape[1] != 1:
        return False
    channels = x_val.shape[1]
    if groups != channels or w_val.shape[0] != channels:
        return False
    pixels = x_val.shape[3] * x_val.shape[4]
    return isinstance(pixels, int) and pixels <= MAX_PIXELS


def split_depthwise_conv3d(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace each small-frame depthwise aten.convolution (3-D) with
    `depthwise_conv3d_by_frames` (exported later as its conv2d / slice / add operators)."""
    for node in list(gm.graph.nodes):
        if not _splittable(node):
            continue
        x, weight, bias, stride, padding = node.args[:5]
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(
                depthwise_conv3d_by_frames, (x, weight, bias, list(stride), list(padding))
            )
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.recompile()
    return gm
