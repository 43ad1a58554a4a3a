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
    """An explainer module run in PyTorch: clip (1,3,T,S,S) float32 -> named NumPy outputs."""

    def __init__(self, explainer: torch.nn.Module) -> None:
        self.explainer = explainer

    def __call__(self, clip: np.ndarray, target: int) -> dict[str, np.ndarray]:
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
        if len(data) > 1 or not self.spec.is_video:
            takes = ", ".join(f"{s.name} {tuple(s.shape)} ({s.layout or '-'})" for s in data)
            raise InputError(
                f"{str(path)!r} takes {takes}; the video job feeds it clips of one video "
                "(one data input, layout BCTHW float or BTHWC uint8)"
            )

    @property
    def uint8_input(self) -> bool:
        return self.spec.uint8

    def check(self, clip_len: int, size: int) -> None:
        """The artifact must take clips of clip_len frames at size^2."""
        have = (self.spec.clip_len, self.spec.frame_size)
        if have != (clip_len, (size, size)):
            want = (
                ["B", clip_len, size, size, 3]
                if self.uint8_input
                else ["B", 3, clip_len, size, size]
            )
            raise InputError(
                f"the artifact takes input {tuple(self.spec.map_spec.shape)} but the video job "
                f"makes clips {tuple(want)}: pass --clip-len and --size matching the artifact"
            )

    def __call__(self, clip: np.ndarray, target: int) -> dict[str, np.ndarray]:
        return self.runtime.run(clip, target=np.full((clip.shape[0],), target, dtype=np.int64))
