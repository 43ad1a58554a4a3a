"""ScoreCAM and AblationCAM: channel weights from extra forward passes, batched in the graph.

Both loop over channel chunks at trace time: each chunk is one batched forward of the model
(`chunk_size` copies per sample), so an artifact holds ceil(K / chunk_size) forwards and no
data-dependent control flow.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradvis_export.core.layers import LayerSpec, replace_output
from gradvis_export.core.maps import resize_linear
from gradvis_export.core.mode import is_tracing
from gradvis_export.core.targets import Target
from gradvis_export.errors import InputError
from gradvis_export.methods.cam import BaseCAM, LayerContext
from gradvis_export.methods.registry import register


def repeat_samples(t: torch.Tensor, copies: int) -> torch.Tensor:
    """(B, ...) -> (B * copies, ...), each sample repeated `copies` times in a row."""
    return t.unsqueeze(1).expand(t.shape[0], copies, *t.shape[1:]).flatten(0, 1)


def chunks(channels: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, channels)) for start in range(0, channels, size)]


class ChunkedCAM(BaseCAM):
    """Base of the forward-only weightings: a chunk size, scores of batched forwards."""

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
        normalize: bool = True,
        target: Target | None = None,
        chunk_size: int = 32,
    ) -> None:
        super().__init__(model, target_layer, normalize=normalize, target=target)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def validate_input(self, x: object) -> torch.Tensor:
        x = super().validate_input(x)
        if isinstance(x, list):
            raise InputError(
                f"{type(self).__name__} masks one input tensor; a multi-input model (a list of "
                "inputs) works with the gradient explainers (GradCAM and its family, "
                "GuidedBackprop, GuidedGradCAM)"
            )
        return x

    def chunk_scores(self, output: object, ctx: LayerContext, copies: int) -> torch.Tensor:
        """(B * copies) outputs -> (B, copies) target scores, with each sample's own inputs."""
        inputs = {name: repeat_samples(t, copies) for name, t in ctx.inputs.items()}
        return self.target(output, **inputs).view(-1, copies)

    def options(self) -> dict[str, object]:
        return {**super().options(), "chunk_size": self.chunk_size}


@register
class ScoreCAM(ChunkedCAM):
    """Wang et al.: w = softmax_k(y(x * M_k)), M_k the min-max scaled upsampled A_k.

    Masks are upsampled with align_corners=True (pytorch-grad-cam's UpsamplingBilinear2d;
    trilinear for video), and scaled with its 1e-8 epsilon.
    """

    method = "scorecam"

    def channel_weights(self, activation, grad, ctx):
        x = ctx.x.detach()
        scores = []
        with torch.no_grad():
            for start, stop in chunks(activation.shape[1], self.chunk_size):
                masks = resize_linear(activation[:, start:stop], x.shape[2:], align_corners=True)
                flat = masks.flatten(2)
                low = flat.amin(dim=2).view(*masks.shape[:2], *([1] * (x.dim() - 2)))
                high = flat.amax(dim=2).view(*masks.shape[:2], *([1] * (x.dim() - 2)))
                span = high - low
                # span + 1e-8 alone: onnxscript's optimizer drops an Add of a constant within
                # 1e-8 of zero, and a dead channel's 0 / 0 would turn every weight NaN.
                masks = (masks - low) / torch.where(span > 0, span + 1e-8, torch.ones_like(span))
                masked = (x.unsqueeze(1) * masks.unsqueeze(2)).flatten(0, 1)
                scores.append(self.chunk_scores(self.model(masked), ctx, stop - start))
        return torch.softmax(torch.cat(scores, dim=1), dim=1)


@register
class AblationCAM(ChunkedCAM):
    """Desai & Ramaswamy: w_k = (y - y with channel k of the layer set to 0) / y.

    Ablation sets the channel to zero (the paper; pytorch-grad-cam does the same for layers
    whose minimum is 0, e.g. after a ReLU).  When the model's output depends on the input only
    through the layer (checked once per layer with autograd), only the part after the layer is
    batched: the layer's output is repeated per channel, the input is not.
    """

    method = "ablationcam"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._only_through: dict[int, bool] = {}

    def only_through_layer(
        self, x: torch.Tensor, index: int, like: torch.Size | None = None
    ) -> bool:
        """Does the output depend on x only through the layer's output of shape `like` (no
        skip around it)?"""
        if index in self._only_through:
            return self._only_through[index]
        if is_tracing():
            return False  # unknown here: the always-correct path
        _, layer = self.layers[index]
        probe = x[:1].detach().requires_grad_(True)
        with torch.enable_grad(), replace_output(layer, lambda out: out.detach(), like):
            output = self.model(probe)
        tensors = (
            [output]
            if isinstance(output, torch.Tensor)
            else list(output.values() if isinstance(output, dict) else output)
        )
        total = sum(t.float().sum() for t in tensors if t.requires_grad)
        if not isinstance(total, torch.Tensor):
            only = True
        else:
            (grad,) = torch.autograd.grad(total, [probe], allow_unused=True)
            only = grad is None
        self._only_through[index] = only
        return only

    def channel_weights(self, activation, grad, ctx):
        x = ctx.x.detach()
        channels = activation.shape[1]
        _, layer = self.layers[ctx.index]
        suffix_only = self.only_through_layer(x, ctx.index, activation.shape)
        ablated = []
        with torch.no_grad():
            for start, stop in chunks(channels, self.chunk_size):
                copies = stop - start
                hit = torch.arange(start, stop, device=x.device).unsqueeze(1) == torch.arange(
                    channels, device=x.device
                )
                keep = (~hit).to(activation.dtype).repeat(x.shape[0], 1)  # (B * copies, K)

                def ablate(out: torch.Tensor, keep=keep, copies=copies) -> torch.Tensor:
                    if suffix_only:
                        out = repeat_samples(out, copies)
                    return out * keep.view(*keep.shape, *([1] * (out.dim() - 2)))

                with replace_output(layer, ablate, activation.shape):
                    output = self.model(x if suffix_only else repeat_samples(x, copies))
                ablated.append(self.chunk_scores(output, ctx, copies))
        y = ctx.scores.unsqueeze(1)
        safe = torch.where(y != 0, y, torch.ones_like(y))
        return torch.where(y != 0, (y - torch.cat(ablated, dim=1)) / safe, torch.zeros_like(y))
