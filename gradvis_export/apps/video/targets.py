"""The target inputs of a detection or segmentation explainer, per frame of a video.

Fixed for every frame (`--target`, `--box x1 y1 x2 y2`, `--mask mask.png`) or per frame from a
JSON-lines file (`--targets FILE`: `{"frame": 12, "box": [x1, y1, x2, y2], "label": 3}`, one
object a line; frames not listed take the fixed values).  Boxes and masks are given in the
frame's pixels and mapped into the model's input by the job's `Framing`, so they mean the same
whatever `--resize` is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradvis_export.apps.video.framing import Framing
from gradvis_export.errors import InputError

#: the target inputs the video job knows how to fill, and their class input
CLASS_INPUTS = ("target", "label")


@dataclass
class FrameTargets:
    """Per-frame values of an artifact's target inputs (names of the contract's inputs)."""

    names: tuple[str, ...]  # the artifact's target inputs
    fixed: dict[str, object] = field(default_factory=dict)  # frame pixels / class ids
    frames: dict[int, dict[str, object]] = field(default_factory=dict)
    mask_shape: tuple[int, int] | None = None  # the mask input's (H, W), if any

    def values(self, frame: int) -> dict[str, object]:
        return {**self.fixed, **self.frames.get(frame, {})}

    def batch(self, frames: Sequence[int], framing: Framing) -> dict[str, np.ndarray]:
        """The inputs for a call on `frames` (one row each), in the model's pixels."""
        rows = [self.values(f) for f in frames]
        out: dict[str, np.ndarray] = {}
        for name in self.names:
            given = [row.get(name) for row in rows]
            if name == "box" and None in given:  # no default: every frame needs one
                raise InputError(
                    f"frame {frames[given.index(None)]} has no box: give --box x1 y1 x2 y2, or "
                    "a box for every frame in --targets"
                )
            if all(v is None for v in given):
                continue  # the artifact's default (-1 for a class, 1 for a mask)
            if name in CLASS_INPUTS:  # a frame not given: the default, -1 (the best class)
                out[name] = np.asarray([-1 if v is None else v for v in given], np.int64)
            elif name == "box":
                out[name] = np.asarray([framing.box_to_model(b) for b in given], np.float32)
            elif name == "mask":  # a frame not given: every pixel counts (the default)
                every = np.ones((framing.height, framing.width), np.float32)
                out[name] = np.stack(
                    [
                        framing.mask_to_model(every if m is None else m, self.mask_shape)
                        for m in given
                    ]
                )
        return out


def _box(value: object, where: str) -> list[float]:
    try:
        box = [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise InputError(f"{where}: a box is [x1, y1, x2, y2] in frame pixels with x1<x2, y1<y2")
    return box


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """A mask image of the frame's size -> (height, width) float32, nonzero = the pixel counts."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--mask {str(path)!r}: no such file (an image of the frame's size)")
    try:
        image = np.asarray(Image.open(path).convert("L"))
    except Exception as error:
        raise InputError(f"--mask {str(path)!r} is not an image ({type(error).__name__})") from None
    if image.shape != (height, width):
        raise InputError(
            f"--mask {str(path)!r} is {image.shape[1]}x{image.shape[0]}; the video's frames are "
            f"{width}x{height}"
        )
    return (image > 0).astype(np.float32)


def frame_targets(
    names: Sequence[str],
    mask_shape: tuple[int, int] | None,
    width: int,
    height: int,
    target: int = -1,
    box: Sequence[float] | None = None,
    mask: Path | None = None,
    targets_file: Path | None = None,
) -> FrameTargets:
    """The job's target values from the command line's options, checked against the names of
    the artifact's target inputs."""
    names = tuple(names)
    result = FrameTargets(names, mask_shape=mask_shape)
    class_input = next((n for n in CLASS_INPUTS if n in names), None)
    if class_input is not None and target != -1:
        result.fixed[class_input] = int(target)
    for option, value, name in (("--box", box, "box"), ("--mask", mask, "mask")):
        if value is None:
            continue
        if name not in names:
            raise InputError(
                f"{option}: this explainer takes no {name} (its target inputs: "
                f"{', '.join(names) or 'none'})"
            )
        result.fixed[name] = (
            _box(value, option) if name == "box" else read_mask(value, width, height)
        )
    if targets_file is not None:
        result.frames = _read_targets(Path(targets_file), names, width, height)
    if "box" in names and "box" not in result.fixed and not result.frames:
        raise InputError(
            "this detection explainer needs a box: --box x1 y1 x2 y2 (frame pixels) for every "
            "frame, or --targets FILE with a box per frame"
        )
    return result


def _read_targets(path: Path, names: tuple[str, ...], width: int, height: int) -> dict:
    if not path.is_file():
        raise InputError(f"--targets {str(path)!r}: no such file (JSON lines, one per frame)")
    frames: dict[int, dict[str, object]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"--targets {path.name} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("frame"), int):
            raise InputError(f'{where}: each line is an object with "frame": N')
        values: dict[str, object] = {}
        for key, value in entry.items():
            if key == "frame":
                continue
            name = "target" if key == "label" and "label" not in names else key
            if name not in names:
                raise InputError(
                    f"{where}: {key!r} is not a target input of this explainer ({', '.join(names)})"
                )
            if name == "box":
                values[name] = _box(value, where)
            elif name == "mask":
                values[name] = read_mask(Path(value), width, height)
            else:
                if not isinstance(value, int):
                    raise InputError(f"{where}: {key} is a class number")
                values[name] = value
        frames[entry["frame"]] = values
    return frames
