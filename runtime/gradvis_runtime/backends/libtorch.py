"""TorchScript (.pt) and AOTInductor (.pt2) artifacts in torch, and all three formats through the
C++ library (gradvis::Explainer) via the pybind11 bridge `gradvis_runtime._cpp`."""

from __future__ import annotations

import importlib
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


#: how to build the C++ runtime (README, "C++"), in the gradvis source folder;
#: GRADVIS_REQUIRE_CPP=1 makes pip stop with the build's error instead of skipping the build
BUILD_CPP = "GRADVIS_REQUIRE_CPP=1 pip install --no-build-isolation -e ."
HOW_TO_BUILD = (
    f"build it in the gradvis source folder with `{BUILD_CPP}` (needs CMake, a C++ compiler "
    "and torch installed; GRADVIS_REQUIRE_CPP=1 makes pip show the build's error instead of "
    "skipping the build)"
)


def _cpp_module(what: str):  # noqa: ANN202 - the extension module
    """`gradvis_runtime._cpp`, or an ImportError saying why not and how to build it.

    `pip install` skips a C++ build it cannot do, and shows that only with -v, so the first
    place a user can learn of it is here, when the C++ runtime is asked for."""
    try:
        _torch(None)  # loads libtorch / libc10 that the extension links to
    except ImportError as error:
        raise ImportError(f"{what} needs torch (pip install torch), which is missing") from error
    try:
        _cpp = importlib.import_module("gradvis_runtime._cpp")
    except ModuleNotFoundError as error:
        if error.name != "gradvis_runtime._cpp":
            raise
        raise ImportError(
            f"{what} needs the compiled extension gradvis_runtime._cpp (the C++ runtime), "
            "which was not built: `pip install` skips it when it cannot build it and says so "
            f"only with -v; {HOW_TO_BUILD}"
        ) from error
    except ImportError as error:  # built, but for another torch, or a library is missing
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImportError(
            f"{what} needs the compiled extension gradvis_runtime._cpp (the C++ runtime), "
            f"which is there but cannot be loaded ({reason}); rebuild it against this torch: "
            f"{HOW_TO_BUILD}"
        ) from error
    return _cpp


def cpp_status() -> str:
    """One line on the C++ runtime: built (with or without its ONNX backend), or why not and
    the command that builds it, for `gradvis info` (pip hides a skipped build)."""
    try:
        _cpp = _cpp_module("backend='cpp'")
    except ImportError as error:
        return f"C++ runtime: not available: {error}"
    onnx = "with" if getattr(_cpp, "has_onnxruntime", False) else "without"
    return f"C++ runtime: built (gradvis {_cpp.version}, {onnx} its ONNX Runtime backend)"


def open_cpp(path: Path, threads: int | None) -> Opened:
    """The C++ library: TorchScript and AOTInductor artifacts, and ONNX ones when it was built
    with ONNX Runtime.  It parses and checks the contract itself (the same fields)."""
    onnx = path.suffix.lower() == ".onnx"
    if not onnx:
        check_archive(path, package=path.suffix.lower() == ".pt2")  # as the library tells them
    _cpp = _cpp_module("backend='cpp'")
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
