"""The video job: decode -> sliding clips -> explain -> per-frame average -> overlay -> encode.

Videos are generated here with PyAV.  Most pipeline tests use a fake backend (a callable
returning a synthetic map and fixed logits), so no network runs; the real X3D-XS runs only in
the CLI tests and in the one uint8-artifact export (shared through a module fixture).
Expectations (clip windows, colours, probabilities) are computed independently in the tests.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# the local runtime (an installed gradvis_runtime may be another checkout's)
sys.path.insert(0, str(ROOT / "runtime"))
sys.path.insert(0, str(ROOT))

from videos import decode, encode

import gradvis_export as gv
import gradvis_runtime
from gradvis_export.apps import cli, models
from gradvis_export.apps.video.clips import FrameAverager, SlidingClips
from gradvis_export.apps.video.overlay import (
    draw_boxes_yuv420,
    frame_boxes,
    overlay,
    overlay_yuv420,
    upsample_map,
)
from gradvis_export.apps.video.pipeline import VideoOptions, explain_video
from gradvis_export.core.preprocess import UInt8Input
from gradvis_export.errors import InputError, VideoError

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

# Independent reference values of the jet-like colormap's ends (blue -> ... -> dark red).
HOT_RGB = np.array([0.5, 0.0, 0.0]) * 255.0  # colormap(1)
# The whole map: these anchor colours at 0, 0.2, ..., 1, linear in between.
ANCHORS = np.array(
    [[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]], np.float64
)


def reference_overlay(frame: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha h) frame + alpha h colour(h), rounded; colour by interpolating ANCHORS."""
    h = np.clip(heat.astype(np.float64), 0, 1)
    colour = np.stack([np.interp(h, np.linspace(0, 1, 6), ANCHORS[:, c]) for c in range(3)], -1)
    w = alpha * h[..., None]
    return np.clip(np.round((1 - w) * frame + w * colour * 255.0), 0, 255)


# ----------------------------------------------------------------------------- helpers


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """A smooth frame (compresses well) that changes over time."""
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = 40 + xx * 160 // max(width - 1, 1)
    frame[..., 1] = 40 + yy * 160 // max(height - 1, 1)
    frame[..., 2] = 60 + (index * 5) % 120
    return frame


def write_video(
    path: Path,
    frames: int,
    width: int,
    height: int,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gray: bool = False,
) -> Path:
    images = (pattern(i, width, height) for i in range(frames))
    if gray:
        images = (rgb[..., 0] for rgb in images)
    return encode(path, images, width, height, codec=codec, pix_fmt=pix_fmt)


def expected_windows(n: int, clip_len: int, stride: int) -> list[tuple[int, list[int]]]:
    """(start, frames it averages into) per clip: starts 0, stride, ... while a whole clip
    fits; then one end-aligned window for the frames none covered (padded if n < clip_len)."""
    windows = []
    start = 0
    covered = 0
    while start + clip_len <= n:
        windows.append((start, list(range(start, start + clip_len))))
        covered = start + clip_len
        start += stride
    if covered < n:
        last = max(n - clip_len, 0)
        windows.append((last, list(range(covered, n))))
    return windows


def expected_clips_per_frame(n: int, clip_len: int, stride: int) -> list[list[int]]:
    per_frame: list[list[int]] = [[] for _ in range(n)]
    for index, (_, frames) in enumerate(expected_windows(n, clip_len, stride)):
        for f in frames:
            per_frame[f].append(index)
    return per_frame


