"""What explains a clip in the video job: an eager explainer, or an exported artifact."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gradvis_export.apps.video.worker import cpu_count
from gradvis_export.errors import InputError


def default_workers(artifact: str | os.PathLike, threads: int | None) -> int:
    """Clips the video job explains at once with `threads` threads in all (None: every core).

    ONNX artifacts: one single-threaded call per thread, up to 4.  Side by side, calls need no
    barrier between cores, so the decode and render threads taking a core for a while delay one
    clip instead of every core's share of each (X3D-XS on 2 cores: 37 ms per clip against
    40-49 ms as one call on 2 threads, measured alone).  Other artifacts: one call."""
    if Path(artifact).suffix.lower() != ".onnx":
        return 1
    return max(1, min(4, threads or cpu_count()))


class EagerBackend:
    """An explainer module run in PyTorch: clip (1,3,T,S,S) or frames (N,3,S,S) float32 ->
    named NumPy outputs."""

    def __init__(self, explainer: torch.nn.Module) -> None:
        self.explainer = explainer

    def __call__(
        self, clip: np.ndarray, target: int | dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        if isinstance(target, dict):  # the target inputs by name (a segmenter's mask, ...)
            inputs = {name: torch.from_numpy(value) for name, value in target.items()}
            out = self.explainer(torch.from_numpy(clip), **inputs)
        else:
            out = self.explainer(torch.from_numpy(clip), target)
        return {name: value.numpy() for name, value in zip(out._fields, out)}


class ArtifactBackend:
    """An exported artifact run by gradvis_runtime (onnxruntime or TorchScript)."""

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        providers: list[str] | None = None,
        spin: bool = False,
    ) -> None:
        import gradvis_runtime

        # onnxruntime's idle intra-op threads spin by default: next to the decode and render
        # threads on few cores, that spinning takes the CPU they need (spin=False: they sleep)
        config = None
        if not spin and Path(path).suffix.lower() == ".onnx":
            config = {"session.intra_op.allow_spinning": "0"}
        self.runtime = gradvis_runtime.load(
            path, threads=threads, providers=providers, session_config=config
        )
        self.spec = self.runtime.spec
        data = self.spec.data_inputs
        if len(data) > 1 or data[0].layout is None:
            takes = ", ".join(f"{s.name} {tuple(s.shape)} ({s.layout or '-'})" for s in data)
            raise InputError(
                f"{str(path)!r} takes {takes}; the video job feeds it the frames of one video "
                "(one data input: clips BCTHW float or BTHWC uint8, images BCHW float or BHWC "
                "uint8)"
            )
        known = {"target", "label", "box", "mask"}
        other = [s.name for s in self.spec.target_inputs if s.name not in known]
        if other:
            raise InputError(
                f"{str(path)!r} needs target inputs {', '.join(other)}: the video job fills "
                "class, box and mask targets only; run it with gradvis_runtime.load(path).run(...)"
            )
        height, width = self.spec.frame_size
        if height != width:
            raise InputError(
                f"{str(path)!r} takes {height}x{width} frames; the video job feeds square "
                "frames: export it for a square input"
            )

    @property
    def uint8_input(self) -> bool:
        return self.spec.uint8

    @property
    def target_names(self) -> tuple[str, ...]:
        """The artifact's target inputs (`target`; `box`, `label` of a detector; `mask`)."""
        return tuple(s.name for s in self.spec.target_inputs)

    @property
    def mask_shape(self) -> tuple[int, int] | None:
        """(H, W) of a segmentation target's mask input, when the contract fixes it."""
        for s in self.spec.target_inputs:
            if (
                s.name == "mask"
                and len(s.shape) == 3
                and all(isinstance(d, int) for d in s.shape[1:])
            ):
                return tuple(s.shape[1:])
        return None

    @property
    def per_frame(self) -> bool:
        """An image artifact: the video job feeds it frames, not clips."""
        return not self.spec.is_video

    def __call__(
        self, clip: np.ndarray, target: int | dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """`target`: a class for every sample, or the target inputs by name (FrameTargets)."""
        if isinstance(target, dict):
            return self.runtime.run(clip, **target)
        return self.runtime.run(clip, target=np.full((clip.shape[0],), target, dtype=np.int64))
