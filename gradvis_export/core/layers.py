"""Finding target layers by name, and capturing their outputs without leaving anything behind."""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from gradvis_export.core.tokens import TokenGrid
from gradvis_export.errors import InputError, LayerError

LayerSpec = str | nn.Module


def resolve_layer(model: nn.Module, layer: LayerSpec) -> tuple[str, nn.Module]:
    """Return (dotted name, module) for a layer given by name or as the module object."""
    names = {name: module for name, module in model.named_modules() if name}
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return name, module
        raise LayerError(
            f"the module {type(layer).__name__} given as target layer is not part of the model; "
            "pass one of model.named_modules() or its dotted name"
        )
    if not isinstance(layer, str):
        raise LayerError(
            f"a target layer is a dotted name or an nn.Module, got {type(layer).__name__}"
        )
    if layer in names:
        return layer, names[layer]
    close = difflib.get_close_matches(layer, list(names), n=5, cutoff=0.3)
    hint = (
        f"closest names: {', '.join(repr(c) for c in close)}"
        if close
        else (
            f"the model's top-level layers are: {', '.join(repr(n) for n in names if '.' not in n)}"
        )
    )
    raise LayerError(f"the model has no layer named {layer!r}; {hint}")


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]
) -> list[tuple[str, nn.Module]]:
    """Resolve one layer or a list of layers (per-layer maps are averaged by the CAM family)."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved = [resolve_layer(model, layer) for layer in layers]
    if not resolved:
        raise LayerError("at least one target layer is needed")
    return resolved


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


@contextlib.contextmanager
def capture_outputs(layers: list[tuple[str, nn.Module]]) -> Iterator[list[torch.Tensor | None]]:
    """Record each layer's output (the first tensor of a tuple) during one forward.

    The forward hooks live only inside the `with` block, so the user's model keeps exactly the
    hooks it had.  A layer called more than once keeps its last output.
    """
    captured: list[torch.Tensor | None] = [None] * len(layers)
    handles = []

    def make_hook(index: int):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            captured[index] = _first_tensor(output)

        return hook

    try:
        for index, (_name, module) in enumerate(layers):
            handles.append(module.register_forward_hook(make_hook(index)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replace_output(
    module: nn.Module,
    fn: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Size | None = None,
) -> Iterator[None]:
    """Inside the block, `module`'s tensor output is replaced by fn(output) (temporary hook).

    `like`: the shape of the output the explainer read (its last call); a module called again
    on other shapes in the same forward (one activation module shared by a stem and a head, as
    EfficientNet ports do) keeps those other outputs.  Only the sizes after the batch count."""

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        if not isinstance(output, torch.Tensor):
            raise LayerError(
                f"the layer returns {type(output).__name__}; ablation needs a layer whose output "
                "is one tensor"
            )
        if like is not None and tuple(output.shape[1:]) != tuple(like[1:]):
            return output
        return fn(output)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# The default target layer
# --------------------------------------------------------------------------------------------

#: Pooling layers whose output size the architecture fixes (VGG's 7x7 avgpool after a 2x2
#: map): head operations, not feature maps.
ADAPTIVE_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


class DefaultLayer(NamedTuple):
    """The layer `default_layer` chose, and the reshape its output needs (tokens -> grid)."""

    name: str
    reshape: TokenGrid | None


def _inputs_of(example: object) -> list[torch.Tensor]:
    tensors = list(example) if isinstance(example, (list, tuple)) else [example]
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise InputError(
            "the example input must be a tensor (B,C,H,W) / (B,C,T,H,W), or a list of them "
            "for a multi-input model"
        )
    if any(t.dim() not in (4, 5) for t in tensors):
        shapes = [tuple(t.shape) for t in tensors]
        raise InputError(
            f"the example input has shape(s) {shapes}; expected (B,C,H,W) or (B,C,T,H,W)"
        )
    return tensors


def _shape_hints(value: object, rank: int, hints: dict[int, tuple[int, ...]]) -> None:
    """Record (T, H, W)-like int lists passed between modules (pytorchvideo's MViT blocks pass
    `thw_shape`): token count -> grid."""
    if isinstance(value, (list, tuple)):
        if len(value) == rank and all(type(v) is int and v > 0 for v in value):
            hints.setdefault(math.prod(value), tuple(value))
        else:
            for item in value:
                if isinstance(item, (list, tuple)):
                    _shape_hints(item, rank, hints)


def _token_grid(
    tokens: int, sizes: Sequence[int], hints: dict[int, tuple[int, ...]]
) -> TokenGrid | None:
    """A TokenGrid for (B, tokens, D): a recorded grid, else (images) the grid with the input's
    aspect ratio; class-token prefix 1, 0 or 2 in that order."""
    for prefix in (1, 0, 2):
        patches = tokens - prefix
        if patches < 2:
            continue
        if patches in hints:
            return TokenGrid(grid=hints[patches], prefix=prefix)
        if len(sizes) == 2:
            height, width = sizes
            for h in range(1, patches + 1):
                if patches % h == 0 and h * width == (patches // h) * height:
                    square = h == patches // h
                    return TokenGrid(grid=None if square else (h, patches // h), prefix=prefix)
    return None


def _weighted_sum(output: object, generator: torch.Generator) -> torch.Tensor | None:
    """A fixed random projection of every float output: a score any output position moves
    (a plain sum would be constant under a softmax head)."""
    if isinstance(output, torch.Tensor):
        if not output.is_floating_point() or not output.requires_grad:
            return None
        weights = torch.randn(output.shape, generator=generator).to(output)
        return (output * weights).sum()
    items = output.values() if isinstance(output, dict) else output
    if not isinstance(items, (list, tuple, type({}.values()))):
        return None
    parts = [s for s in (_weighted_sum(item, generator) for item in items) if s is not None]
    return sum(parts) if parts else None


def _within_attention(name: str, modules: dict[str, nn.Module]) -> bool:
    """Is `name` an attention layer or inside one (its queries, keys, values, pooled keys)?"""
    parts = name.split(".")
    return any(
        "attention" in type(modules[".".join(parts[:i])]).__name__.lower()
        for i in range(1, len(parts) + 1)
    )


def default_layer(model: nn.Module, example_input: object) -> DefaultLayer:
    """The target layer the CAM explainers use when none is given: the last spatial feature map.

    The rule, from one forward (and one backward) pass on `example_input`:

    1. candidates are the model's modules (in the order their calls finish, so a stage comes
       after the blocks inside it) whose output — the first tensor of a tuple — is a map of
       the input's kind with the input's batch size: (B, C, H, W) for images, (B, C, T, H, W)
       for video, with at least 2 positions; or transformer tokens (B, tokens, D) that fold
       into such a grid (`TokenGrid`: class-token prefix 1, 0 or 2; an image grid with the
       input's aspect ratio, a video grid from a (T, H, W) the blocks pass along);
    2. adaptive pooling layers are not candidates (their output size is the head's choice:
       VGG's 7x7 avgpool after a 2x2 map), nor attention layers and their insides (queries,
       keys and values are not feature maps), nor `nn.Linear` layers applied to a map
       (channels-last: pytorchvideo's heads project (B, T, H, W, C));
    3. the chosen layer is the last candidate the output depends on at 2 or more positions —
       which skips a ViT's last tokens: after the last attention only the class token reaches
       the head, so the rule lands on the last block's pre-attention norm (`ln_1` / `norm1`).

    For a multi-input model (a list of inputs, SlowFast) the input's kind is that of the inputs
    (all images or all clips).  The choice depends on the architecture, not on the input's
    values; returns (dotted name, reshape), reshape a `TokenGrid` for token layers, else None.
    """
    inputs = _inputs_of(example_input)
    rank = max(t.dim() for t in inputs)
    sizes = list(max(inputs, key=lambda t: math.prod(t.shape[2:])).shape[2:])
    batch = 2
    xs = [
        (t.detach() if t.shape[0] >= batch else t.detach().repeat(batch, *[1] * (t.dim() - 1)))[
            :batch
        ]
        .float()
        .requires_grad_(True)
        for t in inputs
    ]
    modules = {name: module for name, module in model.named_modules() if name}
    outputs: dict[str, torch.Tensor] = {}
    finished: dict[str, int] = {}
    hints: dict[int, tuple[int, ...]] = {}
    order = itertools.count()
    handles = []

    def pre_hook(_module, args) -> None:
        _shape_hints(args, rank - 2, hints)

    def make_hook(name: str):
        def hook(_module, _args, output) -> None:
            _shape_hints(output, rank - 2, hints)
            tensor = _first_tensor(output)
            if tensor is not None:
                outputs[name] = tensor
                finished[name] = next(order)  # a module called twice: its last call counts

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(pre_hook))
            if isinstance(module, ADAPTIVE_POOLS) or _within_attention(name, modules):
                continue
            handles.append(module.register_forward_hook(make_hook(name)))
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = model(xs if isinstance(example_input, (list, tuple)) else xs[0])
    finally:
        for handle in handles:
            handle.remove()

    candidates: list[tuple[str, torch.Tensor, TokenGrid | None]] = []
    for name in sorted(finished, key=finished.get, reverse=True):
        t = outputs[name]
        if t.shape[0] != batch or not t.requires_grad or not t.is_floating_point():
            continue
        if t.dim() == rank and math.prod(t.shape[2:]) >= 2:
            if isinstance(modules[name], nn.Linear):
                continue  # channels-last
            candidates.append((name, t, None))
        elif t.dim() == 3:
            grid = _token_grid(int(t.shape[1]), sizes, hints)
            if grid is not None:
                candidates.append((name, t, grid))
    score = _weighted_sum(output, torch.Generator().manual_seed(0))
    if candidates and score is not None:
        grads = torch.autograd.grad(score, [t for _, t, _ in candidates], allow_unused=True)
        for (name, _, grid), grad in zip(candidates, grads):
            if grad is None:
                continue
            grad = grid(grad) if grid is not None else grad
            per_position = grad.abs().sum(dim=(0, 1)).flatten()
            if int((per_position > 1e-6 * float(per_position.max())).sum()) >= 2:
                return DefaultLayer(name, grid)
    raise LayerError(
        f"no layer of {type(model).__name__} outputs a spatial map (B,C,{'T,' if rank == 5 else ''}"
        "H,W) or grid tokens that its output depends on at 2+ positions; pass the target layer "
        "explicitly (and reshape= for an unusual layout)"
    )
