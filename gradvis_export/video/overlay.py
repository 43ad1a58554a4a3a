"""Heatmap -> colour overlay on an RGB frame."""

from __future__ import annotations

import numpy as np

# Anchor colours of a jet-like map (blue -> cyan -> yellow -> red), interpolated linearly.
_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.5],
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.5, 0.0, 0.0],
    ],
    dtype=np.float32,
)


def colormap(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float RGB in [0, 1]."""
    h = np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(h).astype(np.int64).clip(0, len(_ANCHORS) - 2)
    frac = (h - low)[..., None]
    return _ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0,1] heatmap of the frame's size onto a uint8 RGB frame (H, W, 3).

    The opacity is alpha * heatmap per pixel: where the map is 0 the frame is unchanged, where
    it is 1 the colour covers it with opacity alpha.
    """
    if frame.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap {heatmap.shape} does not match frame {frame.shape[:2]}")
    colour = colormap(heatmap) * 255.0
    weight = alpha * np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0)[..., None]
    blended = (1.0 - weight) * frame.astype(np.float32) + weight * colour
    return blended.round().clip(0, 255).astype(np.uint8)


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
