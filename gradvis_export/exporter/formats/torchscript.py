"""TorchScript artifacts: `torch.jit.script` of the traced graph made scriptable, the contract as
the extra file `gradvis.json`; run by torch.jit.load or LibTorch C++ under inference mode."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import fx
from torch._ops import OpOverload

import gradvis_runtime
from gradvis_export.exporter.formats import quiet
from gradvis_runtime import ArtifactSpec, Explainer
from gradvis_runtime.contract import METADATA_KEY

name = "torchscript"


def scriptable(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite the graph so `torch.jit.script` takes it.

    TorchScript cannot call `aten.<op>.<overload>` objects: each becomes its overload packet;
    the symbolic-shape helpers (sym_float, sym_int, ...) become Python builtins.
    """
    builtins = {torch.sym_float: float, torch.sym_int: int, torch.sym_max: max, torch.sym_min: min}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, OpOverload):
            node.target = node.target.overloadpacket
        elif node.target in builtins:
            node.target = builtins[node.target]
    gm.recompile()
    return gm


class WrittenScript:
    """The scripted module, kept to save again with a revised record."""

    def __init__(self, module: torch.jit.ScriptModule, path: Path) -> None:
        self.module, self.path = module, path

    def rewrite(self, spec: ArtifactSpec) -> None:
        _save(self.module, self.path, spec)


def _save(module: torch.jit.ScriptModule, path: Path, spec: ArtifactSpec) -> None:
    with quiet():
        torch.jit.save(module, str(path), _extra_files={f"{METADATA_KEY}.json": spec.to_json()})


def write(
    gm: fx.GraphModule,
    args: tuple[torch.Tensor, ...],
    spec: ArtifactSpec,
    path: Path,
    opset: int,
) -> WrittenScript:
    with quiet():
        module = torch.jit.script(scriptable(gm))
    _save(module, path, spec)
    return WrittenScript(module, path)


def load(path: Path) -> Explainer:
    """The artifact through torch.jit.load, as the guard runs it (just written: trusted)."""
    return gradvis_runtime.load(path, backend="torchscript", trust=True)


def runtime_name() -> str:
    return f"TorchScript, torch {torch.__version__}, CPU"
