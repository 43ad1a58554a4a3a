"""Writing H.264 videos (MP4 that browsers play; MOV, MKV), atomically (no half-written output).

The output keeps the input's timing exactly: its rate as a Fraction (29.97 fps stays
30000/1001, not 30), each frame's timestamp (a variable-rate video stays variable) and, copied
packet for packet, its audio.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from gradvis_export.errors import InputError, VideoError

#: output suffix -> the container written (H.264 video, the input's audio copied)
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def container_format(path: str | os.PathLike, flag: str = "--out") -> str:
    """The container an overlay video's suffix asks for; any other suffix is refused (an
    MP4 under an .avi name would mislead every player and tool that trusts the name)."""
    suffix = Path(path).suffix.lower()
    if suffix in CONTAINERS:
        return CONTAINERS[suffix]
    known = ", ".join(CONTAINERS)
    why = (
        "AVI cannot hold H.264 with its frame timestamps (B-frames, variable rate)"
        if suffix == ".avi"
        else f"{suffix or 'no suffix'} is not a container gradvis writes"
    )
    raise InputError(
        f"{flag} {str(path)!r}: {why}; give one of {known} (e.g. {Path(path).stem}.mp4)"
    )


#: NTSC-family rates are n * 1000/1001; a float near one (29.97, 23.976, 59.94) means that one
_NTSC = Fraction(1000, 1001)


def exact_rate(fps: numbers.Real) -> Fraction:
    """A frame rate as an exact Fraction: Fractions and ints as they are, floats recovered.

    A float is what a rate looks like after `float(Fraction(30000, 1001))` or when a user types
    29.97: an integer stays an integer, a value within 1e-5 (relative) of an NTSC rate
    n * 1000/1001 becomes that rate (29.97 -> 30000/1001, 23.976 -> 24000/1001), anything else
    the nearest fraction with a denominator up to 1001 (12.5 -> 25/2).
    """
    if isinstance(fps, numbers.Rational):
        rate = Fraction(fps)
    else:
        value = float(fps)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"a frame rate must be a positive number, got {fps!r}")
        whole, ntsc = round(value), round(value / _NTSC)
        if whole and abs(value - whole) <= 1e-9 * value:
            rate = Fraction(whole)
        elif ntsc and abs(value - float(ntsc * _NTSC)) <= 1e-5 * value:
            rate = ntsc * _NTSC
        else:
            rate = Fraction(value).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"a frame rate must be a positive number, got {fps!r}")
    return rate


class Mp4Write:
    """`write(frame, pts=None)`, what `mp4_writer` yields: encodes one frame.

    `pts` is the frame's timestamp in units of the writer's `time_base` (the input stream's, so
    a variable-rate video keeps each frame's time); `None` places the frame one frame interval
    (1 / rate) after the previous one (the first at 0).  A timestamp not above the previous one
    (a damaged input) is moved to just after it, as MP4 needs increasing timestamps (`warn`
    is told the first time).

    `audio_dropped` is None, or why the audio of `audio_from` could not be copied (its codec
    cannot go into MP4), in which case the MP4 has no audio.

    Each frame is encoded when the next one arrives (its duration is then known), and each
    packet muxed when the next one comes out, so the last packet's duration can make the
    stream's total `count / rate`: what demuxers divide to report the average rate.
    """

    def __init__(
        self,
        container,
        stream,
        rate: Fraction,
        time_base: Fraction,
        frame_format: str,
        warn: Callable[[str], None] | None,
        path: Path | None = None,
    ):
        self.audio_dropped: str | None = None
        self._path = path  # named in a write failure's message
        self._container, self._stream, self._frame_format = container, stream, frame_format
        self._rate, self._time_base, self._warn = rate, time_base, warn
        self._step = 1 / (rate * time_base)  # one frame interval, in time_base units
        self._frame = None  # the last frame given, not encoded yet
        self._packet = None  # the last packet out of the encoder, not muxed yet
        self._durations: dict[int, int] = {}  # pts -> duration of the frames in the encoder
        self._first_dts: int | None = None
        self._next = Fraction(0)  # where a frame without pts goes (exact, rounded on use)
        self._count = 0
        self._moved = False
        self._audio: _AudioCopy | None = None

    def __call__(self, frame: np.ndarray, pts: int | None = None) -> None:
        if self._path is None:
            return self._write(frame, pts)
        from gradvis_export.apps.outputs import writing

        with writing(self._path):  # disk full, the folder gone read-only: one line
            return self._write(frame, pts)

    def _write(self, frame: np.ndarray, pts: int | None) -> None:
        import av

        pts = round(self._next) if pts is None else int(pts)
        if self._frame is not None and pts <= self._frame.pts:
            if self._warn is not None and not self._moved:
                self._warn(
                    f"frame {self._count}: timestamp {pts} is not after the previous one "
                    f"({self._frame.pts}); moved after it (and any later such frames)"
                )
            self._moved = True
            pts = self._frame.pts + 1
        video_frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(frame), format=self._frame_format
        )
        video_frame.pts, video_frame.time_base = pts, self._time_base
        if self._frame is not None:
            self._encode(self._frame, pts - self._frame.pts)
        self._frame, self._next = video_frame, pts + self._step
        self._count += 1
        if self._audio is not None:  # audio up to this frame's time, interleaved by the muxer
            self._audio.copy(until=pts * self._time_base)

    def _encode(self, frame, duration: int | None) -> None:
        """Encode a frame (None: flush the encoder) and mux all but the newest packet."""
        if frame is not None:
            self._durations[frame.pts] = frame.duration = max(duration, 1)
        for packet in self._stream.encode(frame):
            duration = self._durations.pop(packet.pts, None)
            if duration is not None:
                packet.duration = duration
            if self._first_dts is None:
                self._first_dts = packet.dts
            if self._packet is not None:
                self._container.mux(self._packet)
            self._packet = packet

    def _finish(self) -> None:
        """Encode the last frame, flush the encoder, copy the rest of the audio."""
        if self._frame is not None:
            self._encode(self._frame, round(self._step))  # the last frame: an average one
            self._frame = None
        self._encode(None, None)
        last, self._packet = self._packet, None
        if last is not None:
            # the packets' durations (decode order) add up to count / rate, the average rate;
            # with B-frames the last packet is not the last frame shown, whose time is kept.
            # Not when that would take more than a few frames: the rate does not fit the pts
            total = round(self._count / (self._rate * self._time_base))
            if self._first_dts is not None and last.dts is not None:
                duration = self._first_dts + total - last.dts
                if 0 < duration <= 4 * self._step:
                    last.duration = duration
            self._container.mux(last)
        if self._audio is not None:
            self._audio.copy(until=None)


class _AudioCopy:
    """The first audio stream of a file, remuxed packet by packet (no re-encoding)."""

    def __init__(self, source, container, warn: Callable[[str], None] | None):
        self._source = source
        self._input = source.streams.audio[0]
        self._output = container.add_stream_from_template(self._input)
        self._container, self._warn = container, warn
        self._packets = source.demux(self._input)
        self._pending = None
        self._done = False

    def copy(self, until: Fraction | None) -> None:
        """Mux the packets that start at or before `until` seconds (all of them if None)."""
        import av

        while not self._done:
            if self._pending is None:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    self._done = True
                    return
                except (av.error.FFmpegError, ValueError) as error:
                    self._done = True
                    if self._warn is not None:
                        self._warn(f"the audio is damaged; copied it up to there only ({error})")
                    return
                if packet.size == 0 or (packet.dts is None and packet.pts is None):
                    continue  # the demuxer's end-of-stream packet, or one with no time
                if packet.dts is None:
                    packet.dts = packet.pts
                self._pending = packet
            packet = self._pending
            if until is not None and packet.dts * packet.time_base > until:
                return
            packet.stream = self._output
            self._container.mux(packet)
            self._pending = None


def _audio_problem(stream, format: str = "mp4") -> str | None:
    """Why this audio stream cannot be copied into the container `format` (None if it can):
    tried on a throwaway file in memory, so a refusal does not spoil the real file's header."""
    import av

    try:
        with av.open(io.BytesIO(), mode="w", format=format) as trial:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
    except (av.error.FFmpegError, ValueError) as error:
        name = stream.codec_context.name if stream.codec_context else "unknown"
        what = {"mp4": "an MP4", "mov": "a MOV", "matroska": "an MKV"}.get(format, format)
        return f"its {name!r} audio cannot go into {what} without re-encoding ({error})"
    return None


def _open_audio(audio_from: str | os.PathLike):
    """The container of `audio_from`, or None if it has no audio stream."""
    import av

    path = Path(audio_from)
    if not path.is_file():
        raise VideoError(f"no audio source at {str(path)!r}: not a file")
    try:
        source = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise VideoError(
            f"{str(path)!r} is not a file ffmpeg can read ({type(error).__name__})"
        ) from None
    if not source.streams.audio:
        source.close()
        return None
    return source


@contextlib.contextmanager
def mp4_writer(
    path: str | os.PathLike,
    fps: numbers.Real,
    width: int,
    height: int,
    preset: str = "veryfast",
    crf: int = 23,
    frame_format: str = "rgb24",
    threads: int = 1,
    time_base: Fraction | None = None,
    audio_from: str | os.PathLike | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Mp4Write]:
    """Yield `write(frame, pts=None)` (an `Mp4Write`); the file appears at `path` only when
    the block succeeds (it is written as `.NAME.part` next to it, removed on failure; a stale
    one a killed run left is removed first).  The container follows the suffix (.mp4/.m4v,
    .mov, .mkv; anything else is an InputError listing these); a write failure (disk full,
    read-only folder) is a one-line `OutputError` and an older file at `path` stays as it was.

    Frames are uint8 (H, W, 3) RGB, or with `frame_format="yuv420p"` the (H * 3/2, W) planes
    the encoder takes as they are (no conversion).

    Timing: `fps` is the exact rate of the stream (a Fraction, or a float recovered by
    `exact_rate`: 29.97 -> 30000/1001, never rounded); `time_base` the unit of the `pts` given
    to `write` (pass the input video stream's, with its frames' pts, to keep a variable-rate
    video's timestamps; None: 1 / fps, frames numbered at the rate).  The last frame lasts
    until frame count / fps after the first, so the output's average rate is `fps`.

    Audio: `audio_from` (e.g. the input video) has its first audio stream copied, packets
    unchanged, interleaved with the video as it is written (only the packets up to the current
    frame's time are read, the rest at the end).  Timestamps are kept, so the audio stays in
    sync when the frames' pts are the input's.  A file without audio gives an MP4 without
    audio.  If the audio codec cannot go into an MP4 (e.g. PCM from an AVI), the MP4 has no
    audio: `write.audio_dropped` says why, and `warn(message)` is called with it, if given
    (`warn` is also told of damaged audio, and of timestamps moved to keep them increasing).

    x264's `veryfast` preset encodes ~3x faster than its default (`medium`) at a similar size
    for these mostly static overlays; `crf` is x264's quality (lower = better, 23 its default).
    `threads=1` (x264's default: one per core, plus a lookahead thread) because the caller
    already encodes on a thread of its own next to the explainer: x264's frame threads took
    ~40 % more CPU per 640x360 overlay frame (2.0 against 1.3-1.5 ms) for a ~12 % larger file.
    """
    import av

    from gradvis_export.apps.outputs import remove_stale, temporary, writing

    path = Path(path)
    format = container_format(path)
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs even sizes, got {width}x{height}")
    rate = exact_rate(fps)
    unit = Fraction(time_base) if time_base is not None else 1 / rate
    if unit <= 0:
        raise ValueError(f"a time base must be positive, got {time_base!r}")
    source = _open_audio(audio_from) if audio_from is not None else None
    tmp = temporary(path)
    container = None
    try:
        with writing(path):
            remove_stale(path)  # left by a killed run
            container = av.open(str(tmp), mode="w", format=format)
            stream = container.add_stream("libx264", rate=rate, time_base=unit)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": preset, "crf": str(crf), "threads": str(threads)}
            write = Mp4Write(container, stream, rate, unit, frame_format, warn, path)
            if source is not None:
                write.audio_dropped = _audio_problem(source.streams.audio[0], format)
                if write.audio_dropped is None:
                    write._audio = _AudioCopy(source, container, warn)
                elif warn is not None:
                    warn(f"{str(audio_from)!r}: {write.audio_dropped}; the video has no audio")

        yield write
        with writing(path):
            write._finish()
            container.close()
            os.replace(tmp, path)
    finally:
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
        if tmp.exists():
            with contextlib.suppress(Exception):
                container.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
