"""Heatmap -> colour overlay on an RGB frame."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# A jet-like map: blue -> cyan -> yellow -> red, piecewise linear between the anchor colours
# at 0, 0.2, ..., 1:  (0,0,.5) (0,0,1) (0,1,1) (1,1,0) (1,0,0) (.5,0,0).  Each channel is the
# clipped minimum of two lines (slope, intercept) of h, which is cheap on every frame's pixels.
_LINES = (
    ((5.0, -2.0), (-2.5, 3.0)),  # red: 0 up to 0.4, rises to 1 at 0.6, falls to 0.5 at 1
    ((5.0, -1.0), (-5.0, 4.0)),  # green: rises 0.2 -> 0.4, 1 until 0.6, falls to 0 at 0.8
    ((2.5, 0.5), (-5.0, 3.0)),  # blue: 0.5 at 0, 1 at 0.2 .. 0.4, falls to 0 at 0.6
)


def _channel(h: np.ndarray, c: int, scale: float = 1.0) -> np.ndarray:
    """Channel `c` of the colormap at h (float32 in [0, 1]), times `scale`, as float32."""
    (a1, b1), (a2, b2) = _LINES[c]
    up = h * np.float32(a1 * scale)
    up += np.float32(b1 * scale)
    down = h * np.float32(a2 * scale)
    down += np.float32(b2 * scale)
    np.minimum(up, down, out=up)
    return np.clip(up, 0.0, scale, out=up)


def _unit(heatmap: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(heatmap.astype(np.float32, copy=False)), 0.0, 1.0)


def colormap(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float32 RGB in [0, 1]."""
    h = _unit(heatmap)
    return np.stack([_channel(h, c) for c in range(3)], axis=-1)


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0,1] heatmap of the frame's size onto a uint8 RGB frame (H, W, 3).

    The opacity is alpha * heatmap per pixel: where the map is 0 the frame is unchanged, where
    it is 1 the colour covers it with opacity alpha.  Channel by channel in float32, in place,
    as this runs on every frame of a video.
    """
    if frame.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap {heatmap.shape} does not match frame {frame.shape[:2]}")
    h = _unit(heatmap)
    weight = h * np.float32(alpha)
    out = np.empty(frame.shape, np.uint8)
    for c in range(3):
        colour = _channel(h, c, 255.0)
        base = frame[..., c].astype(np.float32)
        colour -= base  # frame + weight * (colour - frame) = (1 - weight) frame + weight colour
        colour *= weight
        colour += base
        np.rint(colour, out=colour)
        out[..., c] = np.clip(colour, 0, 255, out=colour)
    return out


def overlay_tensor(frames: torch.Tensor, heatmap: torch.Tensor, alpha: float) -> torch.Tensor:
    """`overlay` as tensor operations, for inside an exported graph: uint8 frames (..., H, W, 3)
    and [0, 1] maps (..., H, W) -> uint8 overlays (..., H, W, 3), the same colormap and blend."""
    import torch

    h = heatmap.clamp(0.0, 1.0).unsqueeze(-1)
    slope = torch.tensor([[a for (a, _), _ in _LINES], [a for _, (a, _) in _LINES]])
    intercept = torch.tensor([[b for (_, b), _ in _LINES], [b for _, (_, b) in _LINES]])
    # (..., H, W, 3) per line, the minimum of the two lines, clipped: 255 * colormap(h)
    colour = torch.minimum(h * slope[0] + intercept[0], h * slope[1] + intercept[1])
    colour = colour.clamp(0.0, 1.0) * 255.0
    base = frames.to(torch.float32)
    blended = base + (alpha * h) * (colour - base)
    return blended.round().clamp(0.0, 255.0).to(torch.uint8)


def hot_boxes(
    heatmap: np.ndarray, threshold: float = 0.6, max_boxes: int = 5, min_area: int = 16
) -> list[list[float]]:
    """Boxes [x1, y1, x2, y2, peak] around the connected regions where heatmap >= threshold,
    hottest first (pixel coordinates, x2/y2 exclusive)."""
    from scipy import ndimage

    labels, count = ndimage.label(heatmap >= threshold)
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        ys, xs = region
        inside = labels[region] == index
        if int(inside.sum()) < min_area:
            continue
        peak = float(heatmap[region][inside].max())
        boxes.append([int(xs.start), int(ys.start), int(xs.stop), int(ys.stop), round(peak, 4)])
    boxes.sort(key=lambda b: -b[4])
    return boxes[:max_boxes]


def frame_boxes(
    heatmap: np.ndarray, width: int, height: int, threshold: float = 0.6, max_boxes: int = 5
) -> list[list[float]]:
    """`hot_boxes` of a map at the model's resolution, in the pixel coordinates of a
    width x height frame: labelling the small map is what makes boxes cheap on every frame."""
    sy, sx = height / heatmap.shape[0], width / heatmap.shape[1]
    min_area = max(1, round(16 / (sx * sy)))  # 16 frame pixels
    return [
        [
            max(0, int(x1 * sx)),
            max(0, int(y1 * sy)),
            min(width, int(np.ceil(x2 * sx))),
            min(height, int(np.ceil(y2 * sy))),
            peak,
        ]
        for x1, y1, x2, y2, peak in hot_boxes(heatmap, threshold, max_boxes, min_area)
    ]


def draw_boxes(
    frame: np.ndarray, boxes: list[list[float]], colour=(255, 255, 255), width: int = 2
) -> np.ndarray:
    """Rectangles (in place on a copy) around `boxes` of a uint8 RGB frame."""
    out = frame.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2, *_ in boxes:
        x1, y1 = max(int(x1), 0), max(int(y1), 0)
        x2, y2 = min(int(x2), w), min(int(y2), h)
        out[y1 : y1 + width, x1:x2] = colour
        out[max(y2 - width, 0) : y2, x1:x2] = colour
        out[y1:y2, x1 : x1 + width] = colour
        out[y1:y2, max(x2 - width, 0) : x2] = colour
    return out


def signed_image(values: np.ndarray) -> np.ndarray:
    """(H, W, 3) signed values (a guided gradient) -> uint8 RGB, 0 at mid-grey."""
    scale = float(np.abs(values).max()) or 1.0
    return ((values / scale * 0.5 + 0.5).clip(0, 1) * 255).round().astype(np.uint8)
