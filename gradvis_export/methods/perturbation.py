"""ScoreCAM and AblationCAM: channel weights from extra forward passes, batched in the graph.

Both loop over channel chunks at trace time: each chunk is one batched forward of the model
(`chunk_size` copies per sample), so an artifact holds ceil(K / chunk_size) forwards and no
data-dependent control flow.  `ChunkedCAM` is the base of this forward-only family (ReciproCAM,
in `reciprocam.py`, too): the chunk size, the scores of batched copies, and whether only the
part of the model after the layer needs to run on them, and where the layer's own output holds
what the method reads (`LayerLayout`: a map, or tokens read through a `TokenGrid`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from gradvis_export.core.layers import LayerSpec, replace_output
from gradvis_export.core.maps import resize_linear
from gradvis_export.core.mode import is_tracing
from gradvis_export.core.targets import Target
from gradvis_export.core.tokens import TokenGrid
from gradvis_export.errors import InputError, LayerError
from gradvis_export.methods.cam import BaseCAM, LayerContext, per_channel
from gradvis_export.methods.registry import register


def repeat_samples(t: torch.Tensor, copies: int, dim: int = 0) -> torch.Tensor:
    """(B, ...) -> (B * copies, ...), each sample repeated `copies` times in a row; `dim` is
    the batch axis ((L, B, D) tokens: 1)."""
    shape = (*t.shape[: dim + 1], copies, *t.shape[dim + 1 :])
    return t.unsqueeze(dim + 1).expand(shape).flatten(dim, dim + 1)


def chunks(channels: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, channels)) for start in range(0, channels, size)]


class LayerLayout(NamedTuple):
    """Where the layer's own output holds what a method reads as (B, K, *S): its batch axis
    and its shape without that axis -- (0, (K, *S)) for a map; for tokens read through a
    TokenGrid, (0, (prefix + |S|, K)), or (1, ...) for an (L, B, D) layout."""

    batch_dim: int
    shape: tuple[int, ...]

    def holds(self, out: torch.Tensor) -> bool:
        """Is `out` (any batch size) the output the method read?  Not: another call of a shared
        module (one activation module used by a stem and a head, as EfficientNet ports do)."""
        rest = out.shape[: self.batch_dim] + out.shape[self.batch_dim + 1 :]
        return tuple(rest) == self.shape


class ChunkedCAM(BaseCAM):
    """Base of the forward-only methods: a chunk size, scores of batched forwards, and the
    check whether the model's output depends on the input only through the layer.

    The constructor's checks live here once for the family: `chunk_size`, and for a method
    that puts altered copies back in place of the layer's output (`replaces_layer_output`:
    AblationCAM, ReciproCAM) a `reshape` it can invert, i.e. a `TokenGrid` (or None).
    """

    uses_gradients = False
    #: the method replaces the layer's output by altered copies of it (not ScoreCAM, which
    #: masks the input), so it must know where the layer's output holds channel k / position s
    replaces_layer_output = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
        normalize: bool = True,
        target: Target | None = None,
        chunk_size: int = 32,
        *,
        reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(model, target_layer, normalize=normalize, target=target, reshape=reshape)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive int, got {chunk_size!r}")
        invertible = reshape is None or isinstance(reshape, TokenGrid)
        if self.replaces_layer_output and not invertible:
            raise LayerError(
                f"{type(self).__name__} puts altered copies back in place of the layer's output, "
                "so its reshape must be a TokenGrid (whose inverse it knows) or None"
            )
        self.chunk_size = chunk_size
        self._only_through: dict[int, bool] = {}

    def layout(self, activation: torch.Tensor) -> LayerLayout:
        """Where the layer's output holds the (B, K, *S) `activation` the method read."""
        channels, sizes = int(activation.shape[1]), tuple(int(s) for s in activation.shape[2:])
        grid = self.reshape
        if not isinstance(grid, TokenGrid):  # a map (ScoreCAM alone takes other reshapes)
            return LayerLayout(0, (channels, *sizes))
        return LayerLayout(0 if grid.batch_first else 1, (grid.prefix + math.prod(sizes), channels))

    def only_through_layer(
        self, x: torch.Tensor, index: int, layout: LayerLayout | None = None
    ) -> bool:
        """Does the output depend on x only through the layer's output (the one `layout` says
        the method read; None: every call of the layer), with no skip around it?  Then copies
        of the layer's output need only the part after it.

        Checked once per layer in eager mode with autograd (the layer's output detached: does
        any gradient reach x?) and cached; a trace without the cached answer takes the
        always-correct path (the whole model on copies of x)."""
        if index in self._only_through:
            return self._only_through[index]
        if is_tracing():
            return False  # unknown here: the always-correct path
        _, layer = self.layers[index]
        probe = x[:1].detach().requires_grad_(True)

        def detach(out: torch.Tensor) -> torch.Tensor:
            return out.detach() if layout is None or layout.holds(out) else out

        with torch.enable_grad(), replace_output(layer, detach):
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

    A token layer (`reshape=TokenGrid()`, which the default layer of a ViT gets; (B, N, D) or
    (L, B, D)) is ablated on its tokens: channel k of the grid is feature k, set to zero in
    every token, the prefix (class) tokens included -- as pytorch-grad-cam's AblationCAM with
    a reshape_transform and its AblationLayerVit does (`TokenGrid.mask_channels`).
    """

    method = "ablationcam"
    replaces_layer_output = True

    def channel_weights(self, activation, grad, ctx):
        x = ctx.x.detach()
        channels = activation.shape[1]
        grid = self.reshape  # None or a TokenGrid (checked; the default layer sets a TokenGrid)
        layout = self.layout(activation)
        _, layer = self.layers[ctx.index]
        suffix_only = self.only_through_layer(x, ctx.index, layout)
        ablated = []
        with torch.no_grad():
            for start, stop in chunks(channels, self.chunk_size):
                copies = stop - start
                hit = torch.arange(start, stop, device=x.device).unsqueeze(1) == torch.arange(
                    channels, device=x.device
                )
                keep = (~hit).to(activation.dtype)  # (copies, K): copy i ablates start + i

                def ablate(out: torch.Tensor, keep=keep, copies=copies) -> torch.Tensor:
                    if not layout.holds(out):
                        return out  # another call of a shared module: not the one read
                    if suffix_only:
                        out = repeat_samples(out, copies, layout.batch_dim)
                    if grid is not None:
                        return grid.mask_channels(out, keep)
                    return (out.unflatten(0, (-1, copies)) * per_channel(keep, out)).flatten(0, 1)

                with replace_output(layer, ablate):
                    output = self.model(x if suffix_only else repeat_samples(x, copies))
                ablated.append(self.chunk_scores(output, ctx, copies))
        y = ctx.scores.unsqueeze(1)
        safe = torch.where(y != 0, y, torch.ones_like(y))
        return torch.where(y != 0, (y - torch.cat(ablated, dim=1)) / safe, torch.zeros_like(y))
