"""Checks on a traced graph: it holds no backward operator and no fake constant, and it uses
every data input.  Each raises ExportError naming the fix."""

from __future__ import annotations

import warnings

import torch
from torch import fx
from torch._ops import OpOverload, OpOverloadPacket
from torch._subclasses.fake_tensor import FakeTensor

from gradvis_export.core.explainer import Inputs
from gradvis_export.errors import ExportError


def check_input_used(gm: fx.GraphModule, names: tuple[str, ...] = ("input",)) -> None:
    """The data placeholders (`input`, or `input_0`, ...) must feed the graph, or the artifact
    ignores an input."""
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node.name in names and not node.users:
            what = "its input" if names == ("input",) else f"its input {node.name!r}"
            raise ExportError(f"the traced graph does not use {what}: the model ignored it")


def _op_name(target: object) -> str:
    if isinstance(target, (OpOverload, OpOverloadPacket)):
        return str(target)
    return getattr(target, "__name__", str(target))


def backward_ops(gm: fx.GraphModule) -> list[str]:
    """Names of backward operators left in the graph (none may reach an artifact)."""
    return sorted(
        {
            _op_name(n.target)
            for n in gm.graph.nodes
            if n.op == "call_function" and "backward" in _op_name(n.target)
        }
    )


def fake_constants(gm: fx.GraphModule) -> list[str]:
    """Attributes of the graph that are FakeTensors (a rule built a constant under fake mode)."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = getattr(gm, node.target, None)
            if isinstance(value, FakeTensor):
                found.append(node.target)
    return found


def forward_op_of(backward_op: str) -> str:
    """'aten.grid_sampler_2d_backward.default' -> 'grid_sampler_2d'."""
    name = backward_op.split(".")[1] if backward_op.count(".") >= 1 else backward_op
    return name.removesuffix("_backward")


def layers_calling(model: torch.nn.Module, x: Inputs, op_names: set[str]) -> dict[str, list[str]]:
    """Which layers of `model` call the aten ops `op_names` in a forward on `x`."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.module_tracker import ModuleTracker

    found: dict[str, list[str]] = {}
    tracker = ModuleTracker()
    root = f"{type(model).__name__}."

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in op_names:
                layers = found.setdefault(name, [])
                for parent in sorted(tracker.parents - {"Global"}, key=len)[-1:]:
                    name = parent.removeprefix(root)  # the tracker prefixes the root class
                    if name not in layers:
                        layers.append(name)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), tracker, Record(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(list(x) if isinstance(x, (list, tuple)) else x)  # a fresh list: models write in it
    return found


def check_forward_only(
    gm: fx.GraphModule, model: torch.nn.Module | None = None, example: Inputs | None = None
) -> fx.GraphModule:
    """Raise ExportError if a backward op or a fake constant is left in the graph.

    Given the model and an example, the error names the layers whose forward op it is.
    """
    left = backward_ops(gm)
    if left:
        where = ""
        if model is not None and example is not None:
            forward = {forward_op_of(op) for op in left}
            layers = sorted(
                {
                    layer
                    for names in layers_calling(model, example, forward).values()
                    for layer in names
                }
            )
            if layers:
                where = f" (the backward of layer(s) {', '.join(repr(n) for n in layers)})"
        raise ExportError(
            f"the traced graph still holds backward operator(s) {', '.join(left)}{where}: no rule "
            "rewrites them into forward operators yet. Choose a target layer or model without "
            "them, or report the layer type so a rule can be added"
        )
    fakes = fake_constants(gm)
    if fakes:
        raise ExportError(
            f"the traced graph holds FakeTensor constants {fakes}: a rule built a "
            "constant under fake mode"
        )
    return gm
