"""Map helpers every explainer shares: resizing as matrices, per-sample normalisation, the
in-graph colormap.  All are plain forward operators, so they export anywhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils._python_dispatch import _disable_current_modes

from gradvis_export.errors import LayerError

aten = torch.ops.aten


def constant(build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Build a constant with real tensors, outside any fake or tracing mode.

    A constant built under the trace's fake mode would end up in the graph as a FakeTensor.
    """
    with _disable_current_modes(), torch.no_grad():
        return build()


def ints(values: Sequence[object]) -> list[int]:
    return [int(v) for v in values]


def along_axes(x: torch.Tensor, matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply one matrix per trailing axis: x[..., i, ...] -> sum_i M[o, i] x[..., i, ...]."""
    first = x.dim() - len(matrices)
    for offset, matrix in enumerate(matrices):
        x = along_axis(x, matrix, first + offset)
    return x


def along_axis(x: torch.Tensor, matrix: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.matmul(x.movedim(axis, -1), matrix.t()).movedim(-1, axis)


def transposed(matrices: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [m.t().contiguous() for m in matrices]


def identity_rows(size: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.eye(size, dtype=dtype).unsqueeze(1)  # (size, 1, size): one 1-D signal per row


def interpolation_matrices(in_sizes, out_sizes, scales, one_d: Callable[..., torch.Tensor], dtype):
    def build() -> list[torch.Tensor]:
        return [
            one_d(identity_rows(i, dtype), [o], s)[:, 0, :].t().contiguous()
            for i, o, s in zip(in_sizes, out_sizes, scales)
        ]

    return constant(build)


def resize_linear(
    maps: torch.Tensor, sizes: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Bilinear / trilinear resize of the trailing axes, as matrices.

    Equal to F.interpolate, but it exports as a few MatMuls: the exporter writes a trilinear
    upsample as GatherND ops, which cost onnxruntime more than the whole Grad-CAM backward.
    """
    sizes = ints(sizes)
    in_sizes = ints(maps.shape[-len(sizes) :])

    def one_d(rows, size, scale):
        return aten.upsample_linear1d.default(rows, size, align_corners, scale)

    mats = interpolation_matrices(in_sizes, sizes, [None] * len(sizes), one_d, maps.dtype)
    first = maps.dim() - len(sizes)
    for axis, (matrix, i, o) in enumerate(zip(mats, in_sizes, sizes)):
        if i != o:
            maps = along_axis(maps, matrix, first + axis)
    return maps


def upsample_to(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, *S) -> (B, *x.shape[2:]): bilinear for images, trilinear for video, align_corners=False."""
    spatial = x.dim() - 2
    if maps.dim() - 1 != spatial:
        raise LayerError(
            f"the target layer's output has {maps.dim() - 1} spatial dims but the input has "
            f"{spatial}; choose a layer that outputs (B,C,{'T,' if spatial == 3 else ''}H,W)"
        )
    return resize_linear(maps, x.shape[2:])


def normalize_per_sample(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each sample to [0, 1]; a constant map becomes all zero (never NaN)."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    span = high - low
    shape = (-1,) + (1,) * (maps.dim() - 1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    scaled = (maps - low.view(shape)) / safe.view(shape)
    return torch.where(span.view(shape) > 0, scaled, torch.zeros_like(scaled))


# A jet-like map: blue -> cyan -> yellow -> red, piecewise linear between the anchor colours
# at 0, 0.2, ..., 1:  (0,0,.5) (0,0,1) (0,1,1) (1,1,0) (1,0,0) (.5,0,0).  Each channel is the
# clipped minimum of two lines (slope, intercept) of h, which is cheap on every frame's pixels.
COLORMAP_LINES = (
    ((5.0, -2.0), (-2.5, 3.0)),  # red: 0 up to 0.4, rises to 1 at 0.6, falls to 0.5 at 1
    ((5.0, -1.0), (-5.0, 4.0)),  # green: rises 0.2 -> 0.4, 1 until 0.6, falls to 0 at 0.8
    ((2.5, 0.5), (-5.0, 3.0)),  # blue: 0.5 at 0, 1 at 0.2 .. 0.4, falls to 0 at 0.6
)


def overlay_tensor(frames: torch.Tensor, heatmap: torch.Tensor, alpha: float) -> torch.Tensor:
    """`overlay` as tensor operations, for inside an exported graph: uint8 frames (..., H, W, 3)
    and [0, 1] maps (..., H, W) -> uint8 overlays (..., H, W, 3), the same colormap and blend."""
    h = heatmap.clamp(0.0, 1.0).unsqueeze(-1)
    slope = torch.tensor([[a for (a, _), _ in COLORMAP_LINES], [a for _, (a, _) in COLORMAP_LINES]])
    intercept = torch.tensor(
        [[b for (_, b), _ in COLORMAP_LINES], [b for _, (_, b) in COLORMAP_LINES]]
    )
    # (..., H, W, 3) per line, the minimum of the two lines, clipped: 255 * colormap(h)
    colour = torch.minimum(h * slope[0] + intercept[0], h * slope[1] + intercept[1])
    colour = colour.clamp(0.0, 1.0) * 255.0
    base = frames.to(torch.float32)
    blended = base + (alpha * h) * (colour - base)
    return blended.round().clamp(0.0, 255.0).to(torch.uint8)
