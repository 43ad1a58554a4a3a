"""The video job as a stream: decode -> clips -> explain -> average per frame -> overlay -> encode.

Frames flow through one at a time; only the frames of the current window (clip_len + stride)
and their maps are held, so memory stays flat however long the video.  Every output (MP4, GIF,
JSON) is written under a temporary name and renamed only when the whole video is done.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradvis_export.apps.outputs import check_output, remove_stale, temporary, writing
from gradvis_export.apps.video.clips import Clip, FrameAverager, SlidingClips
from gradvis_export.apps.video.decode import (
    decode_frames,
    probe,
    rgb24,
    yuv420,
    yuv420_to_rgb24,
)
from gradvis_export.apps.video.encode import container_format, mp4_writer
from gradvis_export.apps.video.framing import Framing
from gradvis_export.apps.video.overlay import (
    draw_boxes,
    draw_boxes_yuv420,
    draw_label,
    draw_label_yuv420,
    frame_boxes,
    overlay,
    overlay_yuv420,
    quantise,
    signed_image,
    upsample_map,
)
from gradvis_export.apps.video.targets import CLASS_INPUTS, FrameTargets
from gradvis_export.apps.video.worker import BACKGROUND_NICE, InOrderPool, OrderedWorker, Prefetch
from gradvis_export.errors import InputError, VideoError

#: (clip (1, 3, T, S, S) float32 normalised or (1, T, S, S, 3) uint8 -- for an image model
#: (VideoOptions.per_frame) frames (N, 3, S, S) float32 or (N, S, S, 3) uint8 --, the class to
#: explain or, with VideoOptions.targets, the target inputs by name) -> named outputs
Backend = Callable[[np.ndarray, "int | dict[str, np.ndarray]"], dict[str, np.ndarray]]


@dataclass
class VideoOptions:
    clip_len: int  # frames per clip; an image model: frames per call (the batch)
    stride: int  # frames between clip starts; an image model: = clip_len
    size: int
    per_frame: bool = False  # an image model: every frame explained on its own
    resize: str = "crop"  # crop | pad | squash: how a frame becomes the model's square
    label: bool = True  # draw the predicted label and score on the frames
    audio: bool = True  # copy the input's audio stream into the MP4
    # a detection / segmentation explainer's target inputs per frame (apps/video/targets.py)
    targets: FrameTargets | None = None
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    target: int = -1  # class to explain, -1 = each clip's predicted class
    alpha: float = 0.5  # heatmap opacity in the overlay
    panel: bool = False  # frame | overlay (| guided Grad-CAM) side by side
    boxes: bool = False  # draw boxes around the hottest regions
    box_threshold: float = 0.6
    uint8_input: bool = False  # the backend takes (1, T, S, S, 3) uint8 frames
    labels: list[str] | None = None
    # clips explained at once, each call on its own thread (the backend must allow calls from
    # several threads, as onnxruntime sessions do); 1: in the main loop
    workers: int = 1
    # x264's preset for the MP4: `ultrafast` costs ~half the render thread's CPU of `veryfast`
    # per 640x360 frame (its share of a 2-core job, BENCHMARKS.md) for files ~2-3x larger
    preset: str = "ultrafast"


@dataclass
class VideoSummary:
    frames: int = 0
    clips: int = 0
    padded: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    outputs: list[str] = field(default_factory=list)
    # decode (+ resize), explain, render: time the main loop spent in each (decode and render
    # run on background threads: theirs is the time the loop waited for them); render_work:
    # the render thread's own time (overlay, boxes, encode, JSON); *_cpu: CPU seconds of the
    # decode and render threads (what they cost whatever else runs on the machine)
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("decode", "explain", "render", "render_work", "decode_cpu", "render_cpu"), 0.0
        )
    )


def normalise_clip(frames: list[np.ndarray], mean, std) -> np.ndarray:
    """clip_len x (S, S, 3) uint8 -> (1, 3, T, S, S) float32, (x/255 - mean) / std.

    NumPy, not torch: next to the decode and render threads, torch's intra-op threads would
    fight them for the cores (several times slower on 2 cores)."""
    planar = np.ascontiguousarray(np.stack(frames).transpose(3, 0, 1, 2))
    out = planar.astype(np.float32)
    std = np.asarray(std, np.float32)[:, None, None, None]
    out *= np.float32(1.0 / 255.0) / std
    out -= np.asarray(mean, np.float32)[:, None, None, None] / std
    return out[None]


def normalise_frames(frames: list[np.ndarray], mean, std) -> np.ndarray:
    """N x (S, S, 3) uint8 -> (N, 3, S, S) float32, (x/255 - mean) / std."""
    return np.ascontiguousarray(normalise_clip(frames, mean, std)[0].transpose(1, 0, 2, 3))


def frames_as_clip(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An image model's outputs for N frames as one clip's: maps (N, [3,] S, S) ->
    (1, [3,] N, S, S); logits stay (N, K), one row per frame."""
    result = dict(outputs)
    for key in ("heatmap", "cam"):
        if key in outputs:
            value = np.asarray(outputs[key])
            result[key] = (value.transpose(1, 0, 2, 3) if value.ndim == 4 else value)[None]
    return result


