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
    """Blend a [0,1] heatmap of the frame's size onto a uint8 RGB frame (H, W, 3)."""
    if frame.shape[:2] != heatmap.shape:
        raise ValueError(f"heatmap {heatmap.shape} does not match frame {frame.shape[:2]}")
    colour = colormap(heatmap) * 255.0
    blended = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour
    return blended.round().clip(0, 255).astype(np.uint8)
