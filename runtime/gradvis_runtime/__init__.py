"""gradvis_runtime: run exported gradvis explainers.

`load(path).run(input, target, **inputs)` -> dict of NumPy arrays (`logits`, `heatmap`, ...).  ONNX
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
    """A loaded artifact: `run(input, target=None, **inputs)` gives its named outputs as NumPy
    arrays."""

    def __init__(self, path: Path, backend: str, metadata: dict[str, Any], runner) -> None:
        self.path = path
        self.backend = backend
        self.metadata = metadata
        self._run = runner

    @property
    def input_names(self) -> list[str]:
        return list(self.metadata.get("inputs", ["input", "target"]))

    def run(
        self,
        input: np.ndarray,  # noqa: A002 - the artifact's input name
        target: np.ndarray | int | None = None,
        **inputs: np.ndarray | float | int | None,
    ) -> dict[str, np.ndarray]:
        """Run the artifact.  `target` (class per sample, -1 = argmax) and the other inputs of
        the artifact's target (`mask`, `reference`, `box`, `label`) go by name; an input left out
        takes its default (-1 for classes, 1 for a mask) or, without one, raises."""
        dtype = self.metadata.get("input_specs", {}).get("input", {}).get("dtype", "float32")
        x = np.asarray(input)
        if dtype == "uint8" and x.dtype != np.uint8:
            raise ValueError(f"this artifact takes uint8 frames, got {x.dtype}")
        x = np.ascontiguousarray(x.astype(dtype, copy=False))
        shape = self.metadata.get("input_shape")
        if shape and (x.ndim != len(shape) or list(x.shape[1:]) != list(shape[1:])):
            raise ValueError(
                f"input has shape {x.shape}; this artifact takes {tuple(shape)} "
                f"({self.metadata.get('input_layout', '')}, B = any batch size)"
            )
        names = self.input_names
        given = {"target": target, **inputs}
        unknown = sorted(k for k, v in given.items() if k not in names and v is not None)
        if unknown:
            raise ValueError(
                f"this artifact has no input {unknown[0]!r}; its inputs are {', '.join(names)}"
            )
        feeds = {"input": x}
        for name in names[1:]:
            feeds[name] = self._feed(name, given.get(name), x.shape[0])
        outputs = self._run(feeds)
        return dict(
            zip(self.metadata.get("outputs", [f"output_{i}" for i in range(len(outputs))]), outputs)
        )

    def _feed(self, name: str, value: object, batch: int) -> np.ndarray:
        spec = self.metadata.get("input_specs", {}).get(name, {})
        dtype = np.dtype(spec.get("dtype", "int64"))
        shape = [batch, *spec.get("shape", ["B"])[1:]]
        if value is None:
            default = spec.get("default", -1 if name == "target" else None)
            if default is None:
                raise ValueError(f"this artifact needs the input {name!r}: {spec.get('doc', '')}")
            return np.full(shape, default, dtype=dtype)
        array = np.asarray(value)
        if dtype.kind in "iu" and array.dtype.kind == "f":
            raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
        array = array.astype(dtype, copy=False)
        if array.ndim == 0:
            array = np.full(shape, array, dtype=dtype)
        if list(array.shape) != shape:
            raise ValueError(
                f"{name} has shape {array.shape}; expected {tuple(shape)}"
                + (", -1 = argmax" if name == "target" else "")
            )
        return np.ascontiguousarray(array)

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

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(None, feeds)

    return metadata, run


def _torchscript(path: Path, threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    extra = {"gradvis.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    metadata = json.loads(extra["gradvis.json"]) if extra["gradvis.json"] else {}

    names = metadata.get("inputs", ["input", "target"])

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in module(*(torch.from_numpy(feeds[n]) for n in names))]

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