def clip_maps(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-frame [0, 1] maps (T, S, S) to overlay, and the guided image (T, S, S, 3) if any."""
    heatmap = np.asarray(outputs["heatmap"])[0]
    result = {}
    if "cam" in outputs:  # guided Grad-CAM: overlay the CAM, show the product in the panel
        result["map"] = np.asarray(outputs["cam"])[0]
        result["guided"] = heatmap.transpose(1, 2, 3, 0)
    elif heatmap.ndim == 4:  # guided backprop: a signed gradient per colour channel
        magnitude = np.abs(heatmap).max(axis=0)
        result["map"] = magnitude / (magnitude.max() or 1.0)
        result["guided"] = heatmap.transpose(1, 2, 3, 0)
    else:
        peak = float(heatmap.max())
        result["map"] = heatmap / peak if peak > 1.0 else heatmap
    return result


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    e = np.exp(z)
    return e / e.sum()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`, renamed to it only if the block succeeds (a stale one
    a killed run left is removed first; a failed rename is a one-line OutputError)."""
    tmp = temporary(path)
    remove_stale(path)
    try:
        yield tmp
        with writing(path):
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def _check_outputs(video: Path, outputs: list[Path | None]) -> None:
    """Refuse, before any work, outputs that would overwrite the input or cannot be written
    (a folder in their place, a missing, read-only or forbidden folder, an unknown video
    container); stale temporary files of these outputs (a killed run's) are removed."""
    for out, flag in zip(outputs, ("--out", "--gif", "--json")):
        if out is None:
            continue
        if out.resolve() == video.resolve():
            raise InputError(f"the output {str(out)!r} is the input video; choose another name")
        if not out.parent.exists():
            raise InputError(f"the output folder {str(out.parent)!r} does not exist")
        check_output(out, flag)
    if outputs[0] is not None:
        container_format(outputs[0])  # .avi, .webm, ...: refused with the suffixes it takes
    remove_stale(*outputs)


def explain_video(
    video: str | os.PathLike,
    backend: Backend,
    options: VideoOptions,
    out: str | os.PathLike | None = None,
    gif: str | os.PathLike | None = None,
    sidecar: str | os.PathLike | None = None,
    progress: bool = True,
    warn: Callable[[str], None] = print,
    metadata: dict[str, object] | None = None,
) -> VideoSummary:
    """Explain every frame of `video`; write the overlay MP4 (`out`), a GIF, a JSON sidecar.

    Frames covered by several clips average their maps and class probabilities.  A video
    shorter than one clip is padded by repeating its last frame (`warn` says so).  Video
    frames of odd width/height get one edge pixel repeated (H.264 needs even sizes; `warn`
    says so, and the JSON records the written size as overlay_width/overlay_height).  The
    video's container follows `out`'s suffix (.mp4, .m4v, .mov, .mkv).  A write failure is a
    one-line `OutputError`; no output is half-written, an older one of the same name is kept.
    """
    video = Path(video)
    paths = [Path(p) if p is not None else None for p in (out, gif, sidecar)]
    if not any(paths):
        raise InputError("nothing to write: give an MP4 (out), a GIF or a JSON sidecar path")
    _check_outputs(video, paths)
    info = probe(video)
    summary = VideoSummary(width=info.width, height=info.height, fps=info.fps)
    framing = Framing.of(options.resize, info.width, info.height, options.size)
    stride = options.clip_len if options.per_frame else options.stride
    clips: SlidingClips[np.ndarray] = SlidingClips(options.clip_len, stride)
    averager = FrameAverager()
    originals: dict[int, np.ndarray] = {}
    clip_records: list[dict[str, object]] = []
    gif_frames: list[np.ndarray] = []
    out_path, gif_path, json_path = paths

    with contextlib.ExitStack() as stack:
        write_mp4 = None
        json_file = None
        written: dict[str, int] = {}  # the overlay video's size, when it differs from the source

        def write_json(text: str) -> None:
            with writing(json_path, "--json"):  # disk full: one line naming the sidecar
                json_file.write(text)

        if json_path is not None:
            json_tmp = stack.enter_context(atomic_file(json_path))
            with writing(json_path, "--json"):
                json_file = open(json_tmp, "w", encoding="utf-8")  # noqa: SIM115
            # closed below when whole; on a failure quietly (a full disk's flush must not
            # replace the error that stopped the job), then removed by atomic_file
            stack.callback(_close_quietly, json_file)
            head = {
                "video": str(video),
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
                "rate": f"{info.rate.numerator}/{info.rate.denominator}",
                **(
                    {"per_frame": True, "batch": options.clip_len}
                    if options.per_frame
                    else {"clip_len": options.clip_len, "stride": options.stride}
                ),
                "size": options.size,
                **framing.record(),
                "target": options.target,
                **(metadata or {}),
            }
            write_json(json.dumps(head)[:-1] + ', "frames": [\n')
        bar = None
        if progress:
            from tqdm import tqdm

            bar = stack.enter_context(
                tqdm(total=info.frames, unit="frame", desc="explaining", dynamic_ncols=True)
            )

        # the MP4 is opened on the first frame (its size depends on the panel); its context
        # closes after the render thread stopped (exit order is the reverse of entry)
        mp4_stack = stack.enter_context(contextlib.ExitStack())
        nice = BACKGROUND_NICE if options.workers == 1 else 0  # see worker.BACKGROUND_NICE
        worker = stack.enter_context(OrderedWorker(nice=nice))

        def class_name(index: int) -> str:
            return options.labels[index] if options.labels else f"class {index}"

        def label_text(probs: np.ndarray | None, given: dict[str, object]) -> str:
            """The predicted class and score; without class scores (a detector, a segmenter)
            the class explained."""
            if probs is not None:
                best = int(probs.argmax())
                return f"{class_name(best)} {float(probs[best]):.2f}"
            index = next((given[n] for n in CLASS_INPUTS if n in given), options.target)
            return f"target: {class_name(index)}" if index >= 0 else "target: best class"

        def frame_inputs(frame_index: int) -> dict[str, object]:
            """This frame's target values (frame pixels), as given."""
            return options.targets.values(frame_index) if options.targets else {}

        def render_rgb(
            frame: np.ndarray,
            values: dict[str, np.ndarray],
            seen: np.ndarray,
            boxes: list[list[float]],
            text: str,
        ) -> np.ndarray:
            """The overlay (and the panel) of one RGB frame; `seen` the map over its pixels."""
            h, w = frame.shape[:2]
            heat = (
                F.interpolate(
                    torch.from_numpy(seen)[None, None],
                    size=(h, w),
                    mode="bilinear",
                )[0, 0]
                .clamp(0, 1)
                .numpy()
            )
            image = overlay(frame, heat, options.alpha)
            if boxes:
                image = draw_boxes(image, boxes)
            if text:
                image = draw_label(image, text)
            if options.panel:
                parts = [frame, image]
                if "guided" in values:
                    guided = torch.from_numpy(values["guided"]).permute(2, 0, 1)[None]
                    guided = F.interpolate(guided, size=(h, w), mode="bilinear")[0]
                    parts.append(signed_image(guided.permute(1, 2, 0).numpy()))
                image = np.concatenate(parts, axis=1)
            return image

        # Frames of even size are kept, blended and encoded as the yuv420p planes H.264 stores:
        # no RGB conversion of full frames at all (the panel and odd sizes work in RGB)
        planar = not options.panel and info.width % 2 == 0 and info.height % 2 == 0

        def render(frame_index: int, values: dict[str, np.ndarray], clip_ids: list[int]) -> None:
            """Overlay, boxes, label, encode and JSON of one frame, on the render thread."""
            nonlocal write_mp4
            frame, pts = originals.pop(frame_index)
            h, w = (frame.shape[0] * 2 // 3, frame.shape[1]) if planar else frame.shape[:2]
            seen = framing.to_frame(values["map"])  # the map over the frame's pixels
            boxes = []
            if options.boxes or json_file is not None:
                boxes = frame_boxes(seen, w, h, options.box_threshold)
            probs, given = values.get("prob"), frame_inputs(frame_index)
            text = label_text(probs, given) if options.label else ""
            drawn = boxes if options.boxes else []
            if "box" in given:  # the detection explained
                drawn = [*drawn, list(given["box"])]
            if planar:
                heat = upsample_map(quantise(seen), h // 2, w // 2)
                image = overlay_yuv420(frame, heat, options.alpha)
                if drawn:
                    image = draw_boxes_yuv420(image, drawn)
                if text:
                    image = draw_label_yuv420(image, text)
            else:
                image = render_rgb(frame, values, seen, drawn, text)
            if out_path is not None:
                if write_mp4 is None:
                    ih, iw = (h, w) if planar else image.shape[:2]
                    if iw % 2 or ih % 2:
                        written.update(overlay_width=iw + iw % 2, overlay_height=ih + ih % 2)
                        warn(
                            f"note: {iw}x{ih} frames: H.264 needs even sizes, so {out_path.name} "
                            f"is {iw + iw % 2}x{ih + ih % 2} (last column/row repeated); the "
                            "JSON keeps the source size as width/height and the written one as "
                            "overlay_width/overlay_height"
                        )
                    write_mp4 = mp4_stack.enter_context(
                        mp4_writer(
                            out_path,
                            info.rate,
                            iw + iw % 2,
                            ih + ih % 2,
                            frame_format="yuv420p" if planar else "rgb24",
                            preset=options.preset,
                            time_base=info.time_base,
                            audio_from=video if options.audio and info.audio else None,
                            warn=warn,
                        )
                    )
                even = image
                if not planar and (image.shape[0] % 2 or image.shape[1] % 2):
                    pad = ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0))
                    even = np.pad(image, pad, mode="edge")
                write_mp4(even, pts)
            if gif_path is not None:
                gif_frames.append(yuv420_to_rgb24(image) if planar else image)
            if json_file is not None:
                best = int(probs.argmax()) if probs is not None else None
                entry = {
                    "frame": frame_index,
                    # the clips averaged into this frame; an image model: the call (batch)
                    **({"batch": clip_ids[0]} if options.per_frame else {"clips": clip_ids}),
                    "class": best,
                    "label": options.labels[best] if options.labels and best is not None else None,
                    "score": round(float(probs[best]), 6) if best is not None else None,
                    "target": options.target,
                    "boxes": boxes,
                }
                if given:
                    entry["inputs"] = {k: (True if k == "mask" else v) for k, v in given.items()}
                comma = ",\n" if frame_index else ""
                write_json(comma + json.dumps(entry))
            summary.frames += 1
            if bar is not None:
                bar.update(1)

        def explain_clip(clip: Clip[np.ndarray]) -> dict[str, np.ndarray]:
            """Preprocess and explain one clip (on a pool thread when workers > 1); an image
            model's clip is a batch of frames."""
            if options.uint8_input:
                batch = np.ascontiguousarray(np.stack(clip.items))
                batch = batch if options.per_frame else batch[None]
            elif options.per_frame:
                batch = normalise_frames(clip.items, options.mean, options.std)
            else:
                batch = normalise_clip(clip.items, options.mean, options.std)
            target: int | dict[str, np.ndarray] = options.target
            if options.targets is not None:  # one row per frame; a clip: its middle frame's
                rows = (
                    [clip.start + min(i, clip.valid - 1) for i in range(len(clip.items))]
                    if options.per_frame
                    else [clip.start + (clip.valid - 1) // 2]
                )
                target = options.targets.batch(rows, framing)
            outputs = backend(batch, target)
            return frames_as_clip(outputs) if options.per_frame else outputs

        def add_clip(clip: Clip[np.ndarray], outputs: dict[str, np.ndarray]) -> None:
            """Average an explained clip's maps and probabilities into its frames."""
            maps = clip_maps(outputs)
            scored = "logits" in outputs  # a classifier (detectors, segmenters: no class scores)
            logits = np.asarray(outputs["logits"] if scored else np.zeros((1, 1))).astype(
                np.float64
            )
            probs = softmax(logits[0])
            for frame_index in clip.frames():
                i = frame_index - clip.start
                values = {key: value[i] for key, value in maps.items()}
                if scored:
                    values["prob"] = softmax(logits[i]) if options.per_frame else probs
                averager.add(frame_index, values, clip.index)
            if options.per_frame or not scored:  # nothing of its own to record
                return
            best = int(probs.argmax())
            clip_records.append(
                {
                    "index": clip.index,
                    "start": clip.start,
                    "frames": clip.valid,
                    "padded": len(clip.items) - clip.valid,
                    "class": best,
                    "score": round(float(probs[best]), 6),
                }
            )

        def convert(frame) -> tuple[np.ndarray, np.ndarray]:
            """A decoded frame -> (the frame to render on, the model's input frame)."""
            shown = yuv420(frame) if planar else rgb24(frame)
            return (shown, frame.pts), framing.model_input(frame)

        def final_before() -> int:
            """Frames below this get no more maps: no later clip, no clip still explaining."""
            waiting = pool.pending
            return min(clips.final_before, waiting[0].start) if waiting else clips.final_before

        pool = stack.enter_context(InOrderPool(explain_clip, options.workers))
        # decoded frames kept ready: two calls' worth of new frames for every worker (an image
        # model takes a whole batch of new frames per call), at least 8, at most 32
        depth = min(32, max(8, 2 * stride * options.workers))
        frames = stack.enter_context(
            Prefetch(decode_frames(video, convert), depth=depth, nice=nice)
        )
        for frame, small in frames:
            originals[clips.count] = frame
            for clip in clips.push(small):
                for done in pool.submit(clip):
                    add_clip(*done)
            for entry in averager.pop_before(final_before()):
                worker.submit(render, *entry)
        for clip in clips.finish():
            for done in pool.submit(clip):
                add_clip(*done)
        for done in pool.drain():
            add_clip(*done)
        if clips.padded and not options.per_frame:
            warn(
                f"the video has {clips.count} frame(s), fewer than one clip of "
                f"{options.clip_len}: padded by repeating the last frame {clips.padded} time(s)"
            )
        for entry in averager.pop_before(clips.count):
            worker.submit(render, *entry)
        worker.join()
        summary.seconds["decode"] = frames.waited
        summary.seconds["explain"] = pool.waited
        summary.seconds["render"] = worker.waited
        summary.seconds["render_work"] = worker.busy
        summary.seconds["decode_cpu"], summary.seconds["render_cpu"] = frames.cpu, worker.cpu
        if summary.frames == 0:
            raise VideoError(f"{str(video)!r} has no frames")
        summary.clips, summary.padded = clips.clips, clips.padded
        if json_file is not None:
            # the overlay video's size when H.264 made it even (width/height: the source's,
            # the frame pixels every box and target is given in)
            tail = dict(written) if written else {}
            if not options.per_frame:  # an image model: no clips, the frames are the record
                tail["clips"] = clip_records
            write_json("\n]" + (", " + json.dumps(tail)[1:] if tail else "}"))
            with writing(json_path, "--json"):
                json_file.close()
        if gif_path is not None:
            stack.enter_context(_write_gif(gif_path, gif_frames, info.fps))
    summary.outputs = [str(p) for p in paths if p is not None]
    return summary


def _close_quietly(file) -> None:
    with contextlib.suppress(OSError):
        file.close()


@contextlib.contextmanager
def _write_gif(path: Path, frames: list[np.ndarray], fps: float) -> Iterator[None]:
    """A looping GIF, frames halved until at most 480 px wide (GIFs are for short clips)."""
    from PIL import Image

    with atomic_file(path) as tmp, writing(path, "--gif"):
        images = []
        for frame in frames:
            image = Image.fromarray(frame)
            while image.width > 480:
                image = image.resize((image.width // 2, image.height // 2))
            images.append(image)
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(int(round(1000 / max(fps, 1e-3))), 20),
            loop=0,
        )
        yield
