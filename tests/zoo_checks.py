"""Independent references and the checks of one model-zoo row (tests/test_zoo.py and
benchmarks/zoo.py share them).

The references never call gradvis_export:

* Grad-CAM: a forward hook keeps the layer's output A (the first tensor of a tuple or list);
  dscore/dA from `torch.autograd.grad`; transformer tokens are folded into their grid here
  (class token dropped); weights = mean gradient per channel; ReLU(sum_k w_k A_k), bilinear /
  trilinear upsampling (align_corners=False) to the map input, min-max per sample.
* guided backprop: a `TorchFunctionMode` routes every activation call (module, functional,
  torch.* and Tensor.* spellings, in place or not) through an autograd Function whose backward
  is the activation's own derivative times ReLU(incoming gradient) — for ReLU: pass only where
  input > 0 and gradient > 0.  pytorchvideo's Swish (a custom autograd Function, x*sigmoid(x))
  is routed the same way through a forward hook of the test's own.
* guided Grad-CAM: guided gradient x the upsampled Grad-CAM.

A multi-input model (SlowFast) gets its inputs as a list; the maps are on the input with the
most positions (the fast pathway).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from guided_reference import GuidedActivation, GuidedMode
from zoo_models import ZooModel, make_inputs

#: the registry's gradient methods the zoo covers on every model (gv.METHODS names)
METHODS = ("gradcam", "guided", "guided-gradcam")
FORMATS = ("onnx", "torchscript")
EXPORT_BATCH, CHECK_BATCHES = 2, (1, 3)


# --------------------------------------------------------------------------- references
def _inputs(x) -> list[torch.Tensor]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _call(model, xs: list[torch.Tensor], multi: bool):
    return model(list(xs)) if multi else model(xs[0])


def _shown(xs: list[torch.Tensor]) -> int:
    sizes = [math.prod(t.shape[2:]) for t in xs]
    return sizes.index(max(sizes))


def _classes(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.where(target < 0, logits.detach().argmax(dim=1), target)


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def tokens_to_grid(t: torch.Tensor, prefix: int, grid: tuple[int, ...]) -> torch.Tensor:
    """(B, prefix + prod(grid), D) -> (B, D, *grid)."""
    patches = t[:, prefix:]
    return patches.permute(0, 2, 1).reshape(t.shape[0], t.shape[2], *grid)


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, *[1] * (maps.dim() - 1))
    span = flat.max(dim=1).values.view(-1, *[1] * (maps.dim() - 1)) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1.0), 0.0)


def reference_gradcam(entry: ZooModel, model, layer: str, x, target: torch.Tensor):
    module = dict(model.named_modules())[layer]
    kept = []
    handle = module.register_forward_hook(lambda _m, _i, out: kept.append(_first_tensor(out)))
    try:
        with torch.enable_grad():
            xs = [t.detach().clone().requires_grad_(True) for t in _inputs(x)]
            logits = _call(model, xs, entry.multi_input)
            score = logits.gather(1, _classes(logits, target)[:, None]).sum()
            activation = kept[-1]
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    activation = activation.detach()
    if entry.tokens is not None:
        prefix, grid = entry.tokens
        activation, grad = (
            tokens_to_grid(activation, prefix, grid),
            tokens_to_grid(grad, prefix, grid),
        )
    weights = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1))
    size = xs[_shown(xs)].shape[2:]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    cam = F.interpolate(cam[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]
    return _normalise(cam)


def _swish_hooks(model) -> list:
    """pytorchvideo's Swish computes x * sigmoid(x) in a custom autograd Function, out of the
    mode's sight: replace its output by the guided SiLU of its input."""
    handles = []
    for module in model.modules():
        if type(module).__name__ == "Swish" and type(module).__module__.startswith("pytorchvideo"):
            handles.append(
                module.register_forward_hook(
                    lambda _m, inputs, _o: GuidedActivation.apply(inputs[0], F.silu)
                )
            )
    return handles


def reference_guided(entry: ZooModel, model, x, target: torch.Tensor) -> torch.Tensor:
    handles = _swish_hooks(model)
    try:
        with torch.enable_grad():
            xs = [t.detach().clone().requires_grad_(True) for t in _inputs(x)]
            mode = GuidedMode("all")
            with mode:
                logits = _call(model, xs, entry.multi_input)
            score = logits.gather(1, _classes(logits, target)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, xs[_shown(xs)])
    finally:
        for handle in handles:
            handle.remove()
    assert mode.hits + len(handles) > 0, f"{entry.name}: no activation was guided"
    return grad


def reference(entry: ZooModel, model, layer: str, method: str, x, target) -> dict:
    """The reference maps of `method`, by output name."""
    if method == "gradcam":
        return {"heatmap": reference_gradcam(entry, model, layer, x, target)}
    if method == "guided":
        return {"heatmap": reference_guided(entry, model, x, target)}
    cam = reference_gradcam(entry, model, layer, x, target)
    guided = reference_guided(entry, model, x, target)
    return {"heatmap": guided * cam.unsqueeze(1), "cam": cam, "guided": guided}


# --------------------------------------------------------------------------- comparisons
class Mismatch(AssertionError):
    """An output differs from what it must equal."""


