"""Export profiles: graph rewrites for one deployment target, as passes.  A profile adds passes
on the traced graph (before writing) and on the ONNX model (after exporting); both kinds are
plain functions, listed here per profile.  Profiles apply to ONNX artifacts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gradvis_export.errors import ExportError
from gradvis_export.exporter.ort_cpu import split_depthwise_conv3d
from gradvis_export.exporter.passes import GraphPass
from gradvis_export.exporter.precision import onnx_fp16_fixup
from gradvis_export.exporter.tensorrt import rewrite_max_pool_backward, tensorrt_problems
from gradvis_runtime.contract import PROFILES as PROFILE_NAMES

#: A pass on the exported ONNX model (changed in place), given the artifact's precision.
OnnxPass = Callable[[object, str], None]


@dataclass(frozen=True)
class Profile:
    graph: tuple[GraphPass, ...] = ()
    onnx: tuple[OnnxPass, ...] = ()


def tensorrt_max_pool(model, precision: str) -> None:  # noqa: ANN001 - onnx.ModelProto
    """Max-pool backward without MaxPool's Indices output (the TensorRT parser rejects it)."""
    if rewrite_max_pool_backward(model) and precision == "fp16":
        onnx_fp16_fixup(model)


def tensorrt_check(model, precision: str) -> None:  # noqa: ANN001
    """Refuse the export when an operator the TensorRT 10 parser cannot build is left."""
    problems = tensorrt_problems(model)
    if problems:
        raise ExportError(
            "the graph has operators the TensorRT profile cannot keep ("
            + "; ".join(problems[:5])
            + "); export without profile='tensorrt' for onnxruntime"
        )


PROFILES: dict[str | None, Profile] = {
    None: Profile(),
    "tensorrt": Profile(onnx=(tensorrt_max_pool, tensorrt_check)),
    "onnxruntime-cpu": Profile(graph=(split_depthwise_conv3d,)),
}
assert set(PROFILES) - {None} == set(PROFILE_NAMES)


def profile_passes(name: str | None) -> Profile:
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(map(repr, PROFILE_NAMES))}"
        )
    return PROFILES[name]
