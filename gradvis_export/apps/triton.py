"""A Triton Inference Server model repository for one exported explainer.

    <repo>/<name>/config.pbtxt      platform, max_batch_size, inputs/outputs, dynamic batching
    <repo>/<name>/1/model.onnx      (ONNX: onnxruntime_onnx, optionally with TensorRT)
    <repo>/<name>/1/model.pt        (TorchScript: pytorch_libtorch)
    <repo>/<name>/gradvis.json      the artifact's contract and the Triton <-> graph names

The inputs and outputs (names, dtypes, shapes with the batch) are read from the artifact's
contract (`gradvis_runtime.ArtifactSpec`).  Triton's PyTorch backend addresses tensors by
position, so a TorchScript model's inputs are INPUT__0, INPUT__1, ... in forward's argument
order and its outputs OUTPUT__0, ... in the order forward returns them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gradvis_export.apps.outputs import output_error, writing
from gradvis_export.errors import InputError, OutputError
from gradvis_runtime.contract import ArtifactSpec, format_of_suffix

#: numpy dtype name -> Triton data type
TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
BACKENDS = ("onnxruntime", "tensorrt", "pytorch")


@dataclass(frozen=True)
class Tensor:
    """One graph input or output: its name in the artifact, the name Triton uses, its dtype
    (numpy name) and shape (None = a dynamic size)."""

    name: str
    triton_name: str
    dtype: str
    shape: tuple[int | None, ...]


def signature(spec: ArtifactSpec, positional: bool) -> tuple[list[Tensor], list[Tensor]]:
    """The artifact's inputs and outputs as its contract records them; `positional` (Triton's
    PyTorch backend) names them INPUT__i / OUTPUT__i in graph order."""

    def dims(shape: tuple) -> tuple[int | None, ...]:
        return tuple(None if isinstance(d, str) else int(d) for d in shape)

    inputs = [
        Tensor(s.name, f"INPUT__{i}" if positional else s.name, s.dtype, dims(s.shape))
        for i, s in enumerate(spec.inputs)
    ]
    outputs = [
        Tensor(o.name, f"OUTPUT__{i}" if positional else o.name, o.dtype, dims(o.shape))
        for i, o in enumerate(spec.outputs)
    ]
    return inputs, outputs


def _batched(tensors: list[Tensor]) -> bool:
    """Triton may batch when every tensor's first dimension is the (dynamic) batch."""
    return all(len(t.shape) >= 1 and t.shape[0] is None for t in tensors)


def _tensor_block(t: Tensor, batched: bool) -> str:
    if t.dtype not in TRITON_DTYPES:
        raise InputError(f"{t.name!r} has the dtype {t.dtype}, which Triton cannot take")
    dims = list(t.shape[1:] if batched else t.shape)
    lines = [f'    name: "{t.triton_name}"', f"    data_type: {TRITON_DTYPES[t.dtype]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(-1 if d is None else d) for d in dims)} ]")
    else:  # only the batch dimension: Triton wants [ 1 ], reshaped to the model's [ ]
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_text(
    name: str,
    platform: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    max_batch_size: int = 8,
    queue_delay_us: int = 100,
    tensorrt: bool = False,
    header: str = "",
) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    batched = max_batch_size > 0 and _batched(inputs + outputs)
    parts = [f"# {line}" for line in header.splitlines()]
    for t in inputs + outputs:
        if t.triton_name != t.name:
            parts.append(f"# {t.triton_name} = {t.name}")
    parts += [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch_size if batched else 0}",
        "input [\n" + ",\n".join(_tensor_block(t, batched) for t in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t, batched) for t in outputs) + "\n]",
    ]
    if batched:
        parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    if tensorrt:
        parts.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
            "      {\n"
            '        name: "tensorrt"\n'
            '        parameters { key: "precision_mode" value: "FP32" }\n'
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
            "      }\n    ]\n  }\n}"
        )
        parts.append("instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]")
    return "\n".join(parts) + "\n"


