"""gradvis_runtime: run exported gradvis explainers.

`load(path).run(input, target, **inputs)` -> dict of NumPy arrays (`logits`, `heatmap`, ...).
ONNX artifacts need only onnxruntime and NumPy (no torch); TorchScript (.pt) and AOTInductor
(.pt2) artifacts need torch; `backend="cpp"` runs .pt / .pt2 through the C++ library.
Independent of `gradvis_export`.
"""

from __future__ import annotations

import json
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
from .trust import refuse_untrusted, untrusted_reason

__all__ = ["ClipResult", "Explainer", "load", "stream", "untrusted_reason"]


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
    file or metadata: the message names the file and says to export it again)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {str(path)!r}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    backend = backend or SUFFIXES.get(path.suffix.lower())
    if session_config and backend != "onnxruntime":
        raise ValueError(
            f"session_config holds onnxruntime settings; the {backend} backend has none "
            "(load an .onnx artifact, or drop session_config)"
        )
    suffix = path.suffix.lower()  # the C++ library refuses .onnx files without opening them
    if not trust and (backend in ("torchscript", "aoti") or backend == "cpp" and suffix != ".onnx"):
        kind = "aoti" if backend == "aoti" or suffix == ".pt2" else "torchscript"
        refuse_untrusted(path, kind)
    try:
        metadata, run = _open(path, backend, providers, threads, session_config)
    except (ImportError, FileNotFoundError):
        raise
    except ValueError as error:
        if not isinstance(error, json.JSONDecodeError):
            raise
        raise ValueError(
            f"{str(path)!r} has damaged gradvis metadata ({error}); export it again"
        ) from None
    except Exception as error:  # the backend could not parse the file
        raise ValueError(
            f"{str(path)!r} is not a valid {backend} artifact ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'unreadable'}); the file is "
            "damaged or truncated: export it again"
        ) from None
    problem = metadata_problem(metadata)
    if problem:
        raise ValueError(f"{str(path)!r} has damaged gradvis metadata: {problem}; export it again")
    return Explainer(path, backend, metadata, run)


def metadata_problem(metadata: object) -> str | None:
    """What is wrong with an artifact's metadata, in the fields `run` relies on (None: fine)."""
    import numpy as np

    if not isinstance(metadata, dict):
        return "not a JSON object"
    for key in ("inputs", "outputs"):
        names = metadata.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return f"{key!r} is not a list of names"
    shape = metadata.get("input_shape")
    if shape is not None and (
        not isinstance(shape, list) or not all(isinstance(d, (int, str)) for d in shape)
    ):
        return "'input_shape' is not a list of sizes"
    specs = metadata.get("input_specs", {})
    if not isinstance(specs, dict) or not all(isinstance(v, dict) for v in specs.values()):
        return "'input_specs' is not a mapping of input name -> spec"
    for name, spec in specs.items():
        try:
            np.dtype(spec.get("dtype", "float32"))
        except TypeError:
            return f"input {name!r} has the unknown dtype {spec.get('dtype')!r}"
        if not isinstance(spec.get("shape", []), list):
            return f"input {name!r} has a shape that is not a list"
        default = spec.get("default")
        if default is not None and not isinstance(default, (int, float)):
            return f"input {name!r} has a default that is not a number"
    return None


def _open(path: Path, backend: str | None, providers, threads, session_config=None):
    if backend == "onnxruntime":
        metadata, run = onnxruntime_backend(path, providers, threads, session_config)
    elif backend == "torchscript":
        metadata, run = torchscript_backend(path, threads)
    elif backend == "aoti":
        metadata, run = aoti_backend(path, threads)
    elif backend == "cpp":
        metadata, run = cpp_backend(path, threads)
    else:
        raise ValueError(
            f"cannot tell the backend of {str(path)!r}; pass backend='onnxruntime', "
            "'torchscript', 'aoti' or 'cpp'"
        )
    return metadata, run
