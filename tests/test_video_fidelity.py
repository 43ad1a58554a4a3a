"""Exact timing through decode -> mp4_writer: rates as Fractions, per-frame timestamps, audio.

Videos are generated here with PyAV (64x48, 40-60 frames) at 30000/1001, 25 and 12.5 fps, at
a variable rate (irregular pts) and with an AAC sine track; each is decoded with
`decode_frames`, re-encoded with `mp4_writer` (the decoded pts, the input's rate and time base)
and the output read back with PyAV.  Expected values come from what the test generated (its
rates, frame counts, timestamps, audio samples) or from PyAV reading the generated input.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradvis_export.apps.video.decode import decode_frames, probe
from gradvis_export.apps.video.encode import exact_rate, mp4_writer

WIDTH, HEIGHT = 64, 48
SAMPLE_RATE = 44100
# milliseconds between frames of the variable-rate video: irregular, 20 to 90 ms
VFR_STEPS = [int(s) for s in np.random.default_rng(7).integers(20, 91, 59)]
VFR_PTS = [0, *np.cumsum(VFR_STEPS).tolist()]  # 60 frames, time base 1/1000


def image(index: int) -> np.ndarray:
    """A smooth frame (compresses well) that changes over time."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[..., 0] = 40 + xx * 3
    frame[..., 1] = 40 + yy * 3
    frame[..., 2] = (index * 7) % 200
    return frame


def make_video(
    path: Path,
    count: int,
    rate: Fraction,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    audio: str | None = None,
    seconds: float | None = None,
) -> Path:
    """Write `count` frames at `rate` (or at `pts` in `time_base`), with an optional sine
    track of `seconds` encoded with the `audio` codec."""
    container = av.open(str(path), mode="w")
    video = container.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    if time_base is not None:
        video.codec_context.time_base = time_base
    sound = None
    if audio is not None:
        sound = container.add_stream(audio, rate=SAMPLE_RATE)
        sound.layout = "mono"
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
        if pts is not None:
            frame.pts, frame.time_base = pts[i], time_base
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    if sound is not None:
        total = round(seconds * SAMPLE_RATE)
        wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / SAMPLE_RATE)
        fmt = sound.codec_context.format.name
        for start in range(0, total, 1024):
            chunk = wave[None, start : start + 1024]
            if fmt == "s16":
                chunk = (chunk * 32767).astype(np.int16)
            else:
                chunk = chunk.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    container.close()
    return path


