"""The C++ example program `gradvis_explain` on a video file (its OpenCV input): decoded frames,
clip cutting, layouts and preprocessing against the eager explainer on the same frames, for a
uint8 artifact on the library's ONNX Runtime backend and a float TorchScript artifact; short,
unreadable and missing videos."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc
from videos import encode

import gradvis_export as gv
from gradvis_export.core.preprocess import UInt8Input

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("GRADVIS_CPP_BUILD_DIR", ROOT / "build" / "cpp"))
PROGRAM = BUILD / "gradvis_explain"
T, SIZE = 4, 64  # the x3d case's clips: (3, 4, 64, 64)
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def program() -> Path:
    assert PROGRAM.is_file(), f"{PROGRAM} not built: pip install --no-build-isolation -e ."
    cache = (BUILD / "CMakeCache.txt").read_text()
    rc.require_cpp_option(
        "GRADVIS_OPENCV_VIDEOIO:FILEPATH=/" in cache or "OpenCV_DIR:PATH=/" in cache,
        "gradvis_explain was built without OpenCV (apt-get install libopencv-videoio-dev, "
        "then reinstall)",
    )
    return PROGRAM


def frames(count: int, seed: int) -> np.ndarray:
    """(count, 64, 64, 3) uint8: smooth moving blobs, so that the maps are not flat."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = []
    for t in range(count):
        cx, cy = 0.3 + 0.04 * t, 0.5 + 0.2 * np.sin(t)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 0.02)
        image = 0.5 * blob[..., None] + 0.3 * rng.random((SIZE, SIZE, 3))
        out.append((255 * image.clip(0, 1)).astype(np.uint8))
    return np.stack(out)


def lossless(path: Path, video: np.ndarray) -> Path:
    """PNG frames in AVI: OpenCV must decode exactly these pixels."""
    return encode(path, video, SIZE, SIZE, codec="png", pix_fmt="rgb24")


def starts(count: int, stride: int) -> list[int]:
    """Clip starts as documented: every `stride` frames, the last clip ending on the last
    frame."""
    found = list(range(0, max(count - T, 0) + 1, stride))
    if found[-1] + T < count:
        found.append(count - T)
    return found


def clips(video: np.ndarray, stride: int) -> np.ndarray:
    """(clips, T, H, W, 3), a short video padded with its last frame."""
    index = [[min(s + t, len(video) - 1) for t in range(T)] for s in starts(len(video), stride)]
    return video[np.array(index)]


def run(program: Path, artifact: Path, video: Path, out: Path, *flags: str):
    return subprocess.run(
        [str(program), str(artifact), str(video), str(out), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_uint8_artifact_on_onnxruntime_matches_eager(program, tmp_path):
    rc.require_cpp_onnx()
    explainer = UInt8Input(rc.explainer("x3d"))
    example = torch.from_numpy(clips(frames(5, 1), 1)[:2])
    artifact = gv.export(explainer, example, tmp_path / "x3d_uint8.onnx", check=False)
    video = frames(11, 2)
    flags = "--stride 3 --batch 3 --target 2".split()
    result = run(program, artifact, lossless(tmp_path / "v.avi", video), tmp_path / "h.raw", *flags)
    assert result.returncode == 0, result.stderr
    assert starts(11, 3) == [0, 3, 6, 7]
    want = explainer(torch.from_numpy(clips(video, 3)), torch.full((4,), 2)).heatmap
    got = np.fromfile(tmp_path / "h.raw", np.float32).reshape(4, T, SIZE, SIZE)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert "heatmap [4, 4, 64, 64] float32" in result.stdout
    assert "11 frames -> 4 clips" in result.stdout and "(from frame 7)" in result.stdout


def test_float_artifact_gets_mean_and_std(program, tmp_path):
    video = frames(9, 3)
    flags = ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    artifact = rc.artifact("x3d", "torchscript")
    result = run(program, artifact, lossless(tmp_path / "v.avi", video), tmp_path / "h.raw", *flags)
    assert result.returncode == 0, result.stderr
    x = (clips(video, T) / 255.0 - np.array(MEAN)) / np.array(STD)  # default stride: T
    x = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).astype(np.float32))
    want = rc.explainer("x3d")(x).heatmap.detach().numpy()
    got = np.fromfile(tmp_path / "h.raw", np.float32).reshape(want.shape)
    assert got.shape == (3, T, SIZE, SIZE)  # starts 0, 4, 5
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_short_unreadable_and_missing_videos(program, tmp_path):
    artifact = rc.artifact("x3d", "torchscript")
    video = frames(2, 4)  # shorter than a clip: its last frame is repeated, and it says so
    result = run(program, artifact, lossless(tmp_path / "short.avi", video), tmp_path / "h.raw")
    assert result.returncode == 0, result.stderr
    assert "fewer than a clip" in result.stdout
    x = (clips(video, T) / 255.0 - 0.45) / 0.225
    x = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).astype(np.float32))
    want = rc.explainer("x3d")(x).heatmap.detach().numpy()
    got = np.fromfile(tmp_path / "h.raw", np.float32).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    for path in (bad, tmp_path / "missing.mp4"):
        out = tmp_path / f"{path.stem}.raw"
        result = run(program, artifact, path, out)
        assert result.returncode == 2
        assert "cannot open" in result.stderr and str(path) in result.stderr
        assert not out.exists() and not Path(f"{out}.tmp").exists()
