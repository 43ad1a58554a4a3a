"""One backward pass under a rule set: the gradient every gradient method starts from."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gradvis_export.errors import LayerError
from gradvis_export.rules.explanation import RuleMode, RuleSet


def gradients(
    score: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    names: Sequence[str],
    rules: RuleSet | None = None,
    retain_graph: bool = False,
) -> tuple[list[torch.Tensor], RuleMode]:
    """d score / d inputs, with `rules` rewriting the backward ops of this pass only."""
    mode = RuleMode(rules or {})
    with mode:
        grads = torch.autograd.grad(
            score, list(inputs), retain_graph=retain_graph, allow_unused=True
        )
    for grad, name in zip(grads, names):
        if grad is None:
            raise LayerError(
                f"the model's output does not depend on {name}; choose a layer on the path "
                "from the input to the logits"
            )
    return list(grads), mode
