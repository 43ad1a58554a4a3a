"""Decoding a video file into RGB frames, as a stream (memory stays flat)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int | None  # the container's count; None when it does not say


def _open(path: Path):
    import av

    if not path.exists():
        raise VideoError(f"no video at {str(path)!r}: the file does not exist")
    if path.is_dir():
        raise VideoError(f"{str(path)!r} is a folder; pass a video file (.mp4, .avi, .mkv, ...)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise VideoError(
            f"{str(path)!r} is not a video ffmpeg can read ({type(error).__name__}); pass an "
            ".mp4 / .avi / .mkv / .webm file"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{str(path)!r} has no video stream (audio only, or not a video)")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate and (if the container knows it) frame count, without decoding."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        count = int(stream.frames) if stream.frames else None
        width, height, fps = int(stream.width), int(stream.height), float(rate)
    except Exception as error:  # a damaged header: no codec context, absurd rates, ...
        raise VideoError(
            f"{str(path)!r} has a video stream ffmpeg cannot describe ({type(error).__name__}); "
            "the file is damaged or not a supported video"
        ) from None
    finally:
        container.close()
    if width <= 0 or height <= 0 or not fps > 0:
        raise VideoError(f"{str(path)!r} declares a {width}x{height} video at {fps} fps: damaged")
    return VideoInfo(path, width, height, fps, count)


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video as (H, W, 3) uint8 RGB, one at a time.

    Grayscale and other pixel formats are converted to RGB; a video with no decodable frame
    raises VideoError (after the stream ends, so nothing is buffered).
    """
    import av

    path = Path(path)
    container = _open(path)
    count = 0
    try:
        for frame in container.decode(video=0):
            count += 1
            yield frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, ValueError, AttributeError, TypeError) as error:
        # FFmpeg's errors, and PyAV's when a damaged stream yields frames it cannot convert
        if count == 0:
            raise VideoError(f"{str(path)!r} could not be decoded: {error}") from None
        raise VideoError(f"{str(path)!r} is damaged after frame {count}: {error}") from None
    finally:
        container.close()
    if count == 0:
        raise VideoError(f"{str(path)!r} has no frames")
