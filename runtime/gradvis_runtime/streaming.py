"""Run a video file or an iterator of frames through an artifact, clip by clip.

Frames are RGB uint8 `(H, W, 3)` at the artifact's size.  A uint8 artifact (exported with
in-graph preprocessing) takes them as they are; a float artifact gets `/255`, then the
contract's `preprocess.mean` / `std` if it has them.  Memory holds one clip, whatever the
video's length.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .explainer import Explainer


class ClipResult(NamedTuple):
    """One clip: the indices of its first and one-past-last frames and the artifact's outputs
    (batch of one)."""

    start: int
    stop: int
    outputs: dict[str, np.ndarray]


def read_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video file into RGB uint8 frames with PyAV (or OpenCV when PyAV is absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {str(path)!r}")
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            container = av.open(str(path))
        except av.error.FFmpegError as error:
            raise ValueError(f"{str(path)!r} is not a video PyAV can read: {error}") from error
        with container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        return
    try:
        import cv2
    except ImportError as error:
        raise ImportError("reading a video needs PyAV (pip install av) or OpenCV") from error
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{str(path)!r} is not a video OpenCV can read")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def _clip_input(explainer: Explainer, frames: list[np.ndarray]) -> np.ndarray:
    """Stacked frames in the artifact's layout, batch of one."""
    spec = explainer.spec
    clip = np.stack(frames)  # (T, H, W, 3)
    if spec.uint8:  # in-graph preprocessing: BTHWC / BHWC
        return clip[None] if spec.is_video else clip[:1]
    x = clip.astype(np.float32) / 255.0
    mean, std = spec.preprocess.mean, spec.preprocess.std
    if mean is not None and std is not None:
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = np.moveaxis(x, -1, 0)  # (3, T, H, W)
    return x[None] if spec.is_video else x[:, 0][None]


def stream(
    explainer: Explainer,
    frames: Iterable[np.ndarray] | str | os.PathLike,
    stride: int | None = None,
    target: int | None = None,
) -> Iterator[ClipResult]:
    """Explain consecutive clips of `frames` (an iterable of RGB uint8 frames, or a video
    path): a clip of the artifact's length starts every `stride` frames (default: the clip
    length, no overlap).  Image artifacts take one frame per clip.  A video shorter than one
    clip yields nothing."""
    spec = explainer.spec
    if len(spec.data_inputs) > 1 or spec.frame_size is None:
        raise ValueError(
            f"stream feeds frames to an image or clip artifact; this one takes "
            f"{', '.join(f'{s.name} {tuple(s.shape)}' for s in spec.data_inputs)}"
        )
    clip_len = spec.clip_len or 1
    size = spec.frame_size
    stride = stride or clip_len
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if isinstance(frames, (str, os.PathLike)):
        frames = read_video(frames)
    window: deque[np.ndarray] = deque(maxlen=clip_len)
    skip = 0
    for index, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {index} has shape {frame.shape} and dtype {frame.dtype}; frames must be "
                "RGB uint8 (H, W, 3)"
            )
        if frame.shape[:2] != size:
            raise ValueError(
                f"frame {index} is {frame.shape[1]}x{frame.shape[0]}; this artifact takes "
                f"{size[1]}x{size[0]} frames: resize them first (e.g. cv2.resize)"
            )
        window.append(frame)
        if skip:
            skip -= 1
            continue
        if len(window) == clip_len:
            outputs = explainer.run(_clip_input(explainer, list(window)), target=target)
            yield ClipResult(index + 1 - clip_len, index + 1, outputs)
            skip = stride - 1
