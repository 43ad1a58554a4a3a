"""gradvis_runtime: run exported gradvis explainers.

`load(path).run(input, target)` -> dict of NumPy arrays (`logits`, `heatmap`, ...).  ONNX
artifacts need only onnxruntime and NumPy (no torch); TorchScript artifacts need torch.
Independent of `gradvis_export`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Explainer", "load"]

_BACKENDS = {
    ".onnx": "onnxruntime",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
}


class Explainer:
    """A loaded artifact: `run(input, target=None)` gives its named outputs as NumPy arrays."""

    def __init__(self, path: Path, backend: str, metadata: dict[str, Any], runner) -> None:
        self.path = path
        self.backend = backend
        self.metadata = metadata
        self._run = runner

    def run(
        self, input: np.ndarray, target: np.ndarray | int | None = None
    ) -> dict[str, np.ndarray]:  # noqa: A002
        x = np.ascontiguousarray(np.asarray(input, dtype=np.float32))
        shape = self.metadata.get("input_shape")
        if shape and (x.ndim != len(shape) or list(x.shape[1:]) != list(shape[1:])):
            raise ValueError(
                f"input has shape {x.shape}; this artifact takes {tuple(shape)} "
                f"({self.metadata.get('input_layout', '')}, B = any batch size)"
            )
        batch = x.shape[0]
        if target is None:
            t = np.full((batch,), -1, dtype=np.int64)
        else:
            t = np.asarray(target, dtype=np.int64)
            t = np.full((batch,), int(t), dtype=np.int64) if t.ndim == 0 else t
            if t.shape != (batch,):
                raise ValueError(f"target has shape {t.shape}; expected ({batch},), -1 = argmax")
        outputs = self._run(x, np.ascontiguousarray(t))
        return dict(
            zip(self.metadata.get("outputs", [f"output_{i}" for i in range(len(outputs))]), outputs)
        )

    def __repr__(self) -> str:
        return f"gradvis_runtime.Explainer({str(self.path)!r}, backend={self.backend!r})"


def _onnx(path: Path, providers: list[str] | None, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    available = ort.get_available_providers()
    chosen = providers or [
        p
        for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
        if p in available
    ]
    session = ort.InferenceSession(str(path), options, providers=chosen)
    meta = session.get_modelmeta().custom_metadata_map.get("gradvis")
    metadata = json.loads(meta) if meta else {"outputs": [o.name for o in session.get_outputs()]}

    def run(x: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {"input": x, "target": t})

    return metadata, run


def _torchscript(path: Path, threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    extra = {"gradvis.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    metadata = json.loads(extra["gradvis.json"]) if extra["gradvis.json"] else {}

    def run(x: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in module(torch.from_numpy(x), torch.from_numpy(t))]

    return metadata, run


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> Explainer:
    """Load an exported explainer; the backend follows the suffix (.onnx, .pt) unless given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {str(path)!r}")
    backend = backend or _BACKENDS.get(path.suffix.lower())
    if backend == "onnxruntime":
        metadata, run = _onnx(path, providers, threads)
    elif backend == "torchscript":
        metadata, run = _torchscript(path, threads)
    else:
        raise ValueError(
            f"cannot tell the backend of {str(path)!r}; pass backend='onnxruntime' or 'torchscript'"
        )
    return Explainer(path, backend, metadata, run)
