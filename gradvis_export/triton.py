"""A Triton Inference Server model repository for one exported explainer.

    <repo>/<name>/config.pbtxt      platform, max_batch_size, inputs/outputs, dynamic batching
    <repo>/<name>/1/model.onnx      (ONNX: onnxruntime_onnx, optionally with TensorRT)
    <repo>/<name>/1/model.pt        (TorchScript: pytorch_libtorch)
    <repo>/<name>/gradvis.json      the artifact's metadata and the Triton <-> graph names

The inputs and outputs are read from the artifact itself: for ONNX from the graph (through
onnxruntime), for TorchScript from the gradvis metadata plus one run at batch sizes 1 and 2
(TorchScript files do not record output shapes).  Triton's PyTorch backend addresses tensors
by position, so a TorchScript model's inputs are INPUT__0, INPUT__1, ... in forward's argument
order and its outputs OUTPUT__0, ... in the order forward returns them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

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
#: onnxruntime's type strings -> numpy dtype names
_ORT_DTYPES = {
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
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


def onnx_signature(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def tensors(args) -> list[Tensor]:
        result = []
        for arg in args:
            if arg.type not in _ORT_DTYPES:
                raise InputError(f"{arg.name!r} has the type {arg.type}, which Triton cannot take")
            shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
            result.append(Tensor(arg.name, arg.name, _ORT_DTYPES[arg.type], shape))
        return result

    return tensors(session.get_inputs()), tensors(session.get_outputs())


def torchscript_signature(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    import numpy as np

    import gradvis_runtime

    runtime = gradvis_runtime.load(path, backend="torchscript")
    specs = runtime.metadata.get("input_specs") or {}
    names = runtime.input_names
    if not specs or any(n not in specs for n in names):
        raise InputError(
            f"{str(path)!r} has no gradvis input description; export it with gradvis "
            "(gv.export or `gradvis export --format torchscript`)"
        )
    inputs = []
    for i, name in enumerate(names):
        shape = tuple(None if isinstance(d, str) else int(d) for d in specs[name]["shape"])
        inputs.append(Tensor(name, f"INPUT__{i}", str(specs[name].get("dtype", "float32")), shape))

    def run(batch: int) -> list[np.ndarray]:
        feeds = {}
        for t in inputs:
            shape = [batch if d is None else d for d in t.shape]
            default = specs[t.name].get("default")
            feeds[t.name] = np.full(shape, 0 if default is None else default, dtype=t.dtype)
        first = feeds.pop(names[0])
        return list(runtime.run(first, **feeds).values())

    one, two = run(1), run(2)
    outputs = []
    for i, (a, b) in enumerate(zip(one, two)):
        shape = tuple(x if x == y else None for x, y in zip(a.shape, b.shape))
        name = runtime.output_names[i] if i < len(runtime.output_names) else f"output_{i}"
        outputs.append(Tensor(name, f"OUTPUT__{i}", str(a.dtype), shape))
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
    from gradvis_runtime.backends import SUFFIXES

    artifact, repo = Path(artifact), Path(repo)
    if not artifact.is_file():
        raise InputError(f"no artifact at {str(artifact)!r}")
    kind = SUFFIXES.get(artifact.suffix.lower())
    if kind not in ("onnxruntime", "torchscript"):
        raise InputError(
            f"Triton serves ONNX (.onnx) and TorchScript (.pt) artifacts, not {artifact.name!r}; "
            "export with --format onnx or torchscript"
        )
    backend = backend or ("onnxruntime" if kind == "onnxruntime" else "pytorch")
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
    target = repo / name
    if target.exists() and not force:
        raise InputError(f"{str(target)!r} exists; pass --force to replace it")
    runtime = gradvis_runtime.load(artifact)  # refuses a damaged file before we write
    metadata = dict(runtime.metadata)
    del runtime
    if kind == "onnxruntime":
        inputs, outputs = onnx_signature(artifact)
        platform, filename = "onnxruntime_onnx", "model.onnx"
    else:
        inputs, outputs = torchscript_signature(artifact)
        platform, filename = "pytorch_libtorch", "model.pt"
    header = (
        f"written by gradvis triton-repo from {artifact.name} (gradvis "
        f"{metadata.get('gradvis_version', '?')}, method {metadata.get('method', '?')})"
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
    repo.mkdir(exist_ok=True)
    staging = repo / f".{name}.part"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "1").mkdir(parents=True)
        shutil.copyfile(artifact, staging / "1" / filename)
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
        names = {
            "inputs": {t.triton_name: t.name for t in inputs},
            "outputs": {t.triton_name: t.name for t in outputs},
        }
        (staging / "gradvis.json").write_text(
            json.dumps({"triton_names": names, "metadata": metadata}, indent=2), encoding="utf-8"
        )
        old = repo / f".{name}.old"
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
