"""The CAM family: one base, each method overrides the channel weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..layers import LayerSpec, resolve_layers
from .base import (
    Explainer,
    ExplainerOutput,
    gradients,
    normalize_per_sample,
    selected_score,
    upsample_to,
)


class BaseCAM(Explainer):
    """Grad-CAM-style explainer: map = ReLU(sum_k w_k A_k), upsampled to the input, per layer.

    With several target layers, the per-layer maps (normalised when `normalize`) are averaged,
    as pytorch-grad-cam does.
    """

    method = "cam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec],
        normalize: bool = True,
    ) -> None:
        super().__init__(model)
        self.layers = resolve_layers(model, target_layer)
        self.normalize = normalize

    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Weights (B, K, 1, ...) of the activation's channels; the one thing a method defines."""
        raise NotImplementedError

    def layer_map(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """(B, *S) map of one layer, before upsampling."""
        weights = self.channel_weights(activation, grad)
        return torch.relu((weights * activation).sum(dim=1))

    def cam(
        self, x: torch.Tensor, activations: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> torch.Tensor:
        maps = [upsample_to(self.layer_map(a, g), x) for a, g in zip(activations, grads)]
        if self.normalize:
            maps = [normalize_per_sample(m) for m in maps]
        cam = maps[0] if len(maps) == 1 else torch.stack(maps).mean(dim=0)
        return normalize_per_sample(cam) if self.normalize and len(maps) > 1 else cam

    def layer_grads(self, x: torch.Tensor, target: torch.Tensor, retain_graph: bool = False):
        logits, activations = self.forward_with_layers(x, self.layers)
        score, _ = selected_score(logits, target)
        names = [f"layer {name!r}" for name, _ in self.layers]
        grads, _ = gradients(score, activations, names, retain_graph=retain_graph)
        return logits, score, activations, grads

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> NamedTuple:
        logits, _, activations, grads = self.layer_grads(x, target)
        return ExplainerOutput(logits.detach(), self.cam(x, activations, grads).detach())

    def metadata(self) -> dict[str, object]:
        return {
            "method": self.method,
            "target_layer": [name for name, _ in self.layers],
            "normalize": self.normalize,
        }


def spatial_dims(t: torch.Tensor) -> list[int]:
    return list(range(2, t.dim()))


class GradCAM(BaseCAM):
    """Selvaraju et al.: w_k = mean over positions of dy/dA_k."""

    method = "gradcam"

    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.mean(dim=spatial_dims(grad), keepdim=True)
