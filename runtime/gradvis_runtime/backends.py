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


def onnxruntime_backend(
    path: Path,
    providers: list[str] | None,
    threads: int | None,
    session_config: dict[str, str] | None = None,
) -> Loaded:
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
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(str(key), str(value))
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


class DamagedArtifact(ValueError):
    """A TorchScript / AOTInductor file that fails `check_archive` (a ValueError, as every
    damaged-file error of `gradvis_runtime.load`)."""


def check_archive(path: Path, package: bool) -> None:
    """Refuse a damaged TorchScript file (package=False) or AOTInductor package (True) before
    torch opens it, with a ValueError naming the file.  Both are zip archives, and torch's
    readers check no CRC: a damaged weight loads and gives wrong numbers, and AOTInductor
    extracts its shared library and dlopens it as it is (damaged code can crash the process).
    Checked: the archive parses; every member is stored or deflated, not encrypted, under one
    top folder with no absolute or '..' name, and matches its CRC-32; a TorchScript file has
    data.pkl and version; a package says "pt2" in archive_format and has the model's shared
    library and JSON metadata (a JSON object of strings; its "gradvis" entry JSON too)."""
    import zipfile

    what = "AOTInductor package" if package else "TorchScript file"

    def refuse(problem: str) -> DamagedArtifact:
        return DamagedArtifact(
            f"{str(path)!r} is not a valid {what} ({problem}); the file is damaged or "
            "truncated: export it again"
        )

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or any("/" not in name for name in names):
                raise refuse("its members are not all in one top folder")
            root = roots.pop()
            for member in members:
                parts = member.filename.split("/")
                if member.filename.startswith("/") or ".." in parts:
                    raise refuse(f"the member {member.filename!r} points outside the archive")
                if member.flag_bits & 0x1:
                    raise refuse(f"the member {member.filename!r} is encrypted")
                if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise refuse(
                        f"the member {member.filename!r} has compression {member.compress_type}"
                    )
            bad = archive.testzip()  # reads every member: CRC-32, sizes, local headers
            if bad is not None:
                raise refuse(f"the member {bad!r} fails its CRC-32 check")
            if not package:
                for need in ("data.pkl", "version"):
                    if f"{root}/{need}" not in names:
                        raise refuse(f"no {need} in the archive")
                return
            if f"{root}/archive_format" not in names:
                raise refuse("no archive_format in the archive")
            if archive.read(f"{root}/archive_format") != b"pt2":
                raise refuse("archive_format is not 'pt2'")
            model = f"{root}/data/aotinductor/model/"
            if not any(n.startswith(model) and n.endswith(".so") for n in names):
                raise refuse("no compiled model (data/aotinductor/model/*.so)")
            found = [n for n in names if n.startswith(model) and n.endswith("_metadata.json")]
            if not found:
                raise refuse("no model metadata (data/aotinductor/model/*_metadata.json)")
            for name in found:
                short = name.rsplit("/", 1)[1]
                try:
                    entries = json.loads(archive.read(name))
                    if isinstance(entries, dict) and isinstance(entries.get(METADATA_KEY), str):
                        json.loads(entries[METADATA_KEY])
                except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
                    raise refuse(f"{short} is not JSON: {error}") from None
                if not isinstance(entries, dict) or not all(
                    isinstance(v, str) for v in entries.values()
                ):
                    raise refuse(f"{short} is not a JSON object of strings")
    except DamagedArtifact:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile's many ways to fail on a damaged file
        raise refuse(f"{type(error).__name__}: {str(error)[:200] or 'unreadable'}") from None


def torchscript_backend(path: Path, threads: int | None) -> Loaded:
    """torch.jit.load, run under inference mode."""
    check_archive(path, package=False)
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
    check_archive(path, package=True)  # before torch extracts and dlopens its library
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
    TorchScript (.pt) and AOTInductor (.pt2) artifacts, and ONNX ones when the library was
    built with ONNX Runtime."""
    onnx = path.suffix.lower() == ".onnx"
    if not onnx:
        check_archive(path, package=path.suffix.lower() == ".pt2")  # as the library tells them
    _torch(None)  # loads libtorch / libc10 that the extension links to
    try:
        from . import _cpp
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
    metadata = json.loads(explainer.metadata_json)
    names = metadata.get("inputs", ["input", "target"])

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return explainer.run([feeds[n] for n in names])

    return metadata, run
