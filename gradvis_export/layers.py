"""Finding target layers by name, and capturing their outputs without leaving anything behind."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .errors import LayerError

LayerSpec = str | nn.Module


def resolve_layer(model: nn.Module, layer: LayerSpec) -> tuple[str, nn.Module]:
    """Return (dotted name, module) for a layer given by name or as the module object."""
    names = {name: module for name, module in model.named_modules() if name}
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return name, module
        raise LayerError(
            f"the module {type(layer).__name__} given as target layer is not part of the model; "
            "pass one of model.named_modules() or its dotted name"
        )
    if not isinstance(layer, str):
        raise LayerError(
            f"a target layer is a dotted name or an nn.Module, got {type(layer).__name__}"
        )
    if layer in names:
        return layer, names[layer]
    close = difflib.get_close_matches(layer, list(names), n=5, cutoff=0.3)
    hint = (
        f"closest names: {', '.join(repr(c) for c in close)}"
        if close
        else (
            f"the model's top-level layers are: {', '.join(repr(n) for n in names if '.' not in n)}"
        )
    )
    raise LayerError(f"the model has no layer named {layer!r}; {hint}")


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]
) -> list[tuple[str, nn.Module]]:
    """Resolve one layer or a list of layers (per-layer maps are averaged by the CAM family)."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved = [resolve_layer(model, layer) for layer in layers]
    if not resolved:
        raise LayerError("at least one target layer is needed")
    return resolved


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


#: Activation modules whose backward is a custom autograd.Function, invisible to aten rules:
#: (module path, class name) -> (activation name, the aten-visible equivalent).
CUSTOM_FUNCTION_ACTIVATIONS = {
    ("pytorchvideo.layers.swish", "Swish"): ("silu", torch.nn.functional.silu),
}


@contextlib.contextmanager
def aten_activations(model: nn.Module, activations: Sequence[str]) -> Iterator[None]:
    """Inside the block, known custom-Function activations compute through their aten op.

    A temporary forward hook replaces the module's output by the same values computed with
    the aten op (pytorchvideo's Swish -> F.silu), so the guided rule for that op applies.
    """
    handles = []
    try:
        for module in model.modules():
            key = (type(module).__module__, type(module).__name__)
            entry = CUSTOM_FUNCTION_ACTIVATIONS.get(key)
            if entry is not None and entry[0] in activations:
                equivalent = entry[1]
                handles.append(
                    module.register_forward_hook(
                        lambda _m, inputs, _out, fn=equivalent: fn(inputs[0])
                    )
                )
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture_outputs(layers: list[tuple[str, nn.Module]]) -> Iterator[list[torch.Tensor | None]]:
    """Record each layer's output (the first tensor of a tuple) during one forward.

    The forward hooks live only inside the `with` block, so the user's model keeps exactly the
    hooks it had.  A layer called more than once keeps its last output.
    """
    captured: list[torch.Tensor | None] = [None] * len(layers)
    handles = []

    def make_hook(index: int):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            captured[index] = _first_tensor(output)

        return hook

    try:
        for index, (_name, module) in enumerate(layers):
            handles.append(module.register_forward_hook(make_hook(index)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replace_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, `module`'s tensor output is replaced by fn(output) (temporary hook)."""

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        if not isinstance(output, torch.Tensor):
            raise LayerError(
                f"the layer returns {type(output).__name__}; ablation needs a layer whose output "
                "is one tensor"
            )
        return fn(output)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
