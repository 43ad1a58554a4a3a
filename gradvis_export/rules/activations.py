"""What gradvis knows about activations: their backward ops, families, and the custom-Function
ones that need an aten-visible stand-in.  One table; explanation rules read it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch._ops import OpOverload

aten = torch.ops.aten

#: activation name -> backward ops (first argument: the incoming gradient).
ACTIVATION_BACKWARDS: dict[str, tuple[OpOverload, ...]] = {
    "relu": (aten.threshold_backward.default,),
    "relu6": (aten.hardtanh_backward.default,),
    "silu": (aten.silu_backward.default,),
    "gelu": (aten.gelu_backward.default,),
    "hardswish": (aten.hardswish_backward.default,),
    "sigmoid": (aten.sigmoid_backward.default,),
    "hardsigmoid": (aten.hardsigmoid_backward.default,),
    "leaky_relu": (aten.leaky_relu_backward.default,),
    "elu": (aten.elu_backward.default,),
    "mish": (aten.mish_backward.default,),
}
ACTIVATION_FAMILIES: dict[str, tuple[str, ...]] = {
    "relu": ("relu", "relu6"),
    "all": tuple(ACTIVATION_BACKWARDS),
}
ACTIVATION_OF_OP = {op: name for name, ops in ACTIVATION_BACKWARDS.items() for op in ops}


def activation_names(activations: str | Iterable[str]) -> tuple[str, ...]:
    """Expand "relu" / "all" / a list of activation names into activation names."""
    requested = [activations] if isinstance(activations, str) else list(activations)
    names: list[str] = []
    for item in requested:
        key = item.lower()
        if key in ACTIVATION_FAMILIES:
            names.extend(ACTIVATION_FAMILIES[key])
        elif key in ACTIVATION_BACKWARDS:
            names.append(key)
        else:
            valid = sorted(set(ACTIVATION_FAMILIES) | set(ACTIVATION_BACKWARDS))
            raise ValueError(f"unknown activation {item!r}; choose from {', '.join(valid)}")
    return tuple(dict.fromkeys(names))


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
