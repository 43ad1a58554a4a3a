"""gradvis_runtime: run exported gradvis explainers.

`load(path).run(input, target, **inputs)` -> dict of NumPy arrays (`logits`, `heatmap`, ...).
ONNX artifacts need only onnxruntime and NumPy (no torch); TorchScript (.pt) and AOTInductor
(.pt2) artifacts need torch; `backend="cpp"` runs .pt / .pt2 through the C++ library.
Independent of `gradvis_export`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .backends import (
    BACKENDS,
    SUFFIXES,
    aoti_backend,
    cpp_backend,
    onnxruntime_backend,
    torchscript_backend,
)
from .explainer import Explainer
from .streaming import ClipResult, stream

__all__ = ["ClipResult", "Explainer", "load", "stream"]


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> Explainer:
    """Load an exported explainer.  The backend follows the suffix (.onnx -> onnxruntime,
    .pt -> torchscript, .pt2 -> aoti) unless given; `backend="cpp"` uses the C++ library for
    .pt / .pt2.  `providers` are onnxruntime's; `threads` the intra-op threads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {str(path)!r}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    backend = backend or SUFFIXES.get(path.suffix.lower())
    if backend == "onnxruntime":
        metadata, run = onnxruntime_backend(path, providers, threads)
    elif backend == "torchscript":
        metadata, run = torchscript_backend(path, threads)
    elif backend == "aoti":
        metadata, run = aoti_backend(path, threads)
    elif backend == "cpp":
        if path.suffix.lower() == ".onnx":
            raise ValueError(
                "the C++ library runs TorchScript (.pt) and AOTInductor (.pt2) artifacts; "
                "load an .onnx file with backend='onnxruntime'"
            )
        metadata, run = cpp_backend(path, threads)
    else:
        raise ValueError(
            f"cannot tell the backend of {str(path)!r}; pass backend='onnxruntime', "
            "'torchscript', 'aoti' or 'cpp'"
        )
    return Explainer(path, backend, metadata, run)
