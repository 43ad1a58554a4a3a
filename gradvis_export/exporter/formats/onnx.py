"""ONNX artifacts: `torch.onnx.export` (dynamo, opset 20) of the traced graph, the profile's
ONNX passes, the contract in `metadata_props["gradvis"]`; run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import fx

import gradvis_runtime
from gradvis_export.exporter.formats import dynamic_program, guard_threads, quiet
from gradvis_export.exporter.profiles import profile_passes
from gradvis_runtime import ArtifactSpec, Explainer
from gradvis_runtime.contract import METADATA_KEY

name = "onnx"


class WrittenOnnx:
    """The model as written, kept to rewrite its record without reading the file back."""

    def __init__(self, model, path: Path) -> None:  # noqa: ANN001 - onnx.ModelProto
        self.model, self.path = model, path

    def rewrite(self, spec: ArtifactSpec) -> None:
        import onnx

        _set_record(self.model, spec)
        onnx.save(self.model, str(self.path))


def _set_record(model, spec: ArtifactSpec) -> None:  # noqa: ANN001
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = spec.to_json()
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()


def write(
    gm: fx.GraphModule,
    args: tuple[torch.Tensor, ...],
    spec: ArtifactSpec,
    path: Path,
    opset: int,
) -> WrittenOnnx:
    import onnx

    with quiet():
        program = dynamic_program(gm, args)
        onnx_program = torch.onnx.export(
            program,
            args,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamo=True,
            opset_version=opset,
            optimize=True,
            verify=False,
        )
    model = onnx_program.model_proto
    for onnx_pass in profile_passes(spec.profile).onnx:
        onnx_pass(model, spec.precision)
    _set_record(model, spec)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return WrittenOnnx(model, path)


def load(path: Path) -> Explainer:
    """The artifact on onnxruntime's CPU provider, as the guard runs it."""
    return gradvis_runtime.load(
        path, backend="onnxruntime", providers=["CPUExecutionProvider"], threads=guard_threads()
    )


def runtime_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} CPUExecutionProvider"