def model_name(artifact: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", artifact.stem) or "explainer"


def write_repository(
    artifact: str | os.PathLike,
    repo: str | os.PathLike,
    name: str | None = None,
    backend: str | None = None,
    max_batch_size: int = 8,
    queue_delay_us: int = 100,
    force: bool = False,
) -> Path:
    """Write `repo/name/` for `artifact` (.onnx or TorchScript .pt); returns the model folder.

    The folder is built under a temporary name and renamed into place when complete; an
    existing one is replaced only with `force`."""
    import gradvis_runtime

    artifact, repo = Path(artifact), Path(repo)
    if not artifact.is_file():
        raise InputError(f"no artifact at {str(artifact)!r}")
    kind = format_of_suffix(str(artifact))
    if kind not in ("onnx", "torchscript"):
        raise InputError(
            f"Triton serves ONNX (.onnx) and TorchScript (.pt) artifacts, not {artifact.name!r}; "
            "export with --format onnx or torchscript"
        )
    backend = backend or ("onnxruntime" if kind == "onnx" else "pytorch")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if (kind == "torchscript") != (backend == "pytorch"):
        fits = "pytorch" if kind == "torchscript" else "onnxruntime or tensorrt"
        raise InputError(f"a {artifact.suffix} artifact runs on Triton's {fits} backend")
    if max_batch_size < 0:
        raise InputError(f"--max-batch-size {max_batch_size} must be 0 (no batching) or more")
    name = name or model_name(artifact)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise InputError(f"model name {name!r}: use letters, digits, '_', '-', '.'")
    if not repo.parent.exists():
        raise InputError(f"the folder {str(repo.parent)!r} of --out does not exist")
    if repo.exists() and not repo.is_dir():
        raise OutputError(f"--out {str(repo)!r} is a file; give a folder for the repository")
    target = repo / name
    _recover(repo, name)
    writable = repo if repo.exists() else repo.parent
    if not os.access(writable, os.W_OK | os.X_OK) or _read_only(writable):
        raise output_error(_denied(writable), target)
    if target.exists() and not force:
        raise InputError(f"{str(target)!r} exists; pass --force to replace it")
    # refuses a damaged file or a bad contract before anything is written
    spec = gradvis_runtime.load(artifact).spec
    inputs, outputs = signature(spec, positional=kind == "torchscript")
    platform, filename = (
        ("onnxruntime_onnx", "model.onnx") if kind == "onnx" else ("pytorch_libtorch", "model.pt")
    )
    header = (
        f"written by gradvis triton-repo from {artifact.name} (gradvis "
        f"{spec.gradvis_version}, method {spec.method})"
    )
    text = config_text(
        name,
        platform,
        inputs,
        outputs,
        max_batch_size,
        queue_delay_us,
        tensorrt=backend == "tensorrt",
        header=header,
    )
    with writing(target):
        repo.mkdir(exist_ok=True)
    staging = repo / f".{name}.part"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_staging(staging, artifact, filename, text, inputs, outputs, spec, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_only(folder: Path) -> bool:
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def _denied(folder: Path) -> OSError:
    import errno

    return OSError(errno.EROFS if _read_only(folder) else errno.EACCES, "not writable")


def _recover(repo: Path, name: str) -> None:
    """A run killed between its two renames left the older model folder as `.NAME.old` and no
    `NAME`: put it back (it is whole); with both present, the old one is stale.  A stale
    staging folder `.NAME.part` goes too."""
    target, old = repo / name, repo / f".{name}.old"
    if old.is_dir():
        if not target.exists():
            with writing(target):
                os.replace(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(repo / f".{name}.part", ignore_errors=True)


def _write_staging(staging, artifact, filename, text, inputs, outputs, spec, target) -> None:
    """Write the model folder under `staging`, then swap it in for `target` (write failures:
    one-line OutputErrors; an older model folder stays until the new one is whole)."""
    with writing(target):
        (staging / "1").mkdir(parents=True)
        shutil.copyfile(artifact, staging / "1" / filename)
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
        names = {
            "inputs": {t.triton_name: t.name for t in inputs},
            "outputs": {t.triton_name: t.name for t in outputs},
        }
        (staging / "gradvis.json").write_text(
            json.dumps({"triton_names": names, "contract": spec.to_dict()}, indent=2),
            encoding="utf-8",
        )
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
