"""Does the map point at the object?  The pointing game and the energy in the box.

- Pointing game (Zhang, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention by Excitation
  Backprop", ECCV 2016): a hit when the map's maximum lies within `tolerance` pixels (15 in
  the paper) of the object's box or mask.
- Energy in box (Wang et al., "Score-CAM", CVPR-W 2020, the energy-based pointing game): the
  share of the map's mass that lies inside the box or mask.

Geometry: pixel (row i, column j) has its centre at (j + 0.5, i + 0.5); boxes are
x1 y1 x2 y2 in those pixel coordinates (a box [0, 0, 1, 1] holds exactly pixel (0, 0)); a
centre's distance to a box is the Euclidean distance to the nearest point of the rectangle
(0 inside).  A box row with a NaN coordinate is padding and ignored (boxes of different
samples are padded to one N).  Images: heatmap (B,H,W), boxes (B,N,4) or mask (B,H,W).
Video: heatmap (B,T,H,W), boxes per frame (B,T,N,4) or mask (B,T,H,W).  A heatmap with a
channel axis is reduced by `saliency`'s rule (sum of |.| over channels).
"""

from __future__ import annotations

import math

import torch

from gradvis_export.errors import InputError
from gradvis_export.metrics.saliency import layouts, reduce_channels


def _region(
    heatmap: object, boxes: object, mask: object
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(map (B,[T,]H,W), boxes (B,[T,]N,4) float64 or None, mask bool or None), checked."""
    if (boxes is None) == (mask is None):
        raise InputError("pass the object as either boxes=(B,[T,]N,4) or mask=(B,[T,]H,W)")
    if boxes is not None:
        if not isinstance(boxes, torch.Tensor):
            boxes = torch.as_tensor(boxes)
        if boxes.dim() not in (3, 4) or boxes.shape[-1] != 4:
            raise InputError(
                f"boxes has shape {tuple(boxes.shape)}; expected (B,N,4) x1 y1 x2 y2 pixel boxes "
                "for images or (B,T,N,4) per frame for video"
            )
        spatial = boxes.dim() - 1
        sal = reduce_channels(heatmap, spatial)
        if tuple(boxes.shape[: spatial - 1]) != tuple(sal.shape[: spatial - 1]):
            raise InputError(
                f"boxes has shape {tuple(boxes.shape)} but the heatmap {tuple(heatmap.shape)}: "
                f"the boxes' {'(B, T)' if spatial == 3 else 'B'} must be the map's (map layout "
                f"{layouts(spatial)})"
            )
        boxes = boxes.detach().to(device=sal.device, dtype=torch.float64)
        valid = ~torch.isnan(boxes).any(-1)
        x1, y1, x2, y2 = boxes.unbind(-1)
        if bool((valid & ((x2 < x1) | (y2 < y1))).any()):
            raise InputError("a box has x2 < x1 or y2 < y1; boxes are x1 y1 x2 y2")
        if bool((valid & ~torch.isfinite(boxes).all(-1)).any()):
            raise InputError("a box has an infinite coordinate")
        return sal, boxes, None
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if mask.dim() not in (3, 4):
        raise InputError(
            f"mask has shape {tuple(mask.shape)}; expected (B,H,W) for images or (B,T,H,W) "
            "for video"
        )
    sal = reduce_channels(heatmap, mask.dim() - 1)
    if tuple(mask.shape) != tuple(sal.shape):
        raise InputError(
            f"mask has shape {tuple(mask.shape)} but the heatmap {tuple(heatmap.shape)} gives "
            f"maps {tuple(sal.shape)}; they must cover the same positions"
        )
    return sal, None, mask.detach().to(sal.device) != 0


def _centres(size: int, device: torch.device) -> torch.Tensor:
    return torch.arange(size, dtype=torch.float64, device=device) + 0.5


def _box_distance(px: torch.Tensor, py: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distance of points (px, py) (shape S) to each box of boxes (S..., N, 4); NaN rows -> inf."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    px, py = px.unsqueeze(-1), py.unsqueeze(-1)
    dx = torch.clamp(torch.maximum(x1 - px, px - x2), min=0)
    dy = torch.clamp(torch.maximum(y1 - py, py - y2), min=0)
    dist = torch.hypot(dx, dy)
    return torch.where(torch.isnan(dist), torch.full_like(dist, math.inf), dist)


def box_mask(boxes: torch.Tensor, height: int, width: int, grow: float = 0.0) -> torch.Tensor:
    """(..., N, 4) pixel boxes -> (..., H, W) bool: pixel centres within `grow` px of a box."""
    lead = boxes.shape[:-2]
    ys = _centres(height, boxes.device).view(height, 1)
    xs = _centres(width, boxes.device).view(1, width)
    inside = torch.zeros((*lead, height, width), dtype=torch.bool, device=boxes.device)
    for box in boxes.to(torch.float64).unbind(-2):  # one box at a time: no (..., H, W, N)
        x1, y1, x2, y2 = (c[..., None, None] for c in box.unbind(-1))
        dx = torch.clamp(torch.maximum(x1 - xs, xs - x2), min=0)
        dy = torch.clamp(torch.maximum(y1 - ys, ys - y2), min=0)
        inside |= torch.hypot(dx, dy) <= grow  # NaN (padding) compares False
    return inside


def pointing_game(
    heatmap: torch.Tensor,
    boxes: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    tolerance: float = 15.0,
) -> torch.Tensor:
    """The pointing game (Zhang et al., ECCV 2016): 1 if the map's maximum lies within
    `tolerance` pixels of the object, else 0; video: the share of frames hit.  (B,) float.

    The maximum is the first one in row-major order (torch.argmax); its pixel centre counts
    as a hit when its distance to a box (`boxes`) or to the centre of a mask pixel (`mask`)
    is <= tolerance (so tolerance=0 means on the object).  A frame without any box or mask
    pixel is a miss.  The paper's tolerance is 15 px on ~224 px images; scale it with the
    input (e.g. 7 px at 112).
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise InputError(f"tolerance={tolerance!r}; a distance in pixels (a number >= 0)")
    if not tolerance >= 0 or not math.isfinite(tolerance):
        raise InputError(f"tolerance={tolerance!r}; a distance in pixels must be >= 0 and finite")
    sal, boxes, mask = _region(heatmap, boxes, mask)
    height, width = sal.shape[-2:]
    best = sal.flatten(-2).argmax(dim=-1)  # (B,[T])
    row, col = best // width, best % width
    py, px = row.to(torch.float64) + 0.5, col.to(torch.float64) + 0.5
    if boxes is not None:
        if boxes.shape[-2] == 0:
            hit = torch.zeros(best.shape, dtype=torch.bool, device=sal.device)
        else:
            hit = (_box_distance(px, py, boxes) <= tolerance).any(-1)
    else:
        ys = _centres(height, sal.device).view(height, 1)
        xs = _centres(width, sal.device).view(1, width)
        dist = torch.hypot(xs - px[..., None, None], ys - py[..., None, None])
        hit = (mask & (dist <= tolerance)).flatten(-2).any(-1)
    hit = hit.to(sal.dtype)
    return hit if hit.dim() == 1 else hit.mean(dim=1)


def energy_in_box(
    heatmap: torch.Tensor,
    boxes: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The energy-based pointing game (Score-CAM, Wang et al., CVPR-W 2020): the share of the
    map's mass inside the object, sum(map inside) / sum(map), per sample (B,) float.

    The mass is the map's non-negative part (negative values count as 0); a box holds the
    pixels whose centres lie in it; video: the share of the whole clip's mass, over all
    frames.  An all-zero map scores 0.
    """
    sal, boxes, mask = _region(heatmap, boxes, mask)
    if boxes is not None:
        mask = box_mask(boxes, *sal.shape[-2:])
    mass = sal.clamp(min=0).flatten(1)
    total = mass.sum(dim=1)
    inside = (mass * mask.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1), 0.0)