class FakeBackend:
    """clip -> fixed logits and a synthetic (1, T, S, S) map; counts its calls (= clip index)."""

    def __init__(self, size, clip_len, heat=None, logits=None, fail_after=None, error=None):
        self.size, self.clip_len = size, clip_len
        self.heat = heat  # callable(call index) -> (S, S) map, default: left half hot
        self.logits = logits  # callable(call index) -> (K,) logits
        self.fail_after, self.error = fail_after, error
        self.calls = 0
        self.shapes = []

    def __call__(self, clip: np.ndarray, target: int) -> dict[str, np.ndarray]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise self.error
        k = self.calls
        self.calls += 1
        self.shapes.append(clip.shape)
        if self.heat is None:
            m = np.zeros((self.size, self.size), np.float32)
            m[:, : self.size // 2] = 1.0
        else:
            m = np.asarray(self.heat(k), np.float32)
        heatmap = np.broadcast_to(m, (1, self.clip_len, self.size, self.size)).copy()
        if self.logits is None:
            logits = np.array([0.1, 2.0, 0.3, -1.0], np.float32)
        else:
            logits = np.asarray(self.logits(k), np.float32)
        return {"logits": logits[None], "heatmap": heatmap}


class ByContentBackend:
    """Like FakeBackend, but safe to call from several threads at once (workers > 1): which clip
    it got is read off the clip itself -- the blue level of its first frame, 60 + 5 * frame
    (`pattern`, first 24 frames; the nearest clip start) -- not from the order of the calls, which then is not the
    clips' order.  Even clips answer late, so that calls finish out of order; it records the
    most calls that ran at once."""

    def __init__(self, size, clip_len, starts, heat, logits, mean=0.45, std=0.225):
        self.size, self.clip_len, self.starts = size, clip_len, starts
        self.heat, self.logits, self.mean, self.std = heat, logits, mean, std
        self.lock = threading.Lock()
        self.active = self.most = 0

    def __call__(self, clip: np.ndarray, target: int) -> dict[str, np.ndarray]:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            blue = (float(clip[0, 2, 0].mean()) * self.std + self.mean) * 255.0
            # the nearest clip start: starts lie >= 2 frames = 10 levels apart, H.264 moves
            # the level by a few
            k = int(np.argmin(np.abs(np.asarray(self.starts) - (blue - 60) / 5)))
            if k % 2 == 0:
                time.sleep(0.03)
            m = np.asarray(self.heat(k), np.float32)
            heatmap = np.broadcast_to(m, (1, self.clip_len, self.size, self.size)).copy()
            return {"logits": np.asarray(self.logits(k), np.float32)[None], "heatmap": heatmap}
        finally:
            with self.lock:
                self.active -= 1


def options(clip_len=4, stride=2, size=16, **kw) -> VideoOptions:
    """The job these tests check: the frame squashed to the model's square (the map covers
    the whole frame) and no label drawn over the pixels they compare (tests/test_own_model.py
    checks crop, pad and the label)."""
    kw = {"resize": "squash", "label": False, **kw}
    return VideoOptions(clip_len=clip_len, stride=stride, size=size, **kw)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def video_97(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "in.mp4", 97, 320, 180)


# ----------------------------------------------------------------------------- 1. frames, size


def test_output_has_every_frame_at_input_size(video_97, tmp_path):
    out, gif, side = tmp_path / "o.mp4", tmp_path / "o.gif", tmp_path / "o.json"
    backend = FakeBackend(16, 4)
    summary = explain_video(
        video_97, backend, options(), out=out, gif=gif, sidecar=side, progress=False
    )
    decoded = decode(out)
    assert decoded.shape == (97, 180, 320, 3)
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert abs(float(stream.average_rate) - 30) < 0.5
    assert summary.frames == 97
    # the backend got normalised float clips of (1, 3, T, S, S)
    assert set(backend.shapes) == {(1, 3, 4, 16, 16)}
    # clips: starts 0,2,...,92 (47) + one end-aligned window for frame 96
    assert backend.calls == summary.clips == len(expected_windows(97, 4, 2)) == 48
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 97
        assert im.size == (320, 180)
    assert json.loads(side.read_text())["width"] == 320


# ----------------------------------------------------------------------------- 2. blending


def test_overlay_function_is_exact_alpha_blend():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    heat = np.zeros((6, 8), np.float32)
    heat[:, :4] = 1.0
    for alpha in (0.0, 0.3, 0.5, 1.0):
        got = overlay(frame, heat, alpha).astype(np.float64)
        want_hot = (1 - alpha) * frame[:, :4] + alpha * HOT_RGB  # opacity alpha * map
        np.testing.assert_allclose(got[:, :4], np.clip(np.round(want_hot), 0, 255), atol=0.51)
        np.testing.assert_array_equal(got[:, 4:], frame[:, 4:])  # map 0: the frame, untouched
    np.testing.assert_array_equal(overlay(frame, heat, 0.0), frame)  # alpha 0: untouched
    smooth = rng.random((6, 8)).astype(np.float32)
    np.testing.assert_allclose(
        overlay(frame, smooth, 0.7).astype(np.float64),
        reference_overlay(frame, smooth, 0.7),
        atol=1.0,  # a rounding tie may fall either way
    )
    half = overlay(frame, np.full((6, 8), 0.5, np.float32), 0.8).astype(np.float64)
    want = (1 - 0.4) * frame + 0.4 * np.array([127.5, 255, 127.5])
    np.testing.assert_allclose(half, np.clip(np.round(want), 0, 255), atol=0.51)
    # mid value 0.5 is the middle of the jet-like map: between cyan and yellow -> (0.5, 1, 0.5),
    # at opacity 1 * 0.5 over black
    mid = overlay(np.zeros((1, 1, 3), np.uint8), np.full((1, 1), 0.5, np.float32), 1.0)
    np.testing.assert_allclose(mid[0, 0], 0.5 * np.array([127.5, 255, 127.5]), atol=1)
    with pytest.raises(ValueError):
        overlay(frame, np.zeros((5, 8), np.float32))


# BT.601 limited range, as in Rec. ITU-R BT.601 (Y in 16..235, U/V in 16..240 around 128)
KR, KB = 0.299, 0.114
RGB_TO_YUV = (
    np.array(
        [
            [KR, 1 - KR - KB, KB],
            [-0.5 * KR / (1 - KB), -0.5 * (1 - KR - KB) / (1 - KB), 0.5],
            [0.5, -0.5 * (1 - KR - KB) / (1 - KR), -0.5 * KB / (1 - KR)],
        ]
    )
    * np.array([[219.0], [224.0], [224.0]])
    / 255.0
)


def test_yuv420_overlay_equals_the_rgb_blend_converted():
    """Blending the planes equals: planes -> RGB (BT.601), alpha blend with the colormap,
    -> planes again; the map is given per chroma pixel and covers each 2 x 2 luma block."""
    rng = np.random.default_rng(1)
    height, width = 6, 10
    y = rng.integers(16, 236, (height, width)).astype(np.float64)
    u, v = (rng.integers(16, 241, (height // 2, width // 2)).astype(np.float64) for _ in "uv")
    # PyAV's yuv420p layout: the three planes one after the other, viewed as (H * 3/2, W)
    flat = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    planes = flat.astype(np.uint8).reshape(height * 3 // 2, width)
    q = rng.integers(0, 256, (height // 2, width // 2)).astype(np.uint8)
    q[0, 0] = 0
    yuv_to_rgb = np.linalg.inv(RGB_TO_YUV)
    offset = np.array([16.0, 128.0, 128.0])
    for alpha in (0.3, 0.8):
        got = overlay_yuv420(planes, q, alpha).astype(np.float64)
        h = np.repeat(np.repeat(q / 255.0, 2, 0), 2, 1)  # per luma pixel
        full_u, full_v = (np.repeat(np.repeat(c, 2, 0), 2, 1) for c in (u, v))
        rgb = (np.stack([y, full_u, full_v], -1) - offset) @ yuv_to_rgb.T  # unclipped
        colour = np.stack(
            [np.interp(h, np.linspace(0, 1, 6), ANCHORS[:, c]) * 255.0 for c in range(3)], -1
        )
        w = alpha * h[..., None]
        blended = (1 - w) * rgb + w * colour
        want = blended @ RGB_TO_YUV.T + offset
        got_flat = got.ravel()
        np.testing.assert_allclose(got[:height], np.clip(want[..., 0], 0, 255), atol=0.51)
        # chroma: the 2 x 2 block's values are equal here (same chroma, same map)
        quarter = height * width // 4
        for index in (1, 2):
            start = height * width + (index - 1) * quarter
            want_c = np.clip(want[::2, ::2, index], 0, 255)
            got_c = got_flat[start : start + quarter].reshape(want_c.shape)
            np.testing.assert_allclose(got_c, want_c, atol=0.51)
    # map 0: the planes untouched, bit for bit
    zero = np.zeros_like(q)
    np.testing.assert_array_equal(overlay_yuv420(planes, zero, 0.9), planes)
    with pytest.raises(ValueError, match="uint8 of shape"):
        overlay_yuv420(planes, q.astype(np.float32), 0.5)
    with pytest.raises(ValueError, match="even size"):
        overlay_yuv420(planes[:-1], q, 0.5)


@pytest.mark.parametrize(
    "src,dst", [((182, 182), (180, 320)), ((7, 5), (49, 81)), ((9, 9), (4, 6))]
)
def test_upsample_map_is_bilinear_like_torch(src, dst):
    values = np.random.default_rng(2).integers(0, 256, src).astype(np.uint8)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(values).float()[None, None], size=dst, mode="bilinear"
    )[0, 0].numpy()
    got = upsample_map(values, *dst)
    assert got.dtype == np.uint8 and got.shape == dst
    assert np.abs(got - want).max() <= 0.51  # rounded to the nearest level (float32 sums)


def test_frame_boxes_of_a_large_map_are_pooled_but_cover_the_region():
    """A 182 px map is labelled at <= 64 cells per side: the box still covers the hot block
    and exceeds it by less than one pooled cell (3 map pixels = 3 * 640 / 182 frame px); a
    one-pixel peak off the pooling grid survives (max-pooling, not subsampling)."""
    heat = np.zeros((182, 182), np.float32)
    heat[40:71, 100:150] = 1.0
    heat[10, 11] = 0.9
    (x1, y1, x2, y2, peak), (px1, py1, px2, py2, small_peak) = frame_boxes(heat, 640, 360)
    sx, sy = 640 / 182, 360 / 182
    assert x1 <= 100 * sx and y1 <= 40 * sy and x2 >= 150 * sx and y2 >= 71 * sy
    assert x1 > (100 - 3) * sx - 1 and y1 > (40 - 3) * sy - 1
    assert x2 < (150 + 3) * sx + 1 and y2 < (71 + 3) * sy + 1
    assert peak == 1.0 and small_peak == pytest.approx(0.9)
    assert px1 <= 11 * sx < px2 and py1 <= 10 * sy < py2


def test_yuv420_boxes_are_white_on_even_pixels():
    planes = np.full((12, 16), 128, np.uint8)
    planes[:8] = 16  # black: Y 16, U = V = 128
    out = draw_boxes_yuv420(planes, [[3, 1, 11, 7, 0.9]], width=2)
    luma = out[:8]
    # edges snapped outwards to even pixels: x 2..12, y 0..8, two pixels wide
    assert (luma[0:2, 2:12] == 235).all() and (luma[6:8, 2:12] == 235).all()
    assert (luma[:, 2:4] == 235).all() and (luma[:, 10:12] == 235).all()
    assert (luma[2:6, 4:10] == 16).all() and (luma[:, :2] == 16).all()
    assert (out[8:] == 128).all()  # white has no chroma


def test_pipeline_blends_hot_and_cold_regions(video_97, tmp_path):
    out = tmp_path / "o.mp4"
    alpha = 0.5
    explain_video(video_97, FakeBackend(16, 4), options(alpha=alpha), out=out, progress=False)
    src = decode(video_97).astype(np.float64)
    got = decode(out).astype(np.float64)
    # the map (16 px, left half 1) upsampled to 320: exactly 1 for x < 150, exactly 0 for x >= 170
    hot, cold = np.s_[:, 8:172, 8:140], np.s_[:, 8:172, 180:312]
    want_hot = (1 - alpha) * src[hot] + alpha * HOT_RGB
    assert np.abs(got[hot] - want_hot).mean() < 4
    # where the map is 0 the output is the input (up to H.264 re-encoding)
    assert np.abs(got[cold] - src[cold]).mean() < 4
    # and the hot side differs clearly from the input (the overlay is really there), red-shifted
    assert np.abs(got[hot] - src[hot]).mean() > 20
    assert (got[hot][..., 0] - (1 - alpha) * src[hot][..., 0]).mean() > 50


def test_pipeline_planes_of_a_height_not_divisible_by_four(tmp_path):
    """162 x 98: the chroma planes start mid-row in the yuv420p layout; the map's cold half
    must come back as the input and the hot half as the blend."""
    video = write_video(tmp_path / "in.mp4", 6, 162, 98)
    out = tmp_path / "o.mp4"
    explain_video(video, FakeBackend(16, 4), options(alpha=1.0), out=out, progress=False)
    src, got = decode(video).astype(np.float64), decode(out).astype(np.float64)
    assert got.shape == src.shape == (6, 98, 162, 3)
    cold, hot = np.s_[:, 4:94, 96:158], np.s_[:, 4:94, 4:66]
    assert np.abs(got[cold] - src[cold]).mean() < 4
    assert np.abs(got[hot] - HOT_RGB).mean() < 6  # opacity 1 where the map is 1: the colour


# ----------------------------------------------------------------------------- 3. averaging


@pytest.mark.parametrize(
    "n,clip_len,stride",
    [
        (12, 4, 4),  # windows tile exactly
        (10, 4, 2),  # overlapping, tiles exactly (0,2,4,6)
        (13, 4, 4),  # stride == clip: an end window for frame 12
        (97, 4, 2),  # overlapping + an end window for frame 96
        (20, 8, 3),  # overlapping + an end window
        (3, 4, 2),  # shorter than a clip: one padded window
    ],
)
def test_sliding_clips_average_maps_of_their_clips(n, clip_len, stride):
    clips = SlidingClips(clip_len, stride)
    averager = FrameAverager()
    popped = []
    starts = []

    def run(clip):
        starts.append(clip.start)
        assert len(clip.items) == clip_len
        # the clip really holds frames start..start+valid-1 (padded with the last one)
        real = list(range(clip.start, clip.start + clip.valid))
        assert clip.items == real + [real[-1]] * (clip_len - clip.valid)
        for f in clip.frames():
            averager.add(f, {"map": np.full((2, 2), float(clip.index))}, clip.index)

    for i in range(n):
        for clip in clips.push(i):
            run(clip)
        popped += averager.pop_before(clips.final_before)
    for clip in clips.finish():
        run(clip)
    popped += averager.pop_before(clips.count)

    windows = expected_windows(n, clip_len, stride)
    assert starts == [s for s, _ in windows]
    want = expected_clips_per_frame(n, clip_len, stride)
    assert [f for f, _, _ in popped] == list(range(n))
    for f, values, clip_ids in popped:
        assert clip_ids == want[f], f"frame {f}"
        np.testing.assert_allclose(values["map"], np.mean(want[f]), err_msg=f"frame {f}")
    assert clips.padded == max(clip_len - n, 0)


def test_sliding_clips_rejects_bad_stride():
    with pytest.raises(ValueError):
        SlidingClips(4, 5)
    with pytest.raises(ValueError):
        SlidingClips(4, 0)
    with pytest.raises(ValueError):
        SlidingClips(0, 1)


# ----------------------------------------------------------------------------- 4. JSON


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("n,clip_len,stride", [(24, 4, 4), (26, 4, 2), (25, 6, 3)])
def test_json_sidecar_fields_and_averaged_scores(tmp_path, n, clip_len, stride, workers):
    """Per-frame clips, averaged probabilities and boxes against the formulas; with workers > 1
    the clips are explained side by side and finish out of order, and must land the same."""
    video = write_video(tmp_path / "in.mp4", n, 96, 64)
    side = tmp_path / "o.json"

    def logits(k):  # class 2 wins early, class 0 later: averages change per frame
        return np.array([0.15 * k, 0.0, 2.0 - 0.1 * k], np.float32)

    def heat(k):  # a hot block in the top-left quarter of the 16x16 map, 0 elsewhere
        m = np.zeros((16, 16), np.float32)
        m[:6, :6] = 1.0
        return m

    starts = [start for start, _ in expected_windows(n, clip_len, stride)]
    backend = ByContentBackend(16, clip_len, starts, heat=heat, logits=logits)
    labels = ["a", "b", "c"]
    explain_video(
        video,
        backend,
        options(clip_len, stride, labels=labels, workers=workers),
        sidecar=side,
        progress=False,
        metadata={"method": "fake"},
    )
    assert backend.most == 1 if workers == 1 else 2 <= backend.most <= workers
    data = json.loads(side.read_text())
    assert data["width"] == 96 and data["height"] == 64
    assert data["clip_len"] == clip_len and data["stride"] == stride and data["size"] == 16
    assert data["method"] == "fake"
    assert abs(data["fps"] - 30) < 0.5
    frames = data["frames"]
    assert [f["frame"] for f in frames] == list(range(n))

    want = expected_clips_per_frame(n, clip_len, stride)
    windows = expected_windows(n, clip_len, stride)
    assert [c["start"] for c in data["clips"]] == [s for s, _ in windows]
    assert [c["index"] for c in data["clips"]] == list(range(len(windows)))
    for c in data["clips"]:
        p = softmax(logits(c["index"]).astype(np.float64))
        assert c["class"] == int(p.argmax())
        assert c["score"] == pytest.approx(p.max(), abs=1e-5)
    for entry, clip_ids in zip(frames, want):
        assert entry["clips"] == clip_ids, f"frame {entry['frame']}"
        probs = np.mean([softmax(logits(k).astype(np.float64)) for k in clip_ids], axis=0)
        assert entry["class"] == int(probs.argmax())
        assert entry["label"] == labels[entry["class"]]
        assert entry["score"] == pytest.approx(probs.max(), abs=1e-5)
        assert 0.0 <= entry["score"] <= 1.0
        assert entry["target"] == -1
        # the hot block (6/16 of each side) upsampled: about x < 36, y < 24 of 96x64
        assert len(entry["boxes"]) == 1
        x1, y1, x2, y2, peak = entry["boxes"][0]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 64
        assert (x1, y1) == (0, 0)
        assert 30 <= x2 <= 42 and 20 <= y2 <= 28
        assert peak == pytest.approx(1.0)


def test_fixed_target_and_argmax_of_fixed_logits(video_97, tmp_path):
    side = tmp_path / "o.json"
    seen = []

    class Recording(FakeBackend):
        def __call__(self, clip, target):
            seen.append(target)
            return super().__call__(clip, target)

    explain_video(video_97, Recording(16, 4), options(target=3), sidecar=side, progress=False)
    data = json.loads(side.read_text())
    assert set(seen) == {3}
    assert data["target"] == 3
    p = softmax(np.array([0.1, 2.0, 0.3, -1.0]))
    assert {f["class"] for f in data["frames"]} == {1}
    for f in data["frames"]:
        assert f["target"] == 3
        assert f["score"] == pytest.approx(p[1], abs=1e-5)


# ----------------------------------------------------------------------------- 5. bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        explain_video(
            tmp_path / "nope.mp4",
            FakeBackend(16, 4),
            options(),
            sidecar=tmp_path / "o.json",
            progress=False,
        )
    assert not (tmp_path / "o.json").exists()


def test_text_file_renamed_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="not a video"):
        explain_video(fake, FakeBackend(16, 4), options(), out=tmp_path / "o.mp4", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_empty_and_truncated_files(tmp_path, video_97):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError):
        explain_video(empty, FakeBackend(16, 4), options(), out=tmp_path / "o.mp4", progress=False)
    # a folder is not a video either
    with pytest.raises(VideoError, match="folder"):
        explain_video(
            tmp_path, FakeBackend(16, 4), options(), out=tmp_path / "o.mp4", progress=False
        )
    # only the first bytes of a real MP4 (header, no decodable frame)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video_97.read_bytes()[:48])
    with pytest.raises(VideoError):
        explain_video(cut, FakeBackend(16, 4), options(), out=tmp_path / "o.mp4", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "empty.mp4"]


def test_video_without_frames(tmp_path):
    """A container with a video stream but no frame at all."""
    path = tmp_path / "noframes.mkv"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("ffv1", rate=30)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
    if not path.exists():  # this muxer writes nothing without frames: then an empty file
        path.write_bytes(b"")
    with pytest.raises(VideoError):
        explain_video(
            path,
            FakeBackend(16, 4),
            options(),
            out=tmp_path / "o.mp4",
            sidecar=tmp_path / "o.json",
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noframes.mkv"]


def test_video_shorter_than_a_clip_is_padded_with_a_warning(tmp_path):
    video = write_video(tmp_path / "short.mp4", 3, 96, 64)
    warnings = []
    backend = FakeBackend(16, 8)
    summary = explain_video(
        video,
        backend,
        options(clip_len=8, stride=4),
        out=tmp_path / "o.mp4",
        sidecar=tmp_path / "o.json",
        progress=False,
        warn=warnings.append,
    )
    assert len(warnings) == 1 and "pad" in warnings[0] and "3" in warnings[0]
    assert summary.padded == 5 and summary.clips == 1 and backend.calls == 1
    assert decode(tmp_path / "o.mp4").shape == (3, 64, 96, 3)
    data = json.loads((tmp_path / "o.json").read_text())
    assert [f["frame"] for f in data["frames"]] == [0, 1, 2]
    assert [f["clips"] for f in data["frames"]] == [[0], [0], [0]]
    assert data["clips"][0]["frames"] == 3 and data["clips"][0]["padded"] == 5


def test_odd_size_video_is_padded_to_even_in_mp4_only(tmp_path):
    video = write_video(tmp_path / "odd.mkv", 9, 101, 75, codec="ffv1", pix_fmt="yuv444p")
    out, side = tmp_path / "o.mp4", tmp_path / "o.json"
    explain_video(video, FakeBackend(16, 4), options(), out=out, sidecar=side, progress=False)
    decoded = decode(out)
    assert decoded.shape == (9, 76, 102, 3)  # H.264 yuv420p needs even sizes: one edge pixel
    # the padding repeats the edge: last column/row equal their neighbours (up to loss)
    assert np.abs(decoded[:, :, -1].astype(int) - decoded[:, :, -2]).mean() < 6
    assert np.abs(decoded[:, -1].astype(int) - decoded[:, -2]).mean() < 6
    data = json.loads(side.read_text())
    assert (data["width"], data["height"]) == (101, 75)
    assert [f["frame"] for f in data["frames"]] == list(range(9))
    for f in data["frames"]:
        assert len(f["boxes"]) == 1  # the hot left half
        for x1, y1, x2, y2, _ in f["boxes"]:
            assert 0 <= x1 < x2 <= 101 and 0 <= y1 < y2 <= 75


def test_odd_size_video_gif_keeps_the_original_size(tmp_path):
    """Only H.264 needs even sizes; the GIF (and JSON) describe the 101x75 frames as they are."""
    from PIL import Image

    video = write_video(tmp_path / "odd.mkv", 5, 101, 75, codec="ffv1", pix_fmt="yuv444p")
    gif = tmp_path / "o.gif"
    explain_video(video, FakeBackend(16, 4), options(), gif=gif, out=tmp_path / "o.mp4",
                  progress=False)  # fmt: skip
    with Image.open(gif) as im:
        assert im.n_frames == 5
        assert im.size == (101, 75)


def test_grayscale_video_works(tmp_path):
    video = write_video(tmp_path / "gray.mkv", 10, 64, 48, codec="ffv1", pix_fmt="gray", gray=True)
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "gray"
    backend = FakeBackend(16, 4)
    out = tmp_path / "o.mp4"
    summary = explain_video(video, backend, options(), out=out, progress=False)
    assert summary.frames == 10
    assert decode(out).shape == (10, 48, 64, 3)
    assert set(backend.shapes) == {(1, 3, 4, 16, 16)}


def test_output_never_overwrites_input(video_97, tmp_path):
    before = video_97.read_bytes()
    for kw in ({"out": video_97}, {"gif": video_97}, {"sidecar": video_97}):
        with pytest.raises(InputError, match="input"):
            explain_video(video_97, FakeBackend(16, 4), options(), progress=False, **kw)
    # the same file through another spelling of the path
    alias = video_97.parent / "." / video_97.name
    with pytest.raises(InputError):
        explain_video(video_97, FakeBackend(16, 4), options(), out=alias, progress=False)
    assert video_97.read_bytes() == before
    code = cli.main(
        ["explain", str(video_97), "--out", str(video_97), "--size", "64", "--clip-len", "4",
         "--quiet"]
    )  # fmt: skip
    assert code == 2
    assert video_97.read_bytes() == before


def test_nothing_to_write_and_missing_output_folder(video_97, tmp_path):
    with pytest.raises(InputError):
        explain_video(video_97, FakeBackend(16, 4), options(), progress=False)
    with pytest.raises(InputError, match="folder"):
        explain_video(
            video_97, FakeBackend(16, 4), options(), out=tmp_path / "no" / "o.mp4", progress=False
        )


# ----------------------------------------------------------------------------- 6. interruption


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("backend died")])
def test_interrupted_run_leaves_no_output(video_97, tmp_path, error):
    backend = FakeBackend(16, 4, fail_after=10, error=error)
    with pytest.raises(type(error)):
        explain_video(
            video_97,
            backend,
            options(),
            out=tmp_path / "o.mp4",
            gif=tmp_path / "o.gif",
            sidecar=tmp_path / "o.json",
            progress=False,
        )
    assert backend.calls == 10  # it did get going: frames were rendered before the failure
    assert list(tmp_path.iterdir()) == []  # no outputs and no .part files


def test_failure_keeps_an_existing_output_intact(video_97, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        explain_video(
            video_97,
            FakeBackend(16, 4, fail_after=5, error=RuntimeError("x")),
            options(),
            out=out,
            progress=False,
        )
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


def test_render_thread_failure_is_raised_and_leaves_no_output(video_97, tmp_path, monkeypatch):
    """An error while rendering (on the render thread) stops the job with that error."""
    from gradvis_export.apps.video import pipeline

    calls = []

    def failing_overlay(frame, heat, alpha):
        calls.append(1)
        if len(calls) > 20:
            raise MemoryError("overlay failed")
        return frame

    monkeypatch.setattr(pipeline, "overlay", failing_overlay)  # odd sizes and the panel
    monkeypatch.setattr(pipeline, "overlay_yuv420", failing_overlay)  # even sizes (yuv420p)
    with pytest.raises(MemoryError, match="overlay failed"):
        explain_video(
            video_97,
            FakeBackend(16, 4),
            options(),
            out=tmp_path / "o.mp4",
            sidecar=tmp_path / "o.json",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_ordered_worker_runs_in_order_and_reraises():
    from gradvis_export.apps.video.worker import OrderedWorker

    seen = []
    with OrderedWorker(depth=2) as worker:
        for i in range(50):
            worker.submit(seen.append, i)
    assert seen == list(range(50))

    def boom(i):
        if i == 3:
            raise ValueError("item 3")
        seen.append(i)

    seen.clear()
    with pytest.raises(ValueError, match="item 3"):
        with OrderedWorker(depth=1) as worker:
            for i in range(100):
                worker.submit(boom, i)
    assert seen == [0, 1, 2]  # nothing after the failure ran


def test_in_order_pool_returns_results_in_order_bounded_and_reraises():
    from gradvis_export.apps.video.worker import InOrderPool

    lock, running, most = threading.Lock(), [0], [0]

    def slow_square(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        with lock:
            running[0] -= 1
        return i * i, threading.get_ident()

    for workers in (1, 2, 4):
        got = []
        with InOrderPool(slow_square, workers) as pool:
            for i in range(40):
                done = pool.submit(i)
                assert len(pool.pending) <= workers + 1  # bounded: memory stays flat
                got += done
            got += pool.drain()
        assert [item for item, _ in got] == list(range(40))
        assert [result for _, (result, _) in got] == [i * i for i in range(40)]
        threads = {ident for _, (_, ident) in got}
        if workers == 1:  # in the caller's thread, one at a time
            assert threads == {threading.get_ident()} and most[0] == 1
        else:
            assert threading.get_ident() not in threads and 2 <= most[0] <= workers
        most[0] = 0

    def boom(i):
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        with InOrderPool(boom, 2) as pool:
            for i in range(10):
                got += pool.submit(i)
            got += pool.drain()
    assert [item for item, _ in got] == [0, 1, 2]  # what came before the failure, in order
    with pytest.raises(ValueError, match="workers"):
        InOrderPool(boom, 0)


def test_prefetch_keeps_order_errors_and_stops_early():
    from gradvis_export.apps.video.worker import Prefetch

    assert list(Prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield from range(5)
        raise VideoError("damaged after frame 5")

    got = []
    with pytest.raises(VideoError, match="frame 5"):
        for item in Prefetch(failing(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]

    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    with Prefetch(endless(), depth=4) as items:
        assert [next(items) for _ in range(10)] == list(range(10))
    assert closed == [True]  # the producer was closed (a decoder releases its file)


# ----------------------------------------------------------------------------- 7. uint8 artifact


@pytest.fixture(scope="module")
def uint8_artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = models.build("x3d_xs", num_classes=5, clip_len=4, size=64)
    eager = gv.GradCAM(model, "blocks.4")
    wrapped = UInt8Input(eager, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), overlay=0.6)
    example = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8)
    path = gv.export(wrapped, example, tmp_path_factory.mktemp("art") / "u8.onnx")
    return path, eager


def test_artifact_backend_stops_onnxruntime_spinning(uint8_artifact, monkeypatch):
    """The video job's ONNX session is built with idle threads asleep (spinning ones take the
    cores the decode and render threads need); spin=True keeps onnxruntime's default."""
    import onnxruntime as ort

    from gradvis_export.apps.video.backends import ArtifactBackend

    seen = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: seen.append(a[1]) or real(*a, **k))
    ArtifactBackend(uint8_artifact[0], threads=2)
    assert seen[-1].get_session_config_entry("session.intra_op.allow_spinning") == "0"
    ArtifactBackend(uint8_artifact[0], threads=2, spin=True)
    with pytest.raises(RuntimeError, match="does not have configuration"):
        seen[-1].get_session_config_entry("session.intra_op.allow_spinning")


@pytest.mark.parametrize("batch", [1, 3])
def test_uint8_artifact_matches_eager_float(uint8_artifact, batch):
    path, eager = uint8_artifact
    runtime = gradvis_runtime.load(path)
    rng = np.random.default_rng(batch)
    frames = rng.integers(0, 256, (batch, 4, 64, 64, 3), dtype=np.uint8)
    x = (torch.from_numpy(frames).float() / 255.0 - 0.45) / 0.225
    x = x.permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, H, W)
    # random weights: Grad-CAM of some classes is all zero (ReLU); explain a class whose map
    # is not, so the comparison means something (and -1 = argmax for the second sample)
    peaks = torch.stack(
        [eager(x, torch.full((batch,), c)).heatmap.amax(dim=(1, 2, 3)) for c in range(5)]
    )
    target = peaks.argmax(dim=0).numpy().astype(np.int64)
    if batch > 1:
        target[1] = -1
    got = runtime.run(frames, target=target)
    want = eager(x, torch.from_numpy(target))
    want_heat = want.heatmap.detach().numpy()
    assert got["heatmap"].shape == want_heat.shape == (batch, 4, 64, 64)
    np.testing.assert_allclose(got["heatmap"], want_heat, atol=1e-4)
    np.testing.assert_allclose(got["logits"], want.logits.detach().numpy(), atol=1e-4)
    assert float(want_heat[0].max()) > 0  # not trivially zero
    # the in-graph overlay: the frames blended with the colormapped heatmap
    assert got["overlay"].dtype == np.uint8 and got["overlay"].shape == frames.shape
    want_overlay = reference_overlay(frames, want_heat, 0.6)
    assert np.abs(got["overlay"].astype(np.float64) - want_overlay).max() <= 1.0
    assert (got["overlay"] != frames).any()
    # float frames are refused by a uint8 artifact
    with pytest.raises(ValueError):
        runtime.run(frames.astype(np.float32), target=target)


def test_uint8_overlay_of_guided_backprop_uses_gradient_magnitude():
    torch.manual_seed(1)
    model = models.build("x3d_xs", num_classes=3, clip_len=4, size=32)
    guided = gv.GuidedBackprop(model, activations="all")
    frames = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    out = UInt8Input(guided, overlay=0.5)(frames, torch.tensor([0, 2]))
    x = ((frames.float() / 255.0 - 0.45) / 0.225).permute(0, 4, 1, 2, 3)
    grad = guided(x, torch.tensor([0, 2])).heatmap.numpy()
    magnitude = np.abs(grad).max(axis=1)
    for b in range(2):
        m = magnitude[b]
        heat = (m - m.min()) / (m.max() - m.min())
        want = reference_overlay(frames[b].numpy(), heat, 0.5)
        assert np.abs(out.overlay[b].numpy().astype(np.float64) - want).max() <= 1.0
    with pytest.raises(InputError, match="opacity"):
        UInt8Input(guided, overlay=1.5)


# ----------------------------------------------------------------------------- 8. CLI


def test_cli_explain_real_model(tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 20, 96, 64)
    out = tmp_path / "o.mp4"
    code = cli.main(
        [
            "explain", str(video), "--model", "x3d_xs", "--size", "64", "--clip-len", "4",
            "--stride", "2", "--num-classes", "7", "--out", str(out), "--boxes", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert decode(out).shape == (20, 64, 96, 3)
    data = json.loads(out.with_suffix(".json").read_text())  # default sidecar: OUT.json
    assert data["method"] == "gradcam" and data["model"] == "x3d_xs"
    assert [f["frame"] for f in data["frames"]] == list(range(20))
    assert [c["start"] for c in data["clips"]] == [s for s, _ in expected_windows(20, 4, 2)]
    for f in data["frames"]:
        assert 0 <= f["class"] < 7 and 0 <= f["score"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "o.json", "o.mp4"]


def test_cli_explain_with_uint8_artifact_and_panel(uint8_artifact, tmp_path, capsys):
    path, _ = uint8_artifact
    video = write_video(tmp_path / "in.mp4", 8, 64, 48)
    out = tmp_path / "o.mp4"
    code = cli.main(
        ["explain", str(video), "--artifact", str(path), "--out", str(out), "--panel", "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    assert decode(out).shape == (8, 48, 128, 3)  # frame | overlay
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["clip_len"] == 4 and data["size"] == 64  # taken from the artifact
    assert data["artifact"] == str(path)


def test_cli_info(uint8_artifact, capsys):
    path, _ = uint8_artifact
    assert cli.main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "gradcam" in text.lower()
    assert "input   input: uint8 ('B', 4, 64, 64, 3)" in text
    assert "input   target" in text
    assert "output  logits" in text and "output  heatmap" in text
    assert cli.main(["info", str(path), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta.pop("backend") == "onnxruntime"
    spec = gradvis_runtime.ArtifactSpec.from_dict(meta)  # --json prints the whole contract
    assert spec.input("input").dtype == "uint8" and spec.layout == "BTHWC"
    assert spec.map_spec.shape == ("B", 4, 64, 64, 3)


def test_cli_unknown_model_names_closest(video_97, tmp_path, capsys):
    code = cli.main(
        ["explain", str(video_97), "--model", "x3d_xss", "--out", str(tmp_path / "o.mp4")]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradvis: error: ")
    assert "x3d_xss" in lines[0] and "did you mean" in lines[0] and "x3d_xs" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_artifact_shape_mismatch(uint8_artifact, video_97, tmp_path, capsys):
    path, _ = uint8_artifact
    for extra in (["--clip-len", "8"], ["--size", "96"]):
        code = cli.main(
            ["explain", str(video_97), "--artifact", str(path), "--out", str(tmp_path / "o.mp4"),
             "--quiet", *extra]
        )  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and err[0].startswith("gradvis: error: ") and "artifact" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_workers_must_be_positive_and_with_an_artifact(
    video_97, uint8_artifact, tmp_path, capsys
):
    base = ["explain", str(video_97), "--out", str(tmp_path / "o.mp4"), "--quiet"]
    for extra in (["--artifact", str(uint8_artifact[0]), "--workers", "0"], ["--workers", "2"]):
        code = cli.main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and "--workers" in err[0]
        assert ("--artifact" in err[0]) != ("at least 1" in err[0])
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_video_is_one_line_exit_2(tmp_path, capsys):
    fake = tmp_path / "x.mp4"
    fake.write_text("hello")
    for video in (fake, tmp_path / "missing.mp4"):
        code = cli.main(["explain", str(video), "--size", "64", "--clip-len", "4", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and err[0].startswith("gradvis: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def test_cli_export_uint8_with_overlay_runs_like_eager(tmp_path, capsys):
    out = tmp_path / "e.onnx"
    args = ["--model", "x3d_xs", "--num-classes", "3", "--size", "32", "--clip-len", "4"]
    assert cli.main(["export", *args, "--overlay", "0.5", "--out", str(out)]) == 2
    assert "--uint8" in capsys.readouterr().err  # --overlay needs uint8 frames
    code = cli.main(["export", *args, "--uint8", "--overlay", "0.5", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert cli.main(["info", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    meta.pop("backend")
    spec = gradvis_runtime.ArtifactSpec.from_dict(meta)
    assert spec.output_names == ["logits", "heatmap", "overlay"]
    assert spec.input("input").dtype == "uint8"
    assert spec.output_names[2] == "overlay" and spec.outputs[2].dtype == "uint8"
    # the same random-init model (seed 0) in eager with float preprocessing
    eager = gv.GradCAM(models.build("x3d_xs", 3, 4, 32), "blocks.4")
    runtime = gradvis_runtime.load(out)
    for batch in (1, 3):
        frames = np.random.default_rng(batch).integers(0, 256, (batch, 4, 32, 32, 3), np.uint8)
        x = ((torch.from_numpy(frames).float() / 255.0 - 0.45) / 0.225).permute(0, 4, 1, 2, 3)
        want = eager(x, torch.full((batch,), -1)).heatmap.numpy()
        got = runtime.run(frames)
        np.testing.assert_allclose(got["heatmap"], want, atol=1e-4)
        assert np.abs(got["overlay"] - reference_overlay(frames, want, 0.5)).max() <= 1.0


def test_cli_explain_takes_clip_length_and_size_from_a_float_artifact(tmp_path, capsys):
    """A float artifact is (B, 3, T, S, S): T and S come from there, not from the model's
    defaults (X3D-XS: 4 frames at 182 px) -- here 6 frames at 32 px."""
    artifact = tmp_path / "f.onnx"
    args = ["--model", "x3d_xs", "--num-classes", "3", "--size", "32", "--clip-len", "6"]
    assert cli.main(["export", *args, "--out", str(artifact)]) == 0, capsys.readouterr().err
    video = write_video(tmp_path / "in.mp4", 9, 64, 48)
    side = tmp_path / "o.json"
    code = cli.main(
        ["explain", str(video), "--artifact", str(artifact), "--out", str(tmp_path / "o.mp4"),
         "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(side.read_text())
    assert (data["clip_len"], data["size"]) == (6, 32)
    assert len(data["frames"]) == 9


# ----------------------------------------------------------------------------- 7. containers


@pytest.mark.parametrize("suffix, container", [(".mkv", "matroska"), (".mov", "mov"),
                                               (".mp4", "mp4")])  # fmt: skip
def test_container_follows_the_suffix(tmp_path, suffix, container):
    video = write_video(tmp_path / "in.mp4", 6, 64, 48)
    out = tmp_path / f"o{suffix}"
    explain_video(video, FakeBackend(16, 4), options(), out=out, progress=False)
    with av.open(str(out)) as c:
        assert container in c.format.name.split(",")
        assert c.streams.video[0].codec_context.name == "h264"
    assert decode(out).shape == (6, 48, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", out.name]


def test_avi_and_unknown_suffixes_are_refused_with_the_supported_list(tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 6, 64, 48)
    for name in ("b.avi", "b.webm", "b"):
        with pytest.raises(InputError, match=r"\.mp4, \.m4v, \.mov, \.mkv"):
            explain_video(video, FakeBackend(16, 4), options(), out=tmp_path / name,
                          progress=False)  # fmt: skip
    code = cli.main(["explain", str(video), "--model", "x3d_xs", "--size", "32", "--clip-len",
                     "4", "--out", str(tmp_path / "b.avi"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "AVI cannot hold H.264" in err[0] and "b.mp4" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]  # nothing written


def test_odd_size_is_said_once_and_the_json_records_the_written_size(tmp_path):
    """321x181 -> a 322x182 H.264 video: one note, the JSON keeps the source size (the boxes'
    pixels) as width/height and the written one as overlay_width/overlay_height."""
    video = write_video(tmp_path / "odd.mkv", 6, 321, 181, codec="ffv1", pix_fmt="yuv444p")
    notes: list[str] = []
    out, side = tmp_path / "o.mp4", tmp_path / "o.json"
    explain_video(video, FakeBackend(16, 4), options(), out=out, sidecar=side, progress=False,
                  warn=notes.append)  # fmt: skip
    assert decode(out).shape == (6, 182, 322, 3)
    assert len(notes) == 1 and "321x181" in notes[0] and "322x182" in notes[0], notes
    data = json.loads(side.read_text())
    assert (data["width"], data["height"]) == (321, 181)
    assert (data["overlay_width"], data["overlay_height"]) == (322, 182)
    notes.clear()  # an even video: no note, no extra keys
    even = write_video(tmp_path / "even.mp4", 6, 64, 48)
    explain_video(even, FakeBackend(16, 4), options(), out=out, sidecar=side, progress=False,
                  warn=notes.append)  # fmt: skip
    assert notes == [] and "overlay_width" not in json.loads(side.read_text())
