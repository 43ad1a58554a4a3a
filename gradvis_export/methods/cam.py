"""The CAM family: one base; each method overrides the channel weights (or the layer map)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from gradvis_export.core.explainer import Explainer, Inputs
from gradvis_export.core.layers import LayerSpec, default_layer, resolve_layers
from gradvis_export.core.maps import normalize_per_sample, upsample_to
from gradvis_export.core.targets import Target
from gradvis_export.core.tokens import math_attention
from gradvis_export.errors import LayerError
from gradvis_export.methods.backward import gradients
from gradvis_export.methods.registry import register


@dataclass
class LayerContext:
    """What a method may use besides one layer's activation and gradient."""

    x: Inputs  # the input (a list for a multi-input model)
    inputs: dict[str, torch.Tensor]  # the target's inputs, resolved on the clean output
    scores: torch.Tensor  # (B,) the clean target score per sample
    index: int  # which of the target layers


def spatial_dims(t: torch.Tensor) -> list[int]:
    return list(range(2, t.dim()))


def per_channel(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """(B, K) -> (B, K, 1, ...) to broadcast over the activation's positions."""
    return weights.view(*weights.shape, *([1] * (activation.dim() - 2)))


class BaseCAM(Explainer):
    """CAM-style explainer: map = ReLU(sum_k w_k A_k) per layer, upsampled to the input.

    A method overrides `channel_weights` (B, K), or `layer_map` when it is not a channel
    weighting.  With several target layers, the per-layer maps (normalised when `normalize`)
    are averaged, as pytorch-grad-cam does.  `reshape` maps a layer's output to (B, K, *S)
    before anything else (e.g. `TokenGrid()` for ViT tokens); it must be linear, since it is
    applied to the gradient too.

    `target_layer=None` chooses the layer on the first call, by the rule of
    `gradvis_export.core.layers.default_layer` (the last spatial feature map; a token layer gets
    its `TokenGrid` unless `reshape` is given), and keeps it.  For a multi-input model (a list
    of inputs) the map is upsampled to the input `map_input` picks (`pathway`, default: the
    input with the most positions).
    """

    method: str | None = None  # each registered subclass names itself
    uses_gradients = True
    takes_layer = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
        normalize: bool = True,
        target: Target | None = None,
        *,
        reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
        pathway: int | None = None,
    ) -> None:
        super().__init__(model, target, pathway=pathway)
        self.default_layer = target_layer is None
        self._layers = None if target_layer is None else resolve_layers(model, target_layer)
        self.normalize = normalize
        self.reshape = reshape

    @property
    def layers(self) -> list[tuple[str, nn.Module]]:
        if self._layers is None:
            raise LayerError(
                "the default target layer is chosen on the first eager call, which has not "
                "happened yet: call the explainer once (gv.export does) or pass target_layer"
            )
        return self._layers

    def prepare(self, x: Inputs) -> None:
        if self._layers is None:
            choice = default_layer(self.model, x)
            self._layers = resolve_layers(self.model, choice.name)
            if self.reshape is None:
                self.reshape = choice.reshape

    def forward_context(self) -> contextlib.AbstractContextManager:
        return math_attention()  # attention's backward as plain ops: exportable

    def reshaped(self, x: Inputs, tensors: list) -> list:
        """Layer outputs (or their gradients) as (B, K, *S): `reshape` applied when given."""
        if self.reshape is not None:
            return [t if t is None else self.reshape(t) for t in tensors]
        for (name, _), t in zip(self.layers, tensors):
            if t is not None and t.dim() == 3 and self.map_input(x).dim() == 4:
                raise LayerError(
                    f"layer {name!r} outputs {tuple(t.shape)}, transformer tokens (B, N, D) rather "
                    "than a (B, C, H, W) map; pass reshape=gradvis_export.core.tokens.TokenGrid()"
                )
        return tensors

    def channel_weights(
        self, activation: torch.Tensor, grad: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        """Weights (B, K) of the activation's channels; what most methods define."""
        raise NotImplementedError

    def layer_map(
        self, activation: torch.Tensor, grad: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        """(B, *S) map of one layer, before the ReLU and upsampling."""
        weights = self.channel_weights(activation, grad, ctx)
        return (per_channel(weights, activation) * activation).sum(dim=1)

    def combine(self, x: Inputs, maps: list[torch.Tensor]) -> torch.Tensor:
        maps = [upsample_to(torch.relu(m), self.map_input(x)) for m in maps]
        if self.normalize:
            maps = [normalize_per_sample(m) for m in maps]
        cam = maps[0] if len(maps) == 1 else torch.stack(maps).mean(dim=0)
        return normalize_per_sample(cam) if self.normalize and len(maps) > 1 else cam

    def layer_grads(self, x: Inputs, inputs: dict[str, torch.Tensor], retain_graph: bool = False):
        """One forward capturing the layers; the gradients of the summed score if needed."""
        output, activations = self.forward_with_layers(x, self.layers)
        scores = self.scores(output, inputs)
        if self.uses_gradients:
            names = [f"layer {name!r}" for name, _ in self.layers]
            grads, _ = gradients(scores.sum(), activations, names, retain_graph=retain_graph)
        else:
            grads = [None] * len(activations)
        return output, scores, self.reshaped(x, activations), self.reshaped(x, grads)

    def cam(self, x, output, inputs, scores, activations, grads) -> torch.Tensor:
        resolved = self.target.resolve(output, inputs)
        maps = [
            self.layer_map(a, g, LayerContext(x, resolved, scores, i))
            for i, (a, g) in enumerate(zip(activations, grads))
        ]
        return self.combine(x, maps)

    def explain(self, x: Inputs, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        output, scores, activations, grads = self.layer_grads(x, inputs)
        if not self.uses_gradients:
            activations, scores = [a.detach() for a in activations], scores.detach()
        heatmap = self.cam(x, output, inputs, scores, activations, grads)
        return self.outputs(output, heatmap=heatmap)

    meanings = {
        "heatmap": "the class activation map (ReLU'd), at the input's size; in [0, 1] per "
        "sample when normalised"
    }

    @property
    def target_layers(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.layers)

    def options(self) -> dict[str, object]:
        return {
            **super().options(),
            "default_layer": self.default_layer,
            "normalize": self.normalize,
            **({"reshape": getattr(self.reshape, "metadata", dict)()} if self.reshape else {}),
        }


@register
class GradCAM(BaseCAM):
    """Selvaraju et al.: w_k = mean over positions of dy/dA_k."""

    method = "gradcam"

    def channel_weights(self, activation, grad, ctx):
        return grad.mean(dim=spatial_dims(grad))


@register
class GradCAMPlusPlus(BaseCAM):
    """Chattopadhay et al. (eq. 19): w_k = sum_s ReLU(G) alpha, alpha = G^2 / (2G^2 + sum(A) G^3).

    The 1e-6 epsilon and alpha = 0 where G = 0 are pytorch-grad-cam's.
    """

    method = "gradcam++"

    def channel_weights(self, activation, grad, ctx):
        dims = spatial_dims(grad)
        sum_a = activation.sum(dim=dims, keepdim=True)
        g2 = grad * grad
        alpha = g2 / (2 * g2 + sum_a * g2 * grad + 1e-6)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(grad) * alpha).sum(dim=dims)


@register
class XGradCAM(BaseCAM):
    """Fu et al.: w_k = sum_s G A / (sum_s A + 1e-7)."""

    method = "xgradcam"

    def channel_weights(self, activation, grad, ctx):
        dims = spatial_dims(grad)
        sum_a = activation.sum(dim=dims, keepdim=True)
        return (grad * activation / (sum_a + 1e-7)).sum(dim=dims)


@register
class HiResCAM(BaseCAM):
    """Draelos & Carin: sum_k G_k * A_k, element-wise (faithful to the score for linear heads)."""

    method = "hirescam"

    def layer_map(self, activation, grad, ctx):
        return (grad * activation).sum(dim=1)


@register
class GradCAMElementWise(BaseCAM):
    """sum_k ReLU(G_k * A_k)."""

    method = "gradcam-elementwise"

    def layer_map(self, activation, grad, ctx):
        return torch.relu(grad * activation).sum(dim=1)


@register
class LayerCAM(BaseCAM):
    """Jiang et al.: sum_k ReLU(G_k) * A_k."""

    method = "layercam"

    def layer_map(self, activation, grad, ctx):
        return (torch.relu(grad) * activation).sum(dim=1)
