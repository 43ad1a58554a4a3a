"""Guided backprop and guided Grad-CAM.  The guided part is a component (`GuidedGradient`: a
rule set and the activations it rewrites) that guided Grad-CAM combines with a Grad-CAM on
one shared forward."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from gradvis_export.core.explainer import Explainer, Inputs
from gradvis_export.core.layers import LayerSpec
from gradvis_export.core.targets import Target
from gradvis_export.core.tokens import math_attention
from gradvis_export.methods.backward import gradients
from gradvis_export.methods.cam import GradCAM
from gradvis_export.methods.registry import register
from gradvis_export.rules.activations import activation_names, aten_activations
from gradvis_export.rules.explanation import RuleMode, RuleSet, guided_rules


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


class GuidedGradient:
    """The input gradient with a rule set rewriting the chosen activations' backward ops.

    `rules` defaults to guided backprop's (`guided_rules(activations)`: pass only positive
    gradients); another rule set over the same activations gives another guided method."""

    def __init__(self, activations: str | Iterable[str] = "relu", rules: RuleSet | None = None):
        self.activations = activation_names(activations)
        self.rules = guided_rules(self.activations) if rules is None else rules

    def context(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """The forward the gradient is taken over: attention as plain ops, custom-Function
        activations through their aten op (so the rules see them)."""
        stack = contextlib.ExitStack()
        stack.enter_context(math_attention())
        stack.enter_context(aten_activations(model, self.activations))
        return stack

    def gradient(self, x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        (grad,), mode = gradients(score, [x], ["the input"], rules=self.rules)
        check_rules_applied(mode, self.activations)
        return grad


@register
class GuidedBackprop(Explainer):
    """Springenberg et al.: the input gradient where every activation passes only positive gradients.

    The heatmap is the raw guided gradient (shape of x, signed, not normalised).  For a
    multi-input model (a list of inputs) it is the gradient w.r.t. the input `map_input`
    picks (`pathway`, default: the input with the most positions, SlowFast's fast pathway).
    """

    method = "guided"
    takes_activations = True
    meanings = {"heatmap": "the guided gradient w.r.t. the input (signed, the input's shape)"}

    def __init__(
        self,
        model: nn.Module,
        activations: str | Iterable[str] = "relu",
        target: Target | None = None,
        *,
        pathway: int | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        super().__init__(model, target, pathway=pathway)
        self.guide = GuidedGradient(activations, rules)

    @property
    def activations(self) -> tuple[str, ...]:
        return self.guide.activations

    def forward_context(self) -> contextlib.AbstractContextManager:
        return self.guide.context(self.model)

    def explain(self, x: Inputs, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        output = self.run_model(x)
        score = self.scores(output, inputs).sum()
        return self.outputs(output, heatmap=self.guide.gradient(self.map_input(x), score))

    def options(self) -> dict[str, object]:
        return {**super().options(), "activations": list(self.activations)}


@register
class GuidedGradCAM(Explainer):
    """Selvaraju et al.: guided backprop x upsampled Grad-CAM, from one shared forward.

    It has a Grad-CAM (`gradcam`) and a guided gradient (`guide`): two backward passes over
    the Grad-CAM's forward, plain rules to the target layer (the CAM), guided rules to the
    input.  `.cam` is normalised when `normalize` (then `.heatmap` is the guided gradient
    scaled by a [0,1] map).
    """

    method = "guided-gradcam"
    takes_layer = True
    takes_activations = True
    meanings = {"heatmap": "the guided gradient times the CAM (signed, the input's shape)"}

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
        rules: RuleSet | None = None,
    ) -> None:
        super().__init__(model, target, pathway=pathway)
        self.gradcam = GradCAM(
            model, target_layer, normalize=normalize, target=self.target, reshape=reshape,
            pathway=pathway,
        )  # fmt: skip
        self.guide = GuidedGradient(activations, rules)

    @property
    def activations(self) -> tuple[str, ...]:
        return self.guide.activations

    @property
    def layers(self) -> list[tuple[str, nn.Module]]:
        return self.gradcam.layers

    @property
    def target_layers(self) -> tuple[str, ...]:
        return self.gradcam.target_layers

    @property
    def normalize(self) -> bool:
        return self.gradcam.normalize

    def prepare(self, x: Inputs) -> None:
        self.gradcam.prepare(x)

    def forward_context(self) -> contextlib.AbstractContextManager:
        return self.guide.context(self.model)

    def explain(self, x: Inputs, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        cam_of = self.gradcam
        output, scores, activations, grads = cam_of.layer_grads(x, inputs, retain_graph=True)
        cam = cam_of.cam(x, output, inputs, scores, activations, grads)
        guided = self.guide.gradient(self.map_input(x), scores.sum())
        return self.outputs(output, heatmap=guided * cam.unsqueeze(1), cam=cam, guided=guided)

    def options(self) -> dict[str, object]:
        return {**self.gradcam.options(), "activations": list(self.activations)}
