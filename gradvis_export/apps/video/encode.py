"""Writing H.264 MP4 files that browsers play, atomically (no half-written output)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def mp4_writer(
    path: str | os.PathLike,
    fps: float,
    width: int,
    height: int,
    preset: str = "veryfast",
    crf: int = 23,
    frame_format: str = "rgb24",
    threads: int = 1,
) -> Iterator:
    """Yield `write(frame)`; the file appears at `path` only when the block succeeds.

    Frames are uint8 (H, W, 3) RGB, or with `frame_format="yuv420p"` the (H * 3/2, W) planes
    the encoder takes as they are (no conversion).

    x264's `veryfast` preset encodes ~3x faster than its default (`medium`) at a similar size
    for these mostly static overlays; `crf` is x264's quality (lower = better, 23 its default).
    `threads=1` (x264's default: one per core, plus a lookahead thread) because the caller
    already encodes on a thread of its own next to the explainer: x264's frame threads took
    ~40 % more CPU per 640x360 overlay frame (2.0 against 1.3-1.5 ms) for a ~12 % larger file.
    """
    import av

    path = Path(path)
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs even sizes, got {width}x{height}")
    tmp = path.with_name(f".{path.name}.part")
    container = av.open(str(tmp), mode="w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf), "threads": str(threads)}

        def write(frame: np.ndarray) -> None:
            video_frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(frame), format=frame_format
            )
            for packet in stream.encode(video_frame):
                container.mux(packet)

        yield write
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            with contextlib.suppress(Exception):
                container.close()
            tmp.unlink()
