"""gradvis_runtime: run exported gradvis explainers.

`load(path).run(input, target, **inputs)` -> dict of NumPy arrays (`logits`, `heatmap`, ...).
ONNX artifacts need only onnxruntime and NumPy (no torch); TorchScript (.pt) and AOTInductor
(.pt2) artifacts need torch; `backend="cpp"` runs .pt / .pt2 through the C++ library.
Independent of `gradvis_export`.
"""

from __future__ import annotations

import os
from pathlib import Path

from gradvis_runtime.backends import BACKENDS, DEFAULT_BACKEND
from gradvis_runtime.contract import (
    CONTRACT_VERSION,
    ArtifactSpec,
    ContractError,
    InputSpec,
    OutputSpec,
    Preprocess,
    format_of_suffix,
)
from gradvis_runtime.explainer import Explainer
from gradvis_runtime.streaming import ClipResult, stream
from gradvis_runtime.trust import refuse_untrusted, untrusted_reason

__all__ = [
    "CONTRACT_VERSION",
    "ArtifactSpec",
    "ClipResult",
    "ContractError",
    "Explainer",
    "InputSpec",
    "OutputSpec",
    "Preprocess",
    "cpp_status",
    "load",
    "stream",
    "untrusted_reason",
]


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    providers: list[str] | None = None,
    threads: int | None = None,
    session_config: dict[str, str] | None = None,
    trust: bool = False,
) -> Explainer:
    """Load an exported explainer.  The backend follows the suffix (.onnx -> onnxruntime,
    .pt -> torchscript, .pt2 -> aoti) unless given; `backend="cpp"` uses the C++ library for
    .pt / .pt2, and for .onnx when it was built with ONNX Runtime (`_cpp.has_onnxruntime`).
    `providers` are onnxruntime's; `threads` the intra-op threads; `session_config` onnxruntime session config entries, e.g.
    `{"session.intra_op.allow_spinning": "0"}` when other threads share the cores.

    Trust: a TorchScript file (.pt: pickled code) or an AOTInductor package (.pt2: a native
    shared library) runs code when it is loaded, on every backend that loads it (torchscript,
    aoti, cpp).  Unless `trust=True`, such a file is refused with a `PermissionError` when
    another user could have changed it: the file, or a folder on its path (symbolic links
    followed; the link itself counts too), is owned by a user other than you or root, or is
    writable by others or by a group with members other than you and root.  A folder with the
    sticky bit (such as /tmp) may be writable by all, since others cannot rename or replace
    what you own in it.  ONNX files hold no code and are not checked.  Fix the permissions
    (`chmod go-w`) or, for a file you trust, pass `trust=True`.  (POSIX only.)

    Errors: `FileNotFoundError` (no file), `PermissionError` (untrusted, above), `ImportError`
    (a backend's package is missing), `ValueError` (unknown backend, or a damaged / truncated
    file; `ContractError`, a ValueError, for a missing, newer or malformed contract: the
    message names the file, the field and the fix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {str(path)!r}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    fmt = format_of_suffix(str(path))
    backend = backend or DEFAULT_BACKEND.get(fmt)
    if backend is None:
        raise ValueError(
            f"cannot tell the backend of {str(path)!r}; pass backend='onnxruntime', "
            "'torchscript', 'aoti' or 'cpp'"
        )
    if session_config and backend != "onnxruntime":
        raise ValueError(
            f"session_config holds onnxruntime settings; the {backend} backend has none "
            "(load an .onnx artifact, or drop session_config)"
        )
    if not trust and (backend in ("torchscript", "aoti") or backend == "cpp" and fmt != "onnx"):
        refuse_untrusted(path, "aoti" if fmt == "aoti" or backend == "aoti" else "torchscript")
    try:
        record, run = _open(path, backend, providers, threads, session_config)
    except (ImportError, FileNotFoundError, ValueError):  # ours: they name file and fix
        raise
    except Exception as error:  # the backend could not parse the file
        raise _damaged(path, backend, error) from None
    spec = ArtifactSpec.from_json(record, where=str(path))
    return Explainer(path, backend, spec, run)


def cpp_status() -> str:
    """One line on the optional C++ runtime (`backend="cpp"`): built, with or without its ONNX
    Runtime backend, or why it is missing and the pip command that builds it.  `pip install`
    skips a C++ build it cannot do and pip hides that at its default verbosity, so this is
    where a user finds out (`gradvis info` prints it)."""
    from gradvis_runtime.backends.libtorch import cpp_status as status

    return status()


def _damaged(path: Path, backend: str, error: BaseException) -> ValueError:
    return ValueError(
        f"{str(path)!r} is not a valid {backend} artifact ({type(error).__name__}: "
        f"{str(error).splitlines()[0][:200] if str(error) else 'unreadable'}); the file is "
        "damaged or truncated: export it again"
    )


def _open(path: Path, backend: str, providers, threads, session_config=None):
    if backend == "onnxruntime":
        from gradvis_runtime.backends.onnxruntime import open_onnx

        return open_onnx(path, providers, threads, session_config)
    from gradvis_runtime.backends import libtorch

    if backend == "torchscript":
        return libtorch.open_torchscript(path, threads)
    if backend == "aoti":
        return libtorch.open_aoti(path, threads)
    return libtorch.open_cpp(path, threads)
