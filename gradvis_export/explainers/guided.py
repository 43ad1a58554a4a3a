"""Guided backprop and guided Grad-CAM: the guided rule on one shared forward."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..layers import LayerSpec, aten_activations
from ..rules import RuleMode, activation_names, guided_rules
from ..targets import Target
from ..tokens import math_attention
from .base import Explainer, Inputs, gradients
from .gradcam import GradCAM


def check_rules_applied(mode: RuleMode, activations: tuple[str, ...]) -> None:
    """Refuse to return a plain gradient when no chosen activation was rewritten."""
    if mode.applied:
        return
    seen = sorted(mode.activations)
    has = f"its backward pass has {', '.join(seen)}" if seen else "it has no activation we know"
    raise ValueError(
        f"guided backprop found none of the activations {', '.join(activations)} in the model; "
        f"{has}. Use activations='all' (or name them) to guide those; activations written as "
        "custom autograd Functions (other than pytorchvideo's Swish) are not seen"
    )


class GuidedBackprop(Explainer):
    """Springenberg et al.: the input gradient where every activation passes only positive gradients.

    The heatmap is the raw guided gradient (shape of x, signed, not normalised).  For a
    multi-input model (a list of inputs) it is the gradient w.r.t. the input `map_input`
    picks (`pathway`, default: the input with the most positions, SlowFast's fast pathway).
    """

    method = "guided_backprop"

    def __init__(
        self,
        model: nn.Module,
        activations: str | Iterable[str] = "relu",
        target: Target | None = None,
        *,
        pathway: int | None = None,
    ) -> None:
        super().__init__(model, target, pathway=pathway)
        self.activations = activation_names(activations)
        self.rules = guided_rules(self.activations)

    def forward_context(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(math_attention())  # attention's backward as plain ops: exportable
        stack.enter_context(aten_activations(self.model, self.activations))
        return stack

    def guided_gradient(self, x: Inputs, score: torch.Tensor) -> torch.Tensor:
        (grad,), mode = gradients(score, [self.map_input(x)], ["the input"], rules=self.rules)
        check_rules_applied(mode, self.activations)
        return grad

    def explain(self, x: Inputs, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        output = self.run_model(x)
        score = self.scores(output, inputs).sum()
        return self.outputs(output, heatmap=self.guided_gradient(x, score))

    def metadata(self) -> dict[str, object]:
        return {
            **super().metadata(),
            "activations": list(self.activations),
            **({"pathway": self.pathway} if self.pathway is not None else {}),
        }


class GuidedGradCAM(GradCAM):
    """Selvaraju et al.: guided backprop x upsampled Grad-CAM, from one shared forward.

    Two backward passes over that forward: plain rules to the target layer (the CAM), guided
    rules to the input.  `.cam` is normalised when `normalize` (then `.heatmap` is the guided
    gradient scaled by a [0,1] map).
    """

    method = "guided_gradcam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
        activations: str | Iterable[str] = "relu",
        normalize: bool = True,
        target: Target | None = None,
        *,
        reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
        pathway: int | None = None,
    ) -> None:
        super().__init__(
            model, target_layer, normalize=normalize, target=target, reshape=reshape,
            pathway=pathway,
        )  # fmt: skip
        self.activations = activation_names(activations)
        self.rules = guided_rules(self.activations)

    forward_context = GuidedBackprop.forward_context
    guided_gradient = GuidedBackprop.guided_gradient

    def explain(self, x: Inputs, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        output, scores, activations, grads = self.layer_grads(x, inputs, retain_graph=True)
        cam = self.cam(x, output, inputs, scores, activations, grads)
        guided = self.guided_gradient(x, scores.sum())
        return self.outputs(output, heatmap=guided * cam.unsqueeze(1), cam=cam, guided=guided)

    def metadata(self) -> dict[str, object]:
        return {**super().metadata(), "activations": list(self.activations)}