#: name -> (frames, rate, pts in ms or None, audio seconds or None)
INPUTS = {
    "ntsc": (60, Fraction(30000, 1001), None, None),
    "pal": (50, Fraction(25), None, None),
    "half": (40, Fraction(25, 2), None, None),
    "vfr": (60, Fraction(25), VFR_PTS, None),
    "audio": (60, Fraction(30000, 1001), None, 60 * 1001 / 30000),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fidelity")
    made = {}
    for name, (count, rate, pts, seconds) in INPUTS.items():
        made[name] = make_video(
            folder / f"{name}.mp4",
            count,
            rate,
            pts=pts,
            time_base=Fraction(1, 1000) if pts is not None else None,
            audio="aac" if seconds is not None else None,
            seconds=seconds,
        )
    return made


def reencode(
    source: Path,
    out: Path,
    audio: bool = True,
    preset: str = "veryfast",
    warnings: list[str] | None = None,
):
    """Decode `source` and write it again with its own rate, time base, pts (and audio)."""
    info = probe(source)
    frames = decode_frames(source, lambda f: (f.to_ndarray(format="rgb24"), f.pts))
    with mp4_writer(
        out,
        info.rate,
        info.width,
        info.height,
        preset=preset,
        time_base=info.time_base,
        audio_from=source if audio else None,
        warn=None if warnings is None else warnings.append,
    ) as write:
        for frame, pts in frames:
            write(frame, pts)
    return write


def read(path: Path) -> dict[str, object]:
    """What PyAV says of a file: video rate, time base, duration, frame times, audio."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        result = {
            "rate": video.average_rate,
            "time_base": video.time_base,
            "duration": float(video.duration * video.time_base),
            "audio": len(container.streams.audio),
        }
        result["times"] = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    if result["audio"]:
        with av.open(str(path)) as container:
            sound = container.streams.audio[0]
            result["audio_codec"] = sound.codec_context.name
            result["audio_duration"] = float(sound.duration * sound.time_base)
            result["audio_packets"] = [bytes(p) for p in container.demux(sound) if p.size]
    return result


# ----------------------------------------------------------------------------- rates


@pytest.mark.parametrize(
    "fps, expected",
    [
        (29.97, Fraction(30000, 1001)),
        (float(Fraction(30000, 1001)), Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (12.5, Fraction(25, 2)),
        (25.0, Fraction(25)),
        (30, Fraction(30)),
        (Fraction(30000, 1001), Fraction(30000, 1001)),
        (np.float64(7.5), Fraction(15, 2)),
    ],
)
def test_exact_rate_recovers_fractions(fps, expected):
    assert exact_rate(fps) == expected


@pytest.mark.parametrize("fps", [0, -25, 0.0, float("nan"), float("inf")])
def test_exact_rate_rejects_non_positive(fps):
    with pytest.raises(ValueError):
        exact_rate(fps)


@pytest.mark.parametrize("fps, expected", [(29.97, Fraction(30000, 1001)), (12.5, Fraction(25, 2))])
def test_float_fps_is_not_rounded(tmp_path, fps, expected):
    """The old writer rounded: 29.97 -> 30, 12.5 -> 12.  Frames without pts are at i / rate."""
    out = tmp_path / "out.mp4"
    with mp4_writer(out, fps, WIDTH, HEIGHT) as write:
        for i in range(40):
            write(image(i))
    got = read(out)
    assert got["rate"] == expected and got["rate"] != round(fps)
    assert len(got["times"]) == 40
    assert got["times"] == pytest.approx([float(i / expected) for i in range(40)], abs=1e-6)
    assert got["duration"] == pytest.approx(float(40 / expected), abs=1e-6)
    assert got["audio"] == 0


# ----------------------------------------------------------------------------- probe


def test_probe_reports_exact_timing(inputs):
    for name, (count, rate, pts, seconds) in INPUTS.items():
        info = probe(inputs[name])
        with av.open(str(inputs[name])) as container:
            time_base = container.streams.video[0].time_base
        assert info.time_base == time_base, name
        assert info.frames == count and info.audio == (seconds is not None), name
        if pts is None:
            assert info.rate == rate and isinstance(info.rate, Fraction), name
            assert info.duration == pytest.approx(float(count / rate), abs=1e-6), name
        else:  # the last frame's end is not in the pts: within one average frame
            assert pts[-1] / 1000 < info.duration < pts[-1] / 1000 + 1 / float(info.rate)
        assert info.fps == float(info.rate), name


def test_video_info_positional_construction_still_works(tmp_path):
    from gradvis_export.apps.video.decode import VideoInfo

    info = VideoInfo(tmp_path, 64, 48, 29.97, 10)
    assert info.rate == Fraction(30000, 1001) and info.time_base is None
    assert info.audio is False and info.duration is None


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["ntsc", "pal", "half"])
def test_constant_rate_round_trip(inputs, tmp_path, name):
    count, rate, _, _ = INPUTS[name]
    out = tmp_path / "out.mp4"
    reencode(inputs[name], out, audio=False)
    got = read(out)
    assert isinstance(got["rate"], Fraction) and got["rate"] == rate
    assert len(got["times"]) == count
    assert abs(got["duration"] - float(count / rate)) < float(1 / rate)
    expected = [float(i / rate) for i in range(count)]
    assert np.abs(np.subtract(got["times"], expected)).max() < float(1 / rate) / 2
    assert got["audio"] == 0
    assert not (tmp_path / ".out.mp4.part").exists()


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])  # B-frames, and none
def test_variable_rate_round_trip_keeps_each_timestamp(inputs, tmp_path, preset):
    count = INPUTS["vfr"][0]
    source = read(inputs["vfr"])
    out = tmp_path / "out.mp4"
    reencode(inputs["vfr"], out, audio=False, preset=preset)
    got = read(out)
    expected = np.array(VFR_PTS) / 1000
    assert source["times"] == pytest.approx(expected.tolist(), abs=1e-9)  # the input itself
    assert got["rate"] == source["rate"]  # exactly, as a Fraction
    assert len(got["times"]) == count
    mean_frame = (VFR_PTS[-1] / 1000) / (count - 1)
    assert np.abs(np.array(got["times"]) - expected).max() < min(VFR_STEPS) / 1000 / 2
    assert abs(got["duration"] - source["duration"]) < mean_frame
    assert VFR_PTS[-1] / 1000 < got["duration"]  # the last frame is shown


def test_audio_is_copied_and_kept_in_sync(inputs, tmp_path):
    count, rate, _, seconds = INPUTS["audio"]
    source = read(inputs["audio"])
    out = tmp_path / "out.mp4"
    warnings: list[str] = []
    write = reencode(inputs["audio"], out, warnings=warnings)
    got = read(out)
    assert write.audio_dropped is None and warnings == []
    assert got["rate"] == rate and len(got["times"]) == count
    assert abs(got["duration"] - float(count / rate)) < float(1 / rate)
    assert got["audio"] == 1 and got["audio_codec"] == "aac"
    assert abs(got["audio_duration"] - seconds) < 0.1
    assert abs(got["audio_duration"] - source["audio_duration"]) < 0.1
    # remuxed, not re-encoded: the very same packets
    assert got["audio_packets"] == source["audio_packets"]

    out = tmp_path / "silent.mp4"
    reencode(inputs["audio"], out, audio=False)
    assert read(out)["audio"] == 0


def test_audio_is_read_as_the_video_is_written(inputs, tmp_path):
    """Only the audio up to the current frame's time (and one packet more) is read."""
    count, rate, _, _ = INPUTS["audio"]
    frames = decode_frames(inputs["audio"], lambda f: (f.to_ndarray(format="rgb24"), f.pts))
    info = probe(inputs["audio"])
    with mp4_writer(
        tmp_path / "out.mp4",
        info.rate,
        WIDTH,
        HEIGHT,
        time_base=info.time_base,
        audio_from=inputs["audio"],
    ) as write:
        for i, (frame, pts) in enumerate(frames):
            write(frame, pts)
            pending = write._audio._pending  # the first packet not muxed yet
            now = i / rate
            packet_time = Fraction(1024, SAMPLE_RATE)
            assert pending is not None
            assert now < pending.dts * pending.time_base <= now + packet_time
    assert read(tmp_path / "out.mp4")["audio"] == 1


def test_audio_that_mp4_cannot_hold_is_dropped_and_reported(tmp_path):
    source = make_video(
        tmp_path / "mulaw.mov", 30, Fraction(25), audio="pcm_mulaw", seconds=30 / 25
    )
    with av.open(str(source)) as container:  # the input does have the audio
        assert container.streams.audio[0].codec_context.name == "pcm_mulaw"
    out = tmp_path / "out.mp4"
    warnings: list[str] = []
    write = reencode(source, out, warnings=warnings)
    got = read(out)
    assert got["audio"] == 0 and len(got["times"]) == 30 and got["rate"] == 25
    assert "pcm_mulaw" in write.audio_dropped
    assert len(warnings) == 1 and "no audio" in warnings[0]


def test_audio_source_without_audio_gives_no_audio(inputs, tmp_path):
    out = tmp_path / "out.mp4"
    warnings: list[str] = []
    write = reencode(inputs["pal"], out, warnings=warnings)
    assert write.audio_dropped is None and warnings == [] and read(out)["audio"] == 0


# ----------------------------------------------------------------------------- kept behaviour


def test_failure_leaves_no_file(inputs, tmp_path):
    out = tmp_path / "out.mp4"
    with (
        pytest.raises(RuntimeError),
        mp4_writer(out, 25, WIDTH, HEIGHT, audio_from=inputs["audio"]) as write,
    ):
        write(image(0))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="even"), mp4_writer(tmp_path / "o.mp4", 25, 63, 48):
        pass


