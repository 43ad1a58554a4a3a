"""A map as the metrics read it: one non-channel value per position, checked against the input.

Every metric takes a heatmap in either layout an explainer returns:

- one value per position, (B, H, W) for images (B, C, H, W) and (B, T, H, W) for video
  (B, C, T, H, W) — the CAM family;
- a signed map with a channel axis, (B, C, H, W) or (B, C, T, H, W) — guided backprop's,
  the input gradient — reduced to sum over channels of |value| (the usual saliency of a
  gradient map; Simonyan et al. 2014 take the max over channels, guided-backprop papers the
  summed magnitude).
"""

from __future__ import annotations

import torch

from gradvis_export.core.explainer import check_input
from gradvis_export.errors import InputError


def layouts(spatial: int) -> str:
    """The accepted layouts for a map with `spatial` position axes (2: images, 3: video)."""
    if spatial == 2:
        return "(B,H,W), or (B,C,H,W) with a channel axis"
    return "(B,T,H,W), or (B,C,T,H,W) with a channel axis"


def reduce_channels(heatmap: object, spatial: int, what: str = "the heatmap") -> torch.Tensor:
    """(B, *P) or (B, C, *P) -> (B, *P) float, P = `spatial` position axes (2 or 3)."""
    if not isinstance(heatmap, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(heatmap).__name__}")
    if heatmap.dim() == spatial + 1:
        out = heatmap.detach()
    elif heatmap.dim() == spatial + 2:
        out = heatmap.detach().abs().sum(dim=1)
    else:
        raise InputError(
            f"{what} has shape {tuple(heatmap.shape)}; expected {layouts(spatial)} "
            f"({'video' if spatial == 3 else 'images'})"
        )
    if not out.is_floating_point():
        out = out.float()
    if out.numel() == 0:
        raise InputError(f"{what} has shape {tuple(heatmap.shape)}: no values")
    if not bool(torch.isfinite(out).all()):
        raise InputError(f"{what} has NaN or infinite values; a ranking of them means nothing")
    return out


def check_model_input(x: object, what: str = "x") -> torch.Tensor:
    """A float image (B,C,H,W) or video (B,C,T,H,W) batch: the explainers' own input check."""
    return check_input(x, what)


def saliency(heatmap: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The map of `x`'s positions, (B, H, W) for images or (B, T, H, W) for video.

    `heatmap` is (B, [T,] H, W), taken as is, or signed with a channel axis (B, C, [T,] H, W)
    (guided backprop's), reduced to sum_c |heatmap|.  Detached, float, on `x`'s device; the
    positions must be `x`'s (resize a layer-resolution map to the input first).
    """
    x = check_model_input(x)
    spatial = x.dim() - 2
    out = reduce_channels(heatmap, spatial).to(x.device)
    expected = (x.shape[0], *x.shape[2:])
    if tuple(out.shape) != expected:
        raise InputError(
            f"the heatmap has shape {tuple(heatmap.shape)} but x has shape {tuple(x.shape)}: "
            f"for x (B,C,{'T,' if spatial == 3 else ''}H,W) the map must be {layouts(spatial)} "
            f"with the same B{', T' if spatial == 3 else ''}, H, W, i.e. {expected} (resize a "
            "layer-resolution map to the input's size first)"
        )
    return out
