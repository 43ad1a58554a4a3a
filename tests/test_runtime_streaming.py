"""gradvis_runtime.stream: clips of a frame iterator and of a video file through an X3D
artifact, each clip's outputs equal to eager on the same clip preprocessed by hand here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc

import gradvis_runtime

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def frames(count: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def clip_tensor(clip: list[np.ndarray]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (1, 3, T, H, W) float32 in [0, 1]: the float artifact's input."""
    return (np.stack(clip).astype(np.float32) / 255.0).transpose(3, 0, 1, 2)[None].copy()


def test_stream_frames_in_overlapping_clips():
    rt = gradvis_runtime.load(rc.artifact("x3d", "onnx"), threads=2)
    video = frames(10)
    results = list(gradvis_runtime.stream(rt, iter(video), stride=2, target=1))
    assert [(r.start, r.stop) for r in results] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    for r in results[::3]:
        x = clip_tensor(video[r.start : r.stop])
        rc.assert_close(r.outputs, rc.eager("x3d", x, np.array([1])), f"clip {r.start}")


def test_stream_video_file(tmp_path):
    import av  # the dev extra has PyAV

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for image in frames(8, seed=1):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:  # the reference decode, written out here
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    rt = gradvis_runtime.load(rc.artifact("x3d", "onnx"), threads=2)
    results = list(gradvis_runtime.stream(rt, path))
    assert [(r.start, r.stop) for r in results] == [(0, 4), (4, 8)]
    for r in results:
        x = clip_tensor(decoded[r.start : r.stop])
        rc.assert_close(r.outputs, rc.eager("x3d", x, np.array([-1])), f"clip {r.start}")


def test_stream_rejects_bad_frames():
    rt = gradvis_runtime.load(rc.artifact("x3d", "onnx"))
    with pytest.raises(ValueError, match="takes 64x64 frames: resize"):
        list(gradvis_runtime.stream(rt, frames(4, size=32)))
    with pytest.raises(ValueError, match="RGB uint8"):
        list(gradvis_runtime.stream(rt, [np.zeros((64, 64, 3), np.float32)] * 4))
    with pytest.raises(FileNotFoundError, match="no video"):
        list(gradvis_runtime.stream(rt, "/nonexistent.mp4"))