def test_decreasing_timestamps_are_moved_and_reported(tmp_path):
    out = tmp_path / "out.mp4"
    warnings: list[str] = []
    pts = [0, 40, 80, 80, 60, 200]  # a damaged input: a repeat and a step back
    with mp4_writer(out, 25, WIDTH, HEIGHT, time_base=Fraction(1, 1000), warn=warnings.append) as w:
        for i, p in enumerate(pts):
            w(image(i), p)
    got = read(out)
    assert got["times"] == pytest.approx([0, 0.04, 0.08, 0.081, 0.082, 0.2], abs=1e-3)
    assert len(warnings) == 1


# ----------------------------------------------------------------------------- the video job


class _Blank:
    """An image backend: a zero map, fixed logits (the job's timing is what is checked)."""

    def __call__(self, batch, target):
        n = batch.shape[0]
        return {
            "logits": np.zeros((n, 3), np.float32),
            "heatmap": np.zeros((n, 16, 16), np.float32),
        }


@pytest.mark.parametrize("name", list(INPUTS))
def test_the_video_job_keeps_rate_count_duration_and_audio(inputs, tmp_path, name):
    """`explain_video` end to end: the output has the input's exact rate, every frame at its
    input time (within half a frame), the duration within one frame, and the audio."""
    from gradvis_export.apps.video.pipeline import VideoOptions, explain_video

    count, rate, pts, seconds = INPUTS[name]
    out = tmp_path / "o.mp4"
    options = VideoOptions(clip_len=8, stride=8, size=16, per_frame=True)
    explain_video(inputs[name], _Blank(), options, out=out, progress=False)
    source, got = read(inputs[name]), read(out)
    assert got["rate"] == source["rate"]  # the average rate, as PyAV reads the input
    if pts is None:
        assert got["rate"] == rate
    assert len(got["times"]) == count
    frame = 1 / float(source["rate"])
    assert abs(got["duration"] - source["duration"]) <= frame
    if pts is not None:  # variable rate: each frame where it was
        want = [p / 1000 for p in pts]
        assert max(abs(a - b) for a, b in zip(sorted(got["times"]), want)) < frame / 2
    assert got["audio"] == (1 if seconds is not None else 0)
    if seconds is not None:
        assert abs(got["audio_duration"] - source["audio_duration"]) < 0.1
        assert got["audio_packets"] == source["audio_packets"]  # copied, not re-encoded
        explain_video(inputs[name], _Blank(), VideoOptions(**{**options.__dict__, "audio": False}),
                      out=out, progress=False)  # fmt: skip
        assert read(out)["audio"] == 0
