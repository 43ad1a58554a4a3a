"""What explains a clip in the video job: an eager explainer, or an exported artifact."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..batch import cpu_count
from ..errors import InputError


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
        spec = self.runtime.metadata.get("input_specs", {}).get("input", {})
        self.uint8_input = spec.get("dtype") == "uint8"
        self.input_shape = self.runtime.metadata.get("input_shape")

    def check(self, clip_len: int, size: int) -> None:
        """The artifact must take clips of clip_len frames at size^2."""
        want = (
            ["B", clip_len, size, size, 3] if self.uint8_input else ["B", 3, clip_len, size, size]
        )
        if self.input_shape and list(self.input_shape) != want:
            raise InputError(
                f"the artifact takes input {tuple(self.input_shape)} but the video job makes "
                f"clips {tuple(want)}: pass --clip-len and --size matching the artifact"
            )

    def __call__(self, clip: np.ndarray, target: int) -> dict[str, np.ndarray]:
        return self.runtime.run(clip, target=np.full((clip.shape[0],), target, dtype=np.int64))