def compare(got: np.ndarray, want: np.ndarray, label: str, rtol: float = 1e-3) -> None:
    """Equal to `rtol` of the largest magnitude, elementwise.

    A guided gradient is piecewise: an activation input within rounding of 0 can open on one
    runtime and stay closed on another.  Up to 1 in 1,000 elements may then differ, if the
    whole stays within 1 % (relative L2) -- the allowance of gv.export's own guard; anything
    broader fails.  Measured: onnxruntime's layout optimisations (ORT_ENABLE_ALL, its default)
    flip 17-28 elements of guided backprop on inception_v3, c2d and i3d (up to 5.1e-4 of them);
    at ORT_ENABLE_EXTENDED, and in eager with BatchNorm folded into the convolutions, none.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise Mismatch(f"{label}: shape {got.shape} vs {want.shape}")
    if not np.isfinite(got).all():
        raise Mismatch(f"{label}: non-finite values")
    scale = float(np.abs(want).max()) if want.size else 0.0
    bad = np.abs(got - want) > rtol * scale + 1e-7
    if not bad.any():
        return
    relative = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
    if bad.mean() <= 1e-3 and relative <= 1e-2:
        return
    raise Mismatch(
        f"{label}: {int(bad.sum())} of {bad.size} elements differ (max abs diff "
        f"{float(np.abs(got - want).max()):.3g}, largest value {scale:.3g})"
    )


def explainer_for(method: str, model, pathway=None):
    """The zoo's explainer of `method` with the default layer; guided methods guide every
    activation (activations='all'), for ReLU-only nets that is Springenberg's rule."""
    import gradvis_export as gv

    guided = gv.METHODS[method].takes_activations
    return gv.make_explainer(method, model, activations="all" if guided else None, pathway=pathway)


def targets_for(batch: int) -> torch.Tensor:
    return torch.tensor([-1, 3, 7][:batch], dtype=torch.long)


def check_eager(entry: ZooModel, model, explainer, method: str, seed: int = 11) -> dict:
    """Eager explainer vs the references on a batch of 2 (argmax and class 3).

    Returns each map's largest spread over the batch (all-zero maps prove little)."""
    x = make_inputs(entry, 2, seed)
    target = targets_for(2)
    got = explainer(x, target)
    layer = explainer.layers[0][0] if hasattr(explainer, "layers") else None
    if layer is not None and layer != entry.layer:
        raise Mismatch(f"default layer {layer!r}, the rule gives {entry.layer!r}")
    want = reference(entry, model, layer, method, x, target)
    with torch.no_grad():
        logits = model(list(x) if entry.multi_input else x)
    compare(got[0].numpy(), logits.numpy(), f"{entry.name} {method} eager logits", rtol=1e-5)
    spread = {}
    for name, value in want.items():
        compare(getattr(got, name).numpy(), value.numpy(), f"{entry.name} {method} eager {name}")
        flat = value.flatten(1)
        spread[name] = float((flat.amax(1) - flat.amin(1)).max())
    return spread


def run_artifact(path: Path, names: list[str], feeds: list[np.ndarray]) -> list:
    """The artifact through gradvis_runtime (onnxruntime on one thread, or TorchScript), fed in
    graph order."""
    import gradvis_runtime

    runtime = gradvis_runtime.load(path, providers=["CPUExecutionProvider"], threads=1)
    if runtime.input_names != names:
        raise Mismatch(f"the artifact's inputs are {runtime.input_names}, expected {names}")
    outputs = runtime.run(**dict(zip(names, feeds)))
    return [outputs[name] for name in runtime.output_names]


def input_names(entry: ZooModel) -> list[str]:
    data = [f"input_{i}" for i in range(len(entry.shapes))] if entry.multi_input else ["input"]
    return [*data, "target"]


def check_export(
    entry: ZooModel, explainer, fmt: str, folder: Path, check: bool, keep: bool = False
) -> float:
    """Export from a batch-2 example; the artifact matches eager on fresh inputs at batch 1
    and 3 (checked here, whatever gv.export checked).  Returns the export's seconds; the
    artifact is deleted unless `keep`."""
    import gradvis_export as gv

    path = artifact_path(entry, explainer, fmt, folder)
    example = make_inputs(entry, EXPORT_BATCH, seed=100)
    start = time.perf_counter()
    gv.export(explainer, example, path, check=check)
    seconds = time.perf_counter() - start
    for batch in CHECK_BATCHES:
        x = make_inputs(entry, batch, seed=200 + batch)
        target = targets_for(batch)
        want = explainer(x, target)
        feeds = [t.numpy() for t in _inputs(x)] + [target.numpy()]
        got = run_artifact(path, input_names(entry), feeds)
        if len(got) != len(want):
            raise Mismatch(f"{fmt}: {len(got)} outputs, eager has {len(want)}")
        for name, g, w in zip(want._fields, got, want):
            compare(g, w.numpy(), f"{entry.name} {explainer.method} {fmt} b={batch} {name}")
    if not keep:
        path.unlink()
    return seconds


def artifact_path(entry: ZooModel, explainer, fmt: str, folder: Path) -> Path:
    return folder / f"{entry.name}_{explainer.method}{'.onnx' if fmt == 'onnx' else '.pt'}"
