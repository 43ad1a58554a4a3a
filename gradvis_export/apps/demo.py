"""The quick-start job: export an X3D Grad-CAM explainer, run it from onnxruntime on a generated
clip, and write the heatmap video.

    python -m gradvis_export.apps.demo --out gradvis_demo.mp4

The X3D-XS here is randomly initialised (seeded): nothing is downloaded.  Its explanations show
the machinery working end to end (export -> ONNX -> onnxruntime -> overlay -> H.264), not a
trained model's reasoning.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEAN, STD = 0.45, 0.225  # Kinetics normalisation used by pytorchvideo's X3D


def generated_clip(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a car-like box crossing a road, its two lamps blinking."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        sky = np.stack([0.25 + 0.2 * ys, 0.3 + 0.2 * ys, 0.45 + 0.1 * ys], axis=-1)
        road = ys[..., None] > 0.55
        img = np.where(road, 0.22, sky)
        left = int((0.1 + 0.5 * t / max(frames - 1, 1)) * size)
        top, width, height = int(0.45 * size), int(0.3 * size), int(0.18 * size)
        img[top : top + height, left : left + width] = (0.6, 0.1, 0.1)
        if (t // 4) % 2 == 0:  # lamps blink with a period of 8 frames
            lamp = max(2, size // 32)
            for cx in (left + lamp, left + width - 2 * lamp):
                img[top + height // 2 : top + height // 2 + lamp, cx : cx + lamp] = (1.0, 0.85, 0.2)
        img = img + rng.normal(0.0, 0.02, img.shape)
        video[t] = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return video


def preprocess(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float32, normalised as X3D expects."""
    return ((frames.astype(np.float32) / 255.0 - MEAN) / STD).transpose(3, 0, 1, 2)


def clip_starts(num_frames: int, clip_len: int, stride: int) -> list[int]:
    """Sliding-window starts covering every frame (the last window is aligned to the end)."""
    if num_frames < clip_len:
        raise ValueError(f"the video has {num_frames} frames; a clip needs {clip_len}")
    starts = list(range(0, num_frames - clip_len + 1, stride))
    if starts[-1] != num_frames - clip_len:
        starts.append(num_frames - clip_len)
    return starts


def build_x3d_xs(clip_len: int, size: int, num_classes: int, seed: int):
    import torch
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(seed)
    return create_x3d(
        input_clip_length=clip_len,
        input_crop_size=size,
        model_num_class=num_classes,
        head_activation=None,
    ).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gradvis_demo.mp4", help="heatmap video to write")
    parser.add_argument("--artifact", default=None, help="where to keep the exported ONNX file")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--clip-len", type=int, default=4)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import warnings

    import torch
    from tqdm import tqdm

    import gradvis_export as gv
    import gradvis_runtime
    from gradvis_export.apps.video.encode import mp4_writer
    from gradvis_export.apps.video.overlay import overlay

    warnings.filterwarnings("ignore")  # deprecation notes from pytorchvideo / TorchScript
    out = Path(args.out)
    if not out.parent.exists():
        parser.error(f"the output folder {str(out.parent)!r} does not exist")
    torch.set_num_threads(2)
    video = generated_clip(args.frames, args.size, args.seed)
    model = build_x3d_xs(args.clip_len, args.size, num_classes=5, seed=args.seed)
    explainer = gv.GradCAM(model, "blocks.4")

    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(args.artifact) if args.artifact else Path(tmp) / "x3d_xs_gradcam.onnx"
        started = time.perf_counter()
        print(
            f"exporting Grad-CAM for X3D-XS (1x3x{args.clip_len}x{args.size}x{args.size}) "
            f"to {artifact} ...",
            file=sys.stderr,
        )
        example = torch.from_numpy(preprocess(video[: args.clip_len]))[None]
        gv.export(explainer, example, artifact)
        print(
            f"exported and checked against eager in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )

        runtime = gradvis_runtime.load(artifact, threads=2)
        heat_sum = np.zeros(video.shape[:3], dtype=np.float32)
        heat_count = np.zeros(video.shape[:1], dtype=np.float32)
        starts = clip_starts(len(video), args.clip_len, args.stride)
        for start in tqdm(starts, desc="explaining clips", unit="clip", file=sys.stderr):
            clip = preprocess(video[start : start + args.clip_len])[None]
            result = runtime.run(clip)
            heat_sum[start : start + args.clip_len] += result["heatmap"][0]
            heat_count[start : start + args.clip_len] += 1
        heatmaps = heat_sum / heat_count[:, None, None]

    with mp4_writer(out, fps=8, width=args.size, height=args.size) as write:
        for frame, heat in zip(video, heatmaps):
            write(overlay(frame, heat))
    print(
        f"wrote {out} ({len(video)} frames, {len(starts)} clips explained through onnxruntime)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
