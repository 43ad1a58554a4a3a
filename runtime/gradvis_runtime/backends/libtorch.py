"""TorchScript (.pt) and AOTInductor (.pt2) artifacts in torch, and all three formats through the
C++ library (gradvis::Explainer) via the pybind11 bridge `gradvis_runtime._cpp`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradvis_runtime.archive import check_archive
from gradvis_runtime.backends import Opened
from gradvis_runtime.contract import METADATA_KEY


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


def open_torchscript(path: Path, threads: int | None) -> Opened:
    """torch.jit.load, run under inference mode."""
    check_archive(path, package=False)
    torch = _torch(threads)
    extra = {f"{METADATA_KEY}.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    record = extra[f"{METADATA_KEY}.json"] or None

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in module(*map(torch.from_numpy, feeds.values()))]

    return record, run


def open_aoti(path: Path, threads: int | None) -> Opened:
    """An AOTInductor package through torch's package loader; the record is the package's
    metadata entry "gradvis"."""
    check_archive(path, package=True)  # before torch extracts and dlopens its library
    torch = _torch(threads)
    from torch._inductor.package import load_package

    compiled = load_package(str(path))
    record = compiled.get_metadata().get(METADATA_KEY)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in compiled(*map(torch.from_numpy, feeds.values()))]

    return record, run


def open_cpp(path: Path, threads: int | None) -> Opened:
    """The C++ library: TorchScript and AOTInductor artifacts, and ONNX ones when it was built
    with ONNX Runtime.  It parses and checks the contract itself (the same fields)."""
    onnx = path.suffix.lower() == ".onnx"
    if not onnx:
        check_archive(path, package=path.suffix.lower() == ".pt2")  # as the library tells them
    _torch(None)  # loads libtorch / libc10 that the extension links to
    try:
        from gradvis_runtime import _cpp
    except ImportError as error:
        raise ImportError(
            "backend='cpp' needs the compiled extension gradvis_runtime._cpp, which was not "
            f"built ({error}); install CMake and a C++ compiler, then reinstall with "
            "`pip install --no-build-isolation -e .`"
        ) from error
    if onnx and not getattr(_cpp, "has_onnxruntime", False):
        raise ValueError(
            "this build of the C++ library has no ONNX Runtime backend: rebuild it with "
            "GRADVIS_ONNXRUNTIME_ROOT=<ONNX Runtime SDK> (see cpp/onnxruntime_sdk.py), or load "
            "the .onnx file with backend='onnxruntime'"
        )
    explainer = _cpp.Explainer(str(path), threads or 0)
    record = explainer.metadata_json

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return explainer.run(list(feeds.values()))

    return record, run
