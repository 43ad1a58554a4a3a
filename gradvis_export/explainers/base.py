"""The explainer base: forward, target selection, one backward pass under a rule set."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..errors import InputError, LayerError
from ..layers import capture_outputs
from ..rules import RuleMode, RuleSet, resize_linear

_TRACING: contextvars.ContextVar[bool] = contextvars.ContextVar("gradvis_tracing", default=False)


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Mark a trace for export: data-dependent checks (target range) are skipped inside it."""
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)


def is_tracing() -> bool:
    return _TRACING.get()


class ExplainerOutput(NamedTuple):
    logits: torch.Tensor
    heatmap: torch.Tensor


def check_input(x: object) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        raise InputError(
            "multi-input models (a list of tensors) are not supported yet; pass one tensor "
            "(B,C,H,W) for images or (B,C,T,H,W) for video"
        )
    if not isinstance(x, torch.Tensor):
        raise InputError(f"the input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise InputError(
            f"the input has shape {tuple(x.shape)} (rank {x.dim()}); expected an image batch "
            "(B,C,H,W) or a video batch (B,C,T,H,W) — add the batch dimension with x[None]"
        )
    if not x.is_floating_point():
        raise InputError(
            f"the input has dtype {x.dtype}; explainers take floating-point input, "
            "e.g. x.float() / 255 followed by the model's normalisation"
        )
    return x


def target_tensor(target: object, batch: int, device: torch.device) -> torch.Tensor:
    """The `target` graph input: int64 (B,), -1 meaning the argmax of that sample."""
    if target is None:
        return torch.full((batch,), -1, dtype=torch.long, device=device)
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=device)
    if isinstance(target, Sequence) and not isinstance(target, torch.Tensor):
        target = torch.tensor(list(target), dtype=torch.long)
    if not isinstance(target, torch.Tensor):
        raise InputError(
            f"target must be None, an int or an int64 tensor (B,), got {type(target).__name__}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise InputError(f"target must hold class indices (int64), got dtype {target.dtype}")
    if target.dim() == 0:
        target = target.expand(batch)
    if target.dim() != 1 or (not is_tracing() and target.shape[0] != batch):
        raise InputError(
            f"target has shape {tuple(target.shape)}; expected ({batch},): one class index per "
            "sample, -1 for the sample's argmax"
        )
    return target.to(device=device, dtype=torch.long)


def selected_score(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the batch of each sample's target logit, and the resolved class per sample.

    A one-hot mask (not an index) so that, in an artifact, a target outside [0, classes)
    selects nothing: the heatmap is all zero and no runtime raises.
    """
    if logits.dim() != 2:
        raise InputError(
            f"the model returned shape {tuple(logits.shape)}; explainers expect class scores "
            "(B, num_classes)"
        )
    classes = torch.where(target < 0, logits.argmax(dim=1), target)
    if not is_tracing():
        num_classes = logits.shape[1]
        bad = (target < -1) | (target >= num_classes)
        if bool(bad.any()):
            raise InputError(
                f"target {target[bad].tolist()} out of range: the model has {num_classes} classes "
                f"(valid targets 0..{num_classes - 1}, or -1 for the argmax)"
            )
    onehot = classes.unsqueeze(1) == torch.arange(logits.shape[1], device=logits.device)
    score = (logits * onehot.to(logits.dtype)).sum()
    return score, classes


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


def upsample_to(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, *S) -> (B, *x.shape[2:]): bilinear for images, trilinear for video, align_corners=False."""
    spatial = x.dim() - 2
    if maps.dim() - 1 != spatial:
        raise LayerError(
            f"the target layer's output has {maps.dim() - 1} spatial dims but the input has "
            f"{spatial}; choose a layer that outputs (B,C,{'T,' if spatial == 3 else ''}H,W)"
        )
    return resize_linear(maps, x.shape[2:])


def normalize_per_sample(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each sample to [0, 1]; a constant map becomes all zero (never NaN)."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    span = high - low
    shape = (-1,) + (1,) * (maps.dim() - 1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    scaled = (maps - low.view(shape)) / safe.view(shape)
    return torch.where(span.view(shape) > 0, scaled, torch.zeros_like(scaled))


class Explainer(nn.Module):
    """An explainer is a module: forward(x, target) -> logits and heatmap(s).

    Subclasses implement `explain(x, target)`; this base validates input, turns `target`
    into the int64 tensor the exported graph takes, and makes sure gradients are recorded.
    The user's model is held, never modified.
    """

    method: str = "explainer"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model

    def forward(self, x: torch.Tensor, target: object = None) -> NamedTuple:
        x = check_input(x)
        target = target_tensor(target, x.shape[0], x.device)
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "explainers need autograd in eager mode; call them outside torch.inference_mode() "
                "(the exported artifact is the one that runs under inference mode)"
            )
        with torch.enable_grad(), self.forward_context():
            return self.explain(x.detach().requires_grad_(True), target)

    def forward_context(self) -> contextlib.AbstractContextManager:
        """A context the model's forward runs in (guided explainers adapt activations here)."""
        return contextlib.nullcontext()

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> NamedTuple:
        raise NotImplementedError

    def metadata(self) -> dict[str, object]:
        """What an exported artifact records about this explainer."""
        return {"method": self.method}

    def forward_with_layers(
        self, x: torch.Tensor, layers
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model once, capturing the outputs of `layers`."""
        with capture_outputs(layers) as captured:
            logits = self.model(x)
        if not isinstance(logits, torch.Tensor):
            raise InputError(
                f"the model returned {type(logits).__name__}; explainers expect a tensor of class "
                "scores (B, num_classes)"
            )
        missing = [name for (name, _), out in zip(layers, captured) if out is None]
        if missing:
            raise LayerError(
                f"layer {missing[0]!r} did not run (or returned no tensor) during the forward pass; "
                "choose a layer the model calls"
            )
        return logits, captured
