"""Explanation rules: rewrites of what a backward op computes (guided backprop's activations
pass only positive gradients), applied by `RuleMode` around one `autograd.grad` call, in
eager mode and while tracing alike -- so two backward passes over one forward can use
different rules (guided Grad-CAM)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

from gradvis_export.rules.activations import (
    ACTIVATION_BACKWARDS,
    ACTIVATION_OF_OP,
    activation_names,
)

aten = torch.ops.aten

Rule = Callable[..., object]
RuleSet = Mapping[OpOverload, Rule]


def _guided(op: OpOverload) -> Rule:
    """Guided backprop for one activation: its own derivative times ReLU(incoming gradient).

    For ReLU this is Springenberg's rule: pass only where input > 0 and gradient > 0.
    """

    def rule(grad: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return op(aten.relu.default(grad), *args, **kwargs)

    return rule


def guided_rules(activations: str | Iterable[str]) -> dict[OpOverload, Rule]:
    """The guided-backprop rule set for the chosen activations."""
    return {
        op: _guided(op)
        for name in activation_names(activations)
        for op in ACTIVATION_BACKWARDS[name]
    }


class RuleMode(TorchDispatchMode):
    """Apply a rule set to the ops dispatched inside it, and count what it saw.

    `applied` counts the ops a rule rewrote; `activations` counts every activation backward
    that passed, rewritten or not, so an explainer can say which activations a model has.
    """

    def __init__(self, rules: RuleSet) -> None:
        super().__init__()
        self.rules = rules
        self.applied: Counter[OpOverload] = Counter()
        self.activations: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        activation = ACTIVATION_OF_OP.get(func)
        if activation is not None:
            self.activations[activation] += 1
        rule = self.rules.get(func)
        if rule is None:
            return func(*args, **kwargs)
        self.applied[func] += 1
        return rule(*args, **kwargs)
