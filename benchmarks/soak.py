"""Soak and leak: many explainer calls through each runtime, and a long video through the
pipeline, with the process's RSS sampled (psutil).  Growth after warm-up must stay < 5 %.

    python benchmarks/soak.py                         # full budgets: 10 000 calls, 20-min video
    python benchmarks/soak.py --calls 2000 --video-minutes 2

The runtimes: onnxruntime, TorchScript, and the C++ library through the pybind11 bridge (when
it was built).  The explainer is Grad-CAM of a small seeded CNN (the leak, not the model's
speed, is what this measures); the video job uses a fast stand-in backend, so 20 minutes of
640x360 video is decode + averaging + overlay + encode + JSON at full length.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "runtime")]


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def tiny_explainer():
    import torch
    from torch import nn

    import gradvis_export as gv

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()  # fmt: skip
    return gv.GradCAM(model, "3")


def soak_runtime(path: Path, backend: str | None, calls: int) -> dict[str, object]:
    """`calls` runs of one loaded artifact, RSS after a warm-up (a tenth) and at the end."""
    import numpy as np

    import gradvis_runtime

    runtime = gradvis_runtime.load(path, backend=backend, threads=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    warm = max(calls // 10, 10)
    for _ in range(warm):
        runtime.run(x)
    gc.collect()
    before = rss_mib()
    start = time.perf_counter()
    for i in range(calls):
        out = runtime.run(x, target=np.array([i % 5, -1]))
        if not np.isfinite(out["heatmap"]).all():
            raise AssertionError(f"call {i}: non-finite heatmap")
    seconds = time.perf_counter() - start
    gc.collect()
    after = rss_mib()
    return {
        "runtime": backend or runtime.backend,
        "calls": calls,
        "seconds": round(seconds, 1),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "growth": after / before - 1,
    }


def make_video(path: Path, seconds: float, width: int = 640, height: int = 360) -> None:
    """A moving gradient: cheap to generate, not trivially compressible."""
    import av
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for t in range(int(seconds * 30)):
            frame = np.empty((height, width, 3), np.uint8)
            frame[..., 0] = (xx + 3 * t) % 256
            frame[..., 1] = (yy + t) % 256
            frame[..., 2] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def soak_video(minutes: float, workdir: Path) -> dict[str, object]:
    """The whole video job on a long video; RSS sampled every second on a side thread."""
    import numpy as np

    from gradvis_export.apps.video.pipeline import VideoOptions, explain_video

    video = workdir / "long.mp4"
    make_video(video, minutes * 60)
    size = 64

    def backend(clip: np.ndarray, target: int) -> dict[str, np.ndarray]:
        t = clip.shape[2]
        heat = np.clip(clip[0, 0] * 0.2 + 0.5, 0, 1).astype(np.float32)  # follows the content
        return {"logits": np.array([[0.1, 1.0, 0.3]], np.float32), "heatmap": heat[None, :t]}

    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        start = time.perf_counter()
        while not done.wait(1.0):
            samples.append((time.perf_counter() - start, rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    summary = explain_video(
        video,
        backend,
        VideoOptions(clip_len=4, stride=2, size=size),
        out=workdir / "out.mp4",
        sidecar=workdir / "out.json",
        progress=False,
    )
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    # warm-up: the first fifth of the run (encoder buffers, allocator pools)
    after_warmup = [rss for t, rss in samples if t >= seconds / 5] or [rss_mib()]
    return {
        "runtime": "video pipeline",
        "frames": summary.frames,
        "seconds": round(seconds, 1),
        "rss_before_mib": round(after_warmup[0], 1),
        "rss_after_mib": round(max(after_warmup), 1),
        "growth": max(after_warmup) / after_warmup[0] - 1,
    }


def run(calls: int, video_minutes: float, workdir: Path) -> list[dict[str, object]]:
    import torch

    import gradvis_export as gv
    import gradvis_runtime

    explainer = tiny_explainer()
    example = torch.randn(2, 3, 16, 16)
    onnx = gv.export(explainer, example, workdir / "soak.onnx")
    script = gv.export(explainer, example, workdir / "soak.pt")
    results = [soak_runtime(onnx, None, calls), soak_runtime(script, None, calls)]
    try:
        gradvis_runtime.load(script, backend="cpp")
    except ImportError as error:  # the C++ extension was not built here
        print(f"skipping the C++ bridge: {error}", file=sys.stderr)
    else:
        results.append(soak_runtime(script, "cpp", calls))
    if video_minutes > 0:
        results.append(soak_video(video_minutes, workdir))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--video-minutes", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.calls, args.video_minutes, Path(tmp))
    print(f"{'runtime':<16} {'calls/frames':>12} {'seconds':>8} {'RSS warm':>9} {'RSS end':>8} "
          f"{'growth':>7}")  # fmt: skip
    for r in results:
        count = r.get("calls", r.get("frames"))
        print(
            f"{r['runtime']:<16} {count:>12} {r['seconds']:>8} {r['rss_before_mib']:>9} "
            f"{r['rss_after_mib']:>8} {r['growth']:>+7.1%}  "
            f"{'PASS' if r['growth'] < 0.05 else 'MISS'} (< 5 %)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["growth"] < 0.05 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
