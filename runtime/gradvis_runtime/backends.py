"""The backends behind `gradvis_runtime.load`: each opens an artifact and returns its metadata
and a runner.  torch is imported only by the backends that need it, so ONNX works without it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .explainer import Runner

METADATA_KEY = "gradvis"

#: file suffix -> backend
SUFFIXES = {
    ".onnx": "onnxruntime",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".pt2": "aoti",
}
BACKENDS = ("onnxruntime", "torchscript", "aoti", "cpp")

Loaded = tuple[dict[str, Any], Runner]


def onnxruntime_backend(path: Path, providers: list[str] | None, threads: int | None) -> Loaded:
    """onnxruntime with the asked providers, else TensorRT / CUDA / CPU as available."""
    import onnxruntime as ort

    try:
        import onnx
    except ImportError:  # the checker is optional: the runtime needs only onnxruntime
        onnx = None
    if onnx is not None:  # a damaged or hand-edited graph is refused before onnxruntime parses it
        onnx.checker.check_model(str(path))
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
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    metadata = json.loads(meta) if meta else {"outputs": [o.name for o in session.get_outputs()]}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(None, feeds)

    return metadata, run


def _torch(threads: int | None):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "TorchScript and AOTInductor artifacts need torch (pip install torch); "
            "ONNX artifacts run without it"
        ) from error
    if threads:
        torch.set_num_threads(threads)
    return torch


def torchscript_backend(path: Path, threads: int | None) -> Loaded:
    """torch.jit.load, run under inference mode."""
    torch = _torch(threads)
    extra = {f"{METADATA_KEY}.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    text = extra[f"{METADATA_KEY}.json"]
    metadata = json.loads(text) if text else {}
    names = metadata.get("inputs", ["input", "target"])

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in module(*(torch.from_numpy(feeds[n]) for n in names))]

    return metadata, run


def aoti_backend(path: Path, threads: int | None) -> Loaded:
    """An AOTInductor package (.pt2) through torch's package loader; the metadata JSON is the
    package's metadata entry "gradvis"."""
    torch = _torch(threads)
    from torch._inductor.package import load_package

    compiled = load_package(str(path))
    text = compiled.get_metadata().get(METADATA_KEY)
    metadata = json.loads(text) if text else {}
    names = metadata.get("inputs", ["input", "target"])

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in compiled(*(torch.from_numpy(feeds[n]) for n in names))]

    return metadata, run


def cpp_backend(path: Path, threads: int | None) -> Loaded:
    """The C++ library (gradvis::Explainer) through the pybind11 bridge `gradvis_runtime._cpp`:
    TorchScript (.pt) and AOTInductor (.pt2) artifacts."""
    _torch(None)  # loads libtorch / libc10 that the extension links to
    try:
        from . import _cpp
    except ImportError as error:
        raise ImportError(
            "backend='cpp' needs the compiled extension gradvis_runtime._cpp, which was not "
            f"built ({error}); install CMake and a C++ compiler, then reinstall with "
            "`pip install --no-build-isolation -e .`"
        ) from error
    explainer = _cpp.Explainer(str(path), threads or 0)
    metadata = json.loads(explainer.metadata_json)
    names = metadata.get("inputs", ["input", "target"])

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return explainer.run([feeds[n] for n in names])

    return metadata, run
