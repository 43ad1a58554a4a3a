"""The explainer base: input checks, the target's graph inputs, the model's forward with captured
layers, the output tuple, and what an artifact records about an explainer."""

from __future__ import annotations

import collections
import contextlib
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from gradvis_export.core.layers import capture_outputs
from gradvis_export.core.mode import is_tracing
from gradvis_export.core.targets import ClassTarget, Target
from gradvis_export.errors import GradvisError, InputError, LayerError


class ExplainerOutput(NamedTuple):
    logits: torch.Tensor
    heatmap: torch.Tensor


class GuidedGradCAMOutput(NamedTuple):
    logits: torch.Tensor
    heatmap: torch.Tensor
    cam: torch.Tensor
    guided: torch.Tensor


#: An explainer's input: one tensor, or a list of tensors for a multi-input model (SlowFast).
Inputs = torch.Tensor | list[torch.Tensor]


def check_input(x: object, what: str = "the input") -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        raise InputError(
            "this explainer takes one tensor, not a multi-input list: pass (B,C,H,W) for "
            "images or (B,C,T,H,W) for video (lists of tensors work with the gradient "
            "explainers: GradCAM and its family, GuidedBackprop, GuidedGradCAM)"
        )
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise InputError(
            f"{what} has shape {tuple(x.shape)} (rank {x.dim()}); expected an image batch "
            "(B,C,H,W) or a video batch (B,C,T,H,W) — add the batch dimension with x[None]"
        )
    if not x.is_floating_point():
        raise InputError(
            f"{what} has dtype {x.dtype}; explainers take floating-point input, "
            "e.g. x.float() / 255 followed by the model's normalisation"
        )
    if x.numel() == 0:
        raise InputError(f"{what} has shape {tuple(x.shape)}: no values (a size is 0)")
    if not is_tracing() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(
            f"{what} has {bad} NaN or infinite value(s) of {x.numel()}: a heatmap of them "
            "would mean nothing; check the decoder and the normalisation (std > 0)"
        )
    return x


def check_inputs(x: object) -> Inputs:
    """One tensor, or a non-empty list/tuple of tensors with one batch size (returned as a
    list: the model receives a list, as pytorchvideo's SlowFast expects)."""
    if not isinstance(x, (list, tuple)):
        return check_input(x)
    if not x:
        raise InputError("the multi-input list is empty; pass the model's input tensors")
    tensors = [check_input_item(t, i) for i, t in enumerate(x)]
    if is_tracing():  # the trace ties the batch sizes; int() would fix them to the example's
        return tensors
    batches = [int(t.shape[0]) for t in tensors]
    if len(set(batches)) > 1:
        raise InputError(
            f"the inputs of the multi-input list have batch sizes {batches}; every input "
            "holds the same samples, so the batch sizes must be equal"
        )
    return tensors


def check_input_item(x: object, index: int) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        raise InputError(f"input {index} of the multi-input list is itself a list; nest once")
    return check_input(x, f"input {index} of the multi-input list")


def first_input(x: Inputs) -> torch.Tensor:
    """The tensor that stands for the batch (size, device) of one or several inputs."""
    return x[0] if isinstance(x, list) else x


def each_input(x: Inputs) -> list[torch.Tensor]:
    return list(x) if isinstance(x, list) else [x]


def check_fits_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """The input's dtype and device must be the model's (else torch fails deep inside)."""
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is None:
        return x
    if x.dtype != weight.dtype:
        raise InputError(
            f"the input is {x.dtype} but the model's weights are {weight.dtype}: convert one, "
            f"e.g. x.to({weight.dtype})"
        )
    if x.device != weight.device:
        raise InputError(
            f"the input is on {x.device} but the model is on {weight.device}: move one, e.g. "
            f"x.to('{weight.device}')"
        )
    return x


@functools.cache
def output_type(fields: tuple[str, ...]) -> type:
    """The NamedTuple an explainer returns: the model's outputs, then the maps."""
    for known in (ExplainerOutput, GuidedGradCAMOutput):
        if fields == known._fields:
            return known
    return collections.namedtuple("ExplainerOutput", fields)


def _field_name(key: object, index: int) -> str:
    name = str(key)
    return name if name.isidentifier() and not name.startswith("_") else f"output{index}"


