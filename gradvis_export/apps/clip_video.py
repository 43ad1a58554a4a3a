"""Grad-ECLIP over a video: every frame (in batches) or the middle frame of each clip.

Each frame is resized and centre-cropped to the CLIP's input; the map is put back on the crop's
place in the full frame and overlaid.  The explainer is eager GradECLIP or an exported artifact
(`text_embedding` is its input, so the prompt is chosen at run time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradvis_export.errors import InputError

FRAME_MODES = ("all", "middle")


def crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centred square crop that preprocess_images takes."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def full_frame_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (S, S) map of the centre crop -> (height, width), zero outside the crop."""
    top, left, side = crop_box(height, width)
    resized = F.interpolate(
        torch.as_tensor(heatmap, dtype=torch.float32)[None, None],
        size=(side, side),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    full = np.zeros((height, width), np.float32)
    full[top : top + side, left : left + side] = resized
    return full


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


Explain = Callable[[torch.Tensor, np.ndarray], tuple[np.ndarray, np.ndarray]]


def eager_explain(explainer: torch.nn.Module) -> Explain:
    def run(x: torch.Tensor, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = explainer(x, torch.from_numpy(text).expand(x.shape[0], -1))
        return out.heatmap.numpy(), out.similarity.numpy()

    return run


def artifact_explain(path: Path, threads: int | None) -> Explain:
    import gradvis_runtime

    runtime = gradvis_runtime.load(path, threads=threads)
    if "text_embedding" not in runtime.input_names:
        raise InputError(
            f"{str(path)!r} is not a Grad-ECLIP artifact (it has no text_embedding input); "
            "export one with gv.export(gv.GradECLIP(model), x, path)"
        )

    def run(x: torch.Tensor, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = np.repeat(text, x.shape[0], axis=0)
        result = runtime.run(x.numpy(), text_embedding=texts)
        return result["heatmap"], result["similarity"]

    return run


def explain_video_clip(
    video: str | os.PathLike,
    clip_model: torch.nn.Module,
    prompt: str,
    out: str | os.PathLike | None,
    *,
    frames: str = "all",
    clip_len: int = 16,
    batch: int = 8,
    explain: Explain | None = None,
    alpha: float = 0.5,
    sidecar: str | os.PathLike | None = None,
) -> dict[str, object]:
    """Overlay Grad-ECLIP maps for `prompt` on a video.  frames="all": every frame, `batch`
    frames per call; "middle": the middle frame of each run of `clip_len` frames, its map shown
    on the whole run.  Returns (and writes to `sidecar`) the per-frame similarities."""
    from gradvis_export import GradECLIP
    from gradvis_export.apps.clip import encode_prompts, preprocess_images
    from gradvis_export.apps.video.decode import probe, read_frames
    from gradvis_export.apps.video.encode import mp4_writer
    from gradvis_export.apps.video.overlay import overlay

    if frames not in FRAME_MODES:
        raise InputError(f"frames must be one of {FRAME_MODES}, got {frames!r}")
    if clip_len < 1 or batch < 1:
        raise InputError("clip_len and batch must be at least 1")
    info = probe(video)
    text = encode_prompts(clip_model, [prompt]).numpy()
    run = explain or eager_explain(GradECLIP(clip_model))
    width, height = info.width - info.width % 2, info.height - info.height % 2
    similarities: list[float] = []
    count = 0

    def explained() -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        group = clip_len if frames == "middle" else batch
        for chunk in _batches(read_frames(video), group):
            chunk = [f[:height, :width] for f in chunk]
            chosen = [chunk[len(chunk) // 2]] if frames == "middle" else chunk
            maps, sims = run(preprocess_images(clip_model, np.stack(chosen)), text)
            for i, frame in enumerate(chunk):
                j = 0 if frames == "middle" else i
                yield frame, full_frame_map(maps[j], height, width), float(sims[j])

    if out is None:
        for _frame, _map, sim in explained():
            similarities.append(sim)
    else:
        with mp4_writer(out, info.fps, width, height) as write:
            for frame, heat, sim in explained():
                write(overlay(frame, heat, alpha))
                similarities.append(sim)
    count = len(similarities)
    summary = {
        "video": str(video),
        "prompt": prompt,
        "frames": count,
        "mode": frames,
        "similarity": similarities,
        "outputs": [str(out)] if out is not None else [],
    }
    if sidecar is not None:
        Path(sidecar).write_text(json.dumps(summary, indent=1))
        summary["outputs"].append(str(sidecar))
    return summary
