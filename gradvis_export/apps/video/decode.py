"""Decoding a video file into RGB frames, as a stream (memory stays flat)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from gradvis_export.apps.video.encode import exact_rate
from gradvis_export.apps.video.overlay import yuv_planes
from gradvis_export.errors import VideoError

T = TypeVar("T")


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reads from the headers: enough to re-encode at the input's exact timing.

    `fps` (float) is kept for callers that only need an approximate rate; `rate` is the exact
    average rate (e.g. Fraction(30000, 1001)) so an encoder does not round 29.97 to 30, and
    `time_base` the unit of the video frames' pts, so a variable-rate video keeps them.
    """

    path: Path
    width: int
    height: int
    fps: float
    frames: int | None  # the container's count; None when it does not say
    # the new fields have defaults so VideoInfo(path, width, height, fps, frames) still works;
    # rate then defaults to exact_rate(fps)
    rate: Fraction = None  # type: ignore[assignment]
    time_base: Fraction | None = None  # the video stream's; None when it does not say
    audio: bool = False  # the file has an audio stream
    duration: float | None = None  # seconds, if the container says

    def __post_init__(self) -> None:
        if self.rate is None:
            object.__setattr__(self, "rate", exact_rate(self.fps))


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
    """Size, exact frame rate, time base, audio and (if the container knows them) frame count
    and duration, from the headers only (no decoding, so it is cheap on long videos)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(25))
        count = int(stream.frames) if stream.frames else None
        width, height, fps = int(stream.width), int(stream.height), float(rate)
        time_base = Fraction(stream.time_base) if stream.time_base else None
        audio = bool(container.streams.audio)
        duration = _duration(container, stream, time_base)
    except Exception as error:  # a damaged header: no codec context, absurd rates, ...
        raise VideoError(
            f"{str(path)!r} has a video stream ffmpeg cannot describe ({type(error).__name__}); "
            "the file is damaged or not a supported video"
        ) from None
    finally:
        container.close()
    if width <= 0 or height <= 0 or not fps > 0:
        raise VideoError(f"{str(path)!r} declares a {width}x{height} video at {fps} fps: damaged")
    return VideoInfo(path, width, height, fps, count, rate, time_base, audio, duration)


def _duration(container, stream, time_base: Fraction | None) -> float | None:
    """The video stream's duration in seconds, else the container's (the longest stream's)."""
    if stream.duration and time_base and stream.duration > 0:
        return float(stream.duration * time_base)
    if container.duration and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def decode_frames(path: str | os.PathLike, convert: Callable[[object], T]) -> Iterator[T]:
    """Yield `convert(frame)` for each decoded PyAV frame of a video, one at a time.

    Conversion happens inside the guard, so a damaged stream whose frames PyAV cannot convert
    raises VideoError like one it cannot decode; a video with no decodable frame raises
    VideoError (after the stream ends, so nothing is buffered).
    """
    import av

    path = Path(path)
    container = _open(path)
    count = 0
    try:
        for frame in container.decode(video=0):
            count += 1
            yield convert(frame)
    except (av.error.FFmpegError, ValueError, AttributeError, TypeError) as error:
        # FFmpeg's errors, and PyAV's when a damaged stream yields frames it cannot convert
        if count == 0:
            raise VideoError(f"{str(path)!r} could not be decoded: {error}") from None
        raise VideoError(f"{str(path)!r} is damaged after frame {count}: {error}") from None
    finally:
        container.close()
    if count == 0:
        raise VideoError(f"{str(path)!r} has no frames")


def rgb24(frame) -> np.ndarray:
    """A PyAV frame as (H, W, 3) uint8 RGB (grayscale and other formats converted)."""
    return frame.to_ndarray(format="rgb24")


def yuv420(frame) -> np.ndarray:
    """A PyAV frame of even size as yuv420p planes, (H * 3/2, W) uint8: Y, then U, then V.

    Copies the planes directly (PyAV's own to_ndarray for yuv420p is slower than converting to
    RGB); other pixel formats are converted by swscale first.
    """
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    height, width = frame.height, frame.width
    out = np.empty((height * 3 // 2, width), np.uint8)
    targets = yuv_planes(out)
    for plane, target in zip(frame.planes, targets):
        rows, cols = target.shape
        data = np.frombuffer(plane, np.uint8)[: rows * plane.line_size]
        target[...] = data.reshape(rows, plane.line_size)[:, :cols]
    return out


def resized_rgb24(frame, size: int) -> np.ndarray:
    """The whole frame as (size, size, 3) uint8 RGB, area-averaged by swscale (antialiased),
    so a heatmap of the model's input maps back onto every pixel of the frame."""
    return frame.reformat(
        width=size, height=size, format="rgb24", interpolation="AREA"
    ).to_ndarray()


def yuv420_to_rgb24(planes: np.ndarray) -> np.ndarray:
    """(H * 3/2, W) yuv420p planes -> (H, W, 3) uint8 RGB."""
    import av

    return av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24")


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video as (H, W, 3) uint8 RGB, one at a time."""
    return decode_frames(path, rgb24)