def bind_inputs(names: Sequence[str], args: tuple, kwargs: dict) -> dict[str, object]:
    """forward(x, *args, **kwargs) -> {input name: value}, with errors that list the names."""
    if len(args) > len(names):
        raise InputError(
            f"the explainer takes {len(names)} input(s) after x ({', '.join(names) or 'none'}), "
            f"got {len(args)}"
        )
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise InputError(
                f"unknown input {key!r}; this explainer's target takes "
                f"{', '.join(map(repr, names)) or 'no inputs'}"
            )
        if key in values:
            raise InputError(f"input {key!r} given twice")
        values[key] = value
    return values


class Explainer(nn.Module):
    """An explainer is a module: forward(x, *target inputs) -> the model's outputs and maps.

    Subclasses implement `explain(x, inputs)`; this base validates input, turns the target's
    inputs (`target`, `mask`, ...) into the tensors the exported graph takes, and makes sure
    gradients are recorded.  The user's model is held, never modified.
    """

    #: the public name (the registry's key, the CLI's choice, the artifact's `method`)
    method: str | None = None
    #: whether the constructor takes `target_layer` / `activations` (see `make_explainer`)
    takes_layer = False
    takes_activations = False

    def __init__(
        self, model: nn.Module, target: Target | None = None, *, pathway: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if target is not None and not isinstance(target, Target):
            raise TypeError(
                f"target must be a gradvis target (ClassTarget(), SegmentationTarget(), ...), got "
                f"{type(target).__name__}; per-sample classes go to the call: explainer(x, classes)"
            )
        if pathway is not None and (not isinstance(pathway, int) or pathway < 0):
            raise InputError(f"pathway is the index of a model input (0, 1, ...), got {pathway!r}")
        self.model = model
        self.target = target if target is not None else ClassTarget()
        self.pathway = pathway

    def validate_input(self, x: object) -> Inputs:
        """The explainer's input checked (wrappers taking other inputs override this)."""
        x = check_inputs(x)
        for t in each_input(x):
            check_fits_model(t, self.model)
        return x

    def map_input(self, x: Inputs) -> torch.Tensor:
        """The input the maps are given on.  One tensor: itself.  A multi-input list: input
        `pathway` if set, else the one with the most positions (T*H*W) — SlowFast's fast
        pathway, whose frames are the clip's."""
        if not isinstance(x, list):
            return x
        if self.pathway is not None:
            if self.pathway >= len(x):
                raise InputError(
                    f"pathway={self.pathway} but the model takes {len(x)} inputs; choose "
                    f"0..{len(x) - 1}"
                )
            return x[self.pathway]
        sizes = [math.prod(t.shape[2:]) for t in x]
        return x[sizes.index(max(sizes))]

    def random_input(self, like: Inputs, batch: int, generator: torch.Generator) -> Inputs:
        """A fresh input like `like` with `batch` samples (the export guard runs on these)."""
        if isinstance(like, (list, tuple)):
            return [self.random_input(t, batch, generator) for t in like]
        x = torch.randn((batch, *like.shape[1:]), generator=generator)
        return x * like.float().std() + like.float().mean()

    def model_input(self, x: Inputs) -> Inputs:
        """What the model itself receives for the explainer's input `x`."""
        return x

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the artifact's inputs for one input tensor: `input`, then the target's."""
        return ("input", *self.target.input_names)

    def input_names_for(self, x: Inputs) -> tuple[str, ...]:
        """Names of the artifact's inputs for `x`: a multi-input list gives `input_0`,
        `input_1`, ... (in the list's order), then the target's."""
        if not isinstance(x, (list, tuple)):
            return self.input_names
        return (*(f"input_{i}" for i in range(len(x))), *self.target.input_names)

    def prepare(self, x: Inputs) -> None:
        """Eager set-up that needs a real input (the CAM family's default layer)."""

    def forward(self, x: Inputs, *args: object, **kwargs: object) -> NamedTuple:
        x = self.validate_input(x)
        first = first_input(x)
        values = bind_inputs(self.target.input_names, args, kwargs)
        inputs = self.target.coerce(values, first.shape[0], first.device)
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "explainers need autograd in eager mode; call them outside torch.inference_mode() "
                "(the exported artifact is the one that runs under inference mode)"
            )
        if not is_tracing():
            self.prepare(x)
        if isinstance(x, list):
            x = [t.detach().requires_grad_(True) for t in x]
        else:
            x = x.detach().requires_grad_(True)
        with torch.enable_grad(), self.forward_context():
            if not isinstance(x, list) or is_tracing():
                return self.explain(x, inputs)
            try:
                return self.explain(x, inputs)
            except GradvisError:
                raise
            except Exception as error:  # most likely a model that takes one tensor
                first_line = str(error).splitlines()[0] if str(error) else ""
                raise InputError(
                    f"the model failed on a multi-input list of {len(x)} tensors "
                    f"({type(error).__name__}: {first_line}); a model that takes one tensor "
                    "needs x as one tensor"
                ) from error

    def forward_context(self) -> contextlib.AbstractContextManager:
        """A context the model's forward runs in (guided explainers adapt activations here)."""
        return contextlib.nullcontext()

    def explain(self, x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        raise NotImplementedError

    # ------------------------------------------------ what an exported artifact records

    #: what each output holds, for the artifact contract (the model's outputs aside)
    meanings: dict[str, str] = {
        "logits": "the model's output",
        "heatmap": "the explanation map",
        "cam": "the CAM, at the input's size (in [0, 1] per sample when normalised)",
        "guided": "the guided gradient w.r.t. the input (signed, the input's shape)",
        "overlay": "the uint8 frames with the map drawn on them",
    }

    @property
    def target_layers(self) -> tuple[str, ...]:
        """The layers the maps are read at (none for input-gradient methods)."""
        return ()

    def options(self) -> dict[str, object]:
        """The method's settings, as the artifact contract records them."""
        return {"pathway": self.pathway} if self.pathway is not None else {}

    def in_graph_preprocessing(
        self,
    ) -> tuple[tuple[float, ...], tuple[float, ...], float | None] | None:
        """(mean, std, overlay alpha) of in-graph preprocessing (None: the input is the model's)."""
        return None

    def output_meanings(self, names: tuple[str, ...]) -> dict[str, str]:
        """name -> what the output holds, for the names of one call's outputs."""
        meanings = {}
        for cls in reversed(type(self).__mro__):
            meanings.update(getattr(cls, "meanings", {}) or {})
        return {name: meanings.get(name, f"the model's output {name!r}") for name in names}

    def scores(self, output: object, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each sample's target score (B,); the inputs are validated first in eager mode."""
        if not is_tracing():
            self.target.check(output, inputs)
        score = self.target(output, **inputs)
        if not isinstance(score, torch.Tensor) or score.dim() != 1:
            raise InputError(
                f"the target {type(self.target).__name__} must return one score per sample (B,), "
                f"got {getattr(score, 'shape', type(score).__name__)}"
            )
        return score

    def outputs(self, output: object, **maps: torch.Tensor) -> NamedTuple:
        """The NamedTuple returned: the model's output(s) (`logits`, or a dict's keys, or the
        target's names for a tuple), then the maps; everything detached."""
        if isinstance(output, torch.Tensor):
            names, tensors = ["logits"], [output]
        elif isinstance(output, dict):
            names = [_field_name(k, i) for i, k in enumerate(output)]
            tensors = list(output.values())
        elif isinstance(output, (list, tuple)):
            given = self.target.output_names
            names = (
                list(given)
                if given and len(given) == len(output)
                else [f"output{i}" for i in range(len(output))]
            )
            tensors = list(output)
        else:
            raise InputError(
                f"the model returned {type(output).__name__}; explainers expect a tensor, a tuple "
                "or a dict of tensors"
            )
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise InputError("the model's outputs must all be tensors")
        names += list(maps)
        if len(set(names)) != len(names):
            raise InputError(f"the model's output names clash with the maps': {names}")
        values = [t.detach() for t in tensors] + [m.detach() for m in maps.values()]
        return output_type(tuple(names))(*values)

    def run_model(self, x: Inputs) -> object:
        """The model's forward on `x`; a multi-input list is passed as a fresh list (SlowFast's
        blocks write their outputs into the list they are given)."""
        return self.model(list(x) if isinstance(x, list) else x)

    def forward_with_layers(self, x: Inputs, layers) -> tuple[object, list[torch.Tensor]]:
        """Run the model once, capturing the outputs of `layers`."""
        with capture_outputs(layers) as captured:
            output = self.run_model(x)
        missing = [name for (name, _), out in zip(layers, captured) if out is None]
        if missing:
            raise LayerError(
                f"layer {missing[0]!r} did not run (or returned no tensor) during the forward pass; "
                "choose a layer the model calls"
            )
        return output, captured
