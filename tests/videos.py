"""Test videos: encode generated frames to a file, decode a file back to RGB frames."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np


def encode(
    path: Path,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write (H, W, 3) uint8 RGB frames, or (H, W) grayscale ones, to `path`."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    for image in frames:
        fmt = "gray" if image.ndim == 2 else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def decode(path: Path) -> np.ndarray:
    """Every frame of `path` as (N, H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
