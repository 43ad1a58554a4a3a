"""The CAM family (GradCAM ... AblationCAM) vs pytorch-grad-cam 1.5.7 and eager references.

How the comparisons are made:

* 2-D (resnet18): the input is 75x75, so layer3 is 5x5 and layer4 3x3 -- odd integer scale
  factors 15 and 25.  Bilinear upsampling with align_corners=False then puts every layer value
  exactly on an output pixel (pixel i*s + (s-1)/2), and as a convex interpolation it never
  leaves the layer's [min, max].  So min-max before the resize (pytorch-grad-cam, cv2) equals
  min-max after it (gradvis): pytorch-grad-cam's full output, min-max normalised, must equal
  ours to atol 1e-4 (one or several layers).  The raw (normalize=False) heatmap is checked
  against pytorch-grad-cam's own layer map (recorded from its `get_cam_image`), ReLU'd and
  upsampled with F.interpolate.
* 3-D (pytorchvideo X3D): pytorch-grad-cam upsamples with a cubic SciPy zoom, so the comparison
  is made at the layer's resolution: its recorded layer map, ReLU'd, upsampled trilinearly
  here, min-max normalised.  Its ScoreCAM and AblationCAM cannot run on 5-D input; those are
  checked against eager references written below from the formulas (forward hooks, a loop
  over channels).
* EigenCAM / EigenGradCAM: pytorch-grad-cam keeps LAPACK's sign, so those match it up to the
  sign of the projection; our convention (first right singular vector v with sum(v) >= 0) is
  checked separately against a float64 numpy SVD.

Nothing here compares gradvis_export with itself only.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import make_input, mixed_relu_net, resnet18, x3d

import gradvis_export as gv

# One intra-op thread by default, as in test_reference.py (override: GRADVIS_TEST_THREADS=2).
torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

RESNET_INPUT = (2, 3, 75, 75)  # layer3 -> 5x5 (x15), layer4 -> 3x3 (x25): odd scale factors
X3D_INPUT = (2, 3, 4, 64, 64)  # blocks.4 -> (192, 4, 2, 2)

# The registry's CAM family (gv.METHODS names): one backward pass (or none) each, with
# pytorch-grad-cam's class of the same method as the reference; ScoreCAM and AblationCAM
# (extra forward passes) have their own tests below.  ReciproCAM (forward only too) is not in
# pytorch-grad-cam: its reference, from the paper's formula, is in tests/test_reciprocam.py.
CAM_FAMILY = [name for name, cls in gv.METHODS.items() if issubclass(cls, gv.BaseCAM)]
FORWARD_ONLY = ["scorecam", "ablationcam", "reciprocam"]
PGC_CLASSES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "gradcam-elementwise": pgc.GradCAMElementWise,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
    "eigengradcam": pgc.EigenGradCAM,
}
# name -> (our class, pytorch-grad-cam's), in the registry's order
GRADIENT_METHODS = {
    name: (gv.METHODS[name], PGC_CLASSES[name]) for name in CAM_FAMILY if name not in FORWARD_ONLY
}
EIGEN = {"eigencam", "eigengradcam"}
CHANNEL_WEIGHTED = [m for m in GRADIENT_METHODS if m not in EIGEN]


def test_every_registered_cam_has_its_reference_here():
    """A CAM added to the registry without a reference in this file fails here."""
    assert set(CAM_FAMILY) == set(PGC_CLASSES) | set(FORWARD_ONLY)


# per-sample classes; -1 = argmax.  "argmax" passes None to both libraries, "int" a Python int.
TARGETS = {"explicit": [3, 4], "argmax": None, "int": 3, "mixed": [3, -1], "pair12": [1, 2]}

ATOL = 1e-4  # after min-max normalisation (the acceptance criterion)


# =========================================================================== #
# fixtures
# =========================================================================== #
@pytest.fixture(scope="module")
def resnet():
    spec = resnet18()
    return spec.model, make_input(RESNET_INPUT, seed=1)


@pytest.fixture(scope="module")
def video():
    spec = x3d()
    return spec.model, make_input(X3D_INPUT, seed=1)


@pytest.fixture(scope="module")
def small():
    spec = mixed_relu_net()
    return spec.model, make_input(spec.input_shape, seed=1)


# =========================================================================== #
# helpers (plain torch / numpy; never gradvis_export)
# =========================================================================== #
def get_module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


def gv_target(kind: str):
    value = TARGETS[kind]
    if value is None or isinstance(value, int):
        return value
    return torch.tensor(value, dtype=torch.int64)


def resolve_classes(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """(B,) int64 classes: explicit ones as given, -1 / None -> argmax of the clean logits."""
    argmax = logits.detach().argmax(dim=1)
    value = TARGETS[kind]
    if value is None:
        return argmax
    if isinstance(value, int):
        return torch.full_like(argmax, value)
    t = torch.tensor(value, dtype=torch.int64)
    return torch.where(t == -1, argmax, t)


def minmax(maps) -> torch.Tensor:
    """Per-sample min-max to [0, 1] in float64; a constant map becomes zeros."""
    maps = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps)
    maps = maps.double()
    flat = maps.flatten(1)
    shape = (-1,) + (1,) * (maps.dim() - 1)
    low = flat.min(dim=1).values.view(shape)
    span = flat.max(dim=1).values.view(shape) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def upsample(maps: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """(B, *S) -> (B, *size), bilinear (2-D) / trilinear (3-D)."""
    mode = {2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(
        maps[:, None].double(), size=tuple(size), mode=mode, align_corners=align_corners
    )[:, 0]


def assert_normalised_close(actual, expected, what: str, atol: float = ATOL) -> None:
    """Both sides min-max normalised per sample, then |diff| <= atol."""
    actual = torch.as_tensor(actual).detach()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    a, e = minmax(actual), minmax(expected)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    diff = (a - e).abs().max().item()
    assert diff <= atol, f"{what}: max|diff| after min-max = {diff:.3e} > {atol:.0e}"


def assert_raw_close(actual, expected, what: str, rel: float = ATOL) -> None:
    """Un-normalised maps: |diff| <= rel * max|expected| per sample (and > 0 somewhere)."""
    actual = torch.as_tensor(actual).detach().double()
    expected = torch.as_tensor(expected).detach().double()
    assert actual.shape == expected.shape, (
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    for b in range(expected.shape[0]):
        scale = expected[b].abs().max().item()
        diff = (actual[b] - expected[b]).abs().max().item()
        assert diff <= rel * scale + 1e-12, (
            f"{what} sample {b}: max|diff| = {diff:.3e} > {rel:.0e} * max|ref| ({scale:.3e})"
        )


def matches_either_sign(actual, positive, negative, what: str, check) -> None:
    """Per sample, `check(actual, ref)` must hold for the projection's sign or its negation
    (the SVD's sign is chosen independently for every sample)."""
    for b in range(positive.shape[0]):
        errors = []
        for ref in (positive, negative):
            try:
                check(actual[b : b + 1], ref[b : b + 1], f"{what} sample {b}")
                break
            except AssertionError as e:
                errors.append(str(e))
        else:
            raise AssertionError(
                f"{what} sample {b}: matches neither sign:\n  +: {errors[0]}\n  -: {errors[1]}"
            )


def nontrivial(ref: torch.Tensor) -> bool:
    """Every sample of a reference map has some spread (so the comparison discriminates)."""
    flat = ref.double().flatten(1)
    return bool(((flat.max(dim=1).values - flat.min(dim=1).values) > 0).all())


def capture(model: nn.Module, layers: list[str], x: torch.Tensor, kind: str, grads=True):
    """Plain autograd: logits, classes, {layer: A}, {layer: dS/dA}; S = sum_b logit[b, c_b]."""
    acts: dict[str, torch.Tensor] = {}
    handles = [
        get_module(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: acts.__setitem__(name, out)
        )
        for name in layers
    ]
    try:
        with torch.enable_grad():
            logits = model(x.clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    classes = resolve_classes(logits, kind)
    g = {}
    if grads:
        score = logits.gather(1, classes[:, None]).sum()
        got = torch.autograd.grad(score, [acts[n] for n in layers])
        g = {n: t.detach() for n, t in zip(layers, got)}
    return logits.detach(), classes, {n: a.detach() for n, a in acts.items()}, g


def run_pgc(pgc_cls, model: nn.Module, layers: list[str], x: torch.Tensor, classes):
    """pytorch-grad-cam's full output (B, *S_in) and its per-layer maps before the ReLU.

    The layer maps are recorded by wrapping `get_cam_image` on the pgc object (pgc's own code
    computes them; nothing of gradvis is involved).
    """
    modules = [get_module(model, n) for n in layers]
    kwargs = {"batch_size": 64} if pgc_cls is pgc.AblationCAM else {}
    cam = pgc_cls(model, modules, **kwargs)
    if pgc_cls is pgc.ScoreCAM:
        cam.batch_size = 64
    layer_maps = []
    original = cam.get_cam_image

    def recording(*args, **kw):
        out = original(*args, **kw)
        layer_maps.append(torch.from_numpy(np.array(out, dtype=np.float32, copy=True)))
        return out

    cam.get_cam_image = recording
    targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]
    try:
        full = cam(x.clone(), targets)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.array(full)), layer_maps


def pgc_classes(model: nn.Module, x: torch.Tensor, kind: str):
    """What pytorch-grad-cam is given: None for argmax (it takes the argmax itself)."""
    if TARGETS[kind] is None:
        return None
    with torch.no_grad():
        return resolve_classes(model(x), kind).tolist()


def eigen_reference(features: torch.Tensor) -> torch.Tensor:
    """float64 numpy SVD: centred (positions x channels) matrix projected on its first right
    singular vector v, with the sign convention sum(v) >= 0.  (B, K, *S) -> (B, *S)."""
    out = []
    for f in features.double().numpy():
        m = f.reshape(f.shape[0], -1).T
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        v = vt[0] if vt[0].sum() >= 0 else -vt[0]
        out.append((m @ v).reshape(f.shape[1:]))
    return torch.from_numpy(np.stack(out))


def scorecam_reference(model, layer, x, kind, batch=64, align_corners=True):
    """ScoreCAM at layer resolution, before the ReLU: sum_k softmax_k(y(x * M_k)) A_k."""
    logits, classes, acts, _ = capture(model, [layer], x, kind, grads=False)
    a = acts[layer]
    size = x.shape[2:]
    masks = upsample(a.flatten(0, 1), size, align_corners=align_corners)
    masks = masks.view(*a.shape[:2], *size).float()
    low = masks.flatten(2).min(dim=2).values.view(*a.shape[:2], *([1] * len(size)))
    high = masks.flatten(2).max(dim=2).values.view(*a.shape[:2], *([1] * len(size)))
    masks = (masks - low) / (high - low + 1e-8)
    weights = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            scores = []
            for k in range(0, a.shape[1], batch):
                masked = x[b][None] * masks[b, k : k + batch, None]
                scores.append(model(masked)[:, classes[b]])
            weights.append(torch.softmax(torch.cat(scores), dim=0))
    w = torch.stack(weights).view(*a.shape[:2], *([1] * len(size)))
    return (w * a).sum(dim=1)


def ablation_reference(model, layer, x, kind, batch=64):
    """AblationCAM at layer resolution, before the ReLU: sum_k (y - y_k) / y A_k, y_k the
    target logit with channel k of the layer's output set to 0 (a literal forward per k)."""
    logits, classes, acts, _ = capture(model, [layer], x, kind, grads=False)
    a = acts[layer]
    y = logits.gather(1, classes[:, None])[:, 0]
    module = get_module(model, layer)
    weights = torch.zeros(a.shape[:2])
    with torch.no_grad():
        for b in range(x.shape[0]):
            for k0 in range(0, a.shape[1], batch):
                ks = list(range(k0, min(k0 + batch, a.shape[1])))

                def zero_channel(_m, _i, out, ks=ks):
                    out = out.clone()
                    for i, k in enumerate(ks):
                        out[i, k] = 0
                    return out

                handle = module.register_forward_hook(zero_channel)
                try:
                    out = model(x[b][None].expand(len(ks), *x.shape[1:]).contiguous())
                finally:
                    handle.remove()
                weights[b, ks] = (y[b] - out[:, classes[b]]) / y[b]
    return (weights.view(*a.shape[:2], *([1] * (a.dim() - 2))) * a).sum(dim=1)


def sharpened(model: nn.Module, head: str, factor: float = 100.0) -> nn.Module:
    """A copy whose logits are `factor` times larger (the last Linear scaled).

    On these random nets the masked logits differ little between channels, so ScoreCAM's
    softmax is nearly uniform and the map hardly depends on the details of the masks; with
    100x logits the weights are sharp (e.g. align_corners=False masks then move the X3D
    blocks.3 map by ~3e-3 after min-max, far above the 1e-4 tolerance)."""
    model = copy.deepcopy(model)
    linear = get_module(model, head)
    assert isinstance(linear, nn.Linear)
    with torch.no_grad():
        linear.weight.mul_(factor)
        linear.bias.mul_(factor)
    return model


def depends_around(model: nn.Module, layer: str, x: torch.Tensor) -> bool:
    """Does the output depend on x other than through `layer` (a skip around it)?"""
    module = get_module(model, layer)
    handle = module.register_forward_hook(lambda _m, _i, out: out.detach())
    try:
        probe = x[:1].clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(probe)
        (grad,) = torch.autograd.grad(out.sum(), [probe], allow_unused=True)
    finally:
        handle.remove()
    return grad is not None and bool(grad.abs().sum() > 0)


# =========================================================================== #
# sanity of the set-up itself
# =========================================================================== #
def test_resnet_layer_sizes_give_odd_scale_factors(resnet):
    """The exactness argument of the 2-D comparisons needs odd integer scale factors."""
    model, x = resnet
    _, _, acts, _ = capture(model, ["layer3", "layer4"], x, "argmax", grads=False)
    for name, side in (("layer3", 5), ("layer4", 3)):
        assert tuple(acts[name].shape[2:]) == (side, side)
        scale = x.shape[-1] // side
        assert scale * side == x.shape[-1] and scale % 2 == 1


# =========================================================================== #
# 1. 2-D CNN: every gradient / eigen method vs pytorch-grad-cam
# =========================================================================== #
@pytest.mark.parametrize("kind", ["explicit", "argmax", "int"])
@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_resnet18_matches_pytorch_grad_cam(resnet, method, kind):
    model, x = resnet
    ours_cls, pgc_cls = GRADIENT_METHODS[method]
    full, (layer_map,) = run_pgc(pgc_cls, model, ["layer4"], x, pgc_classes(model, x, kind))
    size = x.shape[2:]

    out = ours_cls(model, "layer4")(x, gv_target(kind))
    raw = ours_cls(model, "layer4", normalize=False)(x, gv_target(kind))
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(x), rtol=1e-5, atol=1e-5)

    what = f"{method}/{kind}"
    if method in EIGEN:
        # pgc's full output is the + sign; the - sign is pgc's own map negated, processed as
        # pgc would (ReLU, resize; the normalisations are exchangeable, see the docstring).
        negated = upsample(torch.relu(-layer_map), size)
        assert not torch.allclose(minmax(full), minmax(negated), atol=1e-2)
        matches_either_sign(out.heatmap, full, negated, what, assert_normalised_close)
        matches_either_sign(
            raw.heatmap,
            upsample(torch.relu(layer_map), size),
            negated,
            what + " raw",
            assert_raw_close,
        )
    else:
        assert nontrivial(full), f"{what}: degenerate reference (pick another target)"
        assert_normalised_close(out.heatmap, full, what)
        assert_raw_close(raw.heatmap, upsample(torch.relu(layer_map), size), what + " raw")


# ScoreCAM / AblationCAM on 2-D: one batch with an explicit class and an argmax sample.  A
# pytorch-grad-cam run costs a forward per channel and sample, so ScoreCAM uses layer3 (256
# channels, 5x5) rather than layer4 (512 channels), which halves its cost.  AblationCAM uses
# post-ReLU layer4: pytorch-grad-cam zeroes a channel (as we do) only when the minimum of the
# layer's output is 0.
@pytest.mark.parametrize("method, layer", [("scorecam", "layer3"), ("ablationcam", "layer4")])
def test_resnet18_forward_only_methods_match_pytorch_grad_cam(resnet, method, layer):
    model, x = resnet
    kind = "mixed"
    ours_cls = gv.METHODS[method]
    pgc_cls = {"scorecam": pgc.ScoreCAM, "ablationcam": pgc.AblationCAM}[method]
    if method == "ablationcam":
        _, _, acts, _ = capture(model, [layer], x, kind, grads=False)
        assert (acts[layer].flatten(1).amin(dim=1) == 0).all()

    full, (layer_map,) = run_pgc(pgc_cls, model, [layer], x, pgc_classes(model, x, kind))
    assert nontrivial(full)
    out = ours_cls(model, layer, chunk_size=64)(x, gv_target(kind))
    assert_normalised_close(out.heatmap, full, f"{method}/{kind}")
    if method == "ablationcam":  # cheap for us (only the part after layer4 is rerun)
        raw = ours_cls(model, layer, normalize=False)(x, gv_target(kind))
        expected = upsample(torch.relu(layer_map), x.shape[2:])
        assert_raw_close(raw.heatmap, expected, f"{method}/{kind} raw")


# =========================================================================== #
# 2. video (5-D): pytorchvideo X3D at the layer's resolution
# =========================================================================== #
@pytest.mark.parametrize("kind", ["explicit", "argmax"])
@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_x3d_matches_pytorch_grad_cam_at_layer_resolution(video, method, kind):
    model, x = video
    ours_cls, pgc_cls = GRADIENT_METHODS[method]
    _, (layer_map,) = run_pgc(pgc_cls, model, ["blocks.4"], x, pgc_classes(model, x, kind))
    assert tuple(layer_map.shape) == (2, 4, 2, 2)
    size = x.shape[2:]

    out = ours_cls(model, "blocks.4")(x, gv_target(kind))
    raw = ours_cls(model, "blocks.4", normalize=False)(x, gv_target(kind))
    assert out.heatmap.shape == (2, *size)

    what = f"x3d {method}/{kind}"
    positive = upsample(torch.relu(layer_map), size)
    if method in EIGEN:
        negative = upsample(torch.relu(-layer_map), size)
        assert not torch.allclose(minmax(positive), minmax(negative), atol=1e-2)
        matches_either_sign(out.heatmap, positive, negative, what, assert_normalised_close)
        matches_either_sign(raw.heatmap, positive, negative, what + " raw", assert_raw_close)
    else:
        assert nontrivial(positive), f"{what}: degenerate reference (pick another target)"
        assert_normalised_close(out.heatmap, positive, what)
        assert_raw_close(raw.heatmap, positive, what + " raw")


def test_x3d_scorecam_matches_reference(video):
    """blocks.3 (96 channels, 4x4x4): half the forwards of blocks.4, and a layer whose masks
    are interpolated along all three axes (align_corners=True)."""
    model, x = video
    model = sharpened(model, "blocks.5.proj")
    kind = "mixed"
    ref = upsample(torch.relu(scorecam_reference(model, "blocks.3", x, kind)), x.shape[2:])
    assert nontrivial(ref)
    out = gv.ScoreCAM(model, "blocks.3", chunk_size=64)(x, gv_target(kind))
    assert_normalised_close(out.heatmap, ref, "x3d ScoreCAM")


def test_x3d_ablationcam_matches_reference(video):
    model, x = video
    kind = "mixed"
    ref = upsample(torch.relu(ablation_reference(model, "blocks.4", x, kind)), x.shape[2:])
    assert nontrivial(ref)
    out = gv.AblationCAM(model, "blocks.4")(x, gv_target(kind))
    raw = gv.AblationCAM(model, "blocks.4", normalize=False)(x, gv_target(kind))
    assert_normalised_close(out.heatmap, ref, f"x3d AblationCAM/{kind}")
    assert_raw_close(raw.heatmap, ref, f"x3d AblationCAM/{kind} raw")


# =========================================================================== #
# signed activations; normalisation after (not before) the upsampling
# =========================================================================== #
@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_resnet18_signed_layer_matches_pytorch_grad_cam(resnet, method):
    """layer4.1.conv2 (before BN and the residual add) has negative activations, so e.g.
    LayerCAM's ReLU(G) A and GradCAMElementWise's ReLU(G A) differ there (on post-ReLU layers,
    A >= 0, they coincide)."""
    model, x = resnet
    layer, kind = "layer4.1.conv2", "explicit"
    _, _, acts, _ = capture(model, [layer], x, kind, grads=False)
    assert (acts[layer] < 0).float().mean() > 0.1
    ours_cls, pgc_cls = GRADIENT_METHODS[method]
    full, (layer_map,) = run_pgc(pgc_cls, model, [layer], x, pgc_classes(model, x, kind))
    out = ours_cls(model, layer)(x, gv_target(kind))
    raw = ours_cls(model, layer, normalize=False)(x, gv_target(kind))
    positive = upsample(torch.relu(layer_map), x.shape[2:])
    what = f"{method}/{layer}"
    if method in EIGEN:
        negative = upsample(torch.relu(-layer_map), x.shape[2:])
        matches_either_sign(out.heatmap, full, negative, what, assert_normalised_close)
        matches_either_sign(raw.heatmap, positive, negative, what + " raw", assert_raw_close)
    else:
        assert nontrivial(full)
        assert_normalised_close(out.heatmap, full, what)
        assert_raw_close(raw.heatmap, positive, what + " raw")


@pytest.mark.parametrize("net", ["resnet", "video"])
def test_normalisation_after_upsampling(request, net):
    """The spec: ReLU, upsample, then min-max.  With an even scale factor and an extreme
    inside the layer map, upsampling does not reproduce the layer's extreme, so min-max before
    the resize (pytorch-grad-cam's order) gives a different map -- checked to be so here."""
    model, x = request.getfixturevalue(net)
    if net == "resnet":
        x, layer = make_input((2, 3, 128, 128), seed=1), "layer4"  # 4x4, scale 32
    else:
        layer = "blocks.3"  # 4x4x4, spatial scale 16
    _, (layer_map,) = run_pgc(pgc.GradCAM, model, [layer], x, TARGETS["explicit"])
    relu_map = torch.relu(layer_map)
    expected = minmax(upsample(relu_map, x.shape[2:]))
    before = upsample(minmax(relu_map), x.shape[2:])
    assert (expected - before).abs().max() > 1e-3  # the order is visible on this input

    out = gv.GradCAM(model, layer)(x, gv_target("explicit"))
    diff = (out.heatmap.double() - expected).abs().max().item()
    assert diff <= ATOL, f"{net}: max|diff| = {diff:.3e}"  # no re-normalisation of ours here


# =========================================================================== #
# 4. several target layers
# =========================================================================== #
@pytest.mark.parametrize("kind", ["explicit", "argmax"])
@pytest.mark.parametrize("method", CHANNEL_WEIGHTED)
def test_resnet18_multi_layer_matches_pytorch_grad_cam(resnet, method, kind):
    """pgc: per layer ReLU, min-max, resize; mean; min-max.  With the odd scale factors of
    the 75x75 input (see the module docstring) min-max commutes with the resize exactly, so
    the normalised full outputs must agree to the same atol 1e-4 as one layer."""
    model, x = resnet
    layers = ["layer3", "layer4"]
    ours_cls, pgc_cls = GRADIENT_METHODS[method]
    full, layer_maps = run_pgc(pgc_cls, model, layers, x, pgc_classes(model, x, kind))
    assert len(layer_maps) == 2
    assert nontrivial(full)
    out = ours_cls(model, layers)(x, gv_target(kind))
    assert_normalised_close(out.heatmap, full, f"{method}/{kind} {layers}")

    # normalize=False: the raw upsampled per-layer maps, averaged
    raw = ours_cls(model, layers, normalize=False)(x, gv_target(kind))
    expected = torch.stack([upsample(torch.relu(m), x.shape[2:]) for m in layer_maps]).mean(0)
    assert_raw_close(raw.heatmap, expected, f"{method}/{kind} {layers} raw")


def test_x3d_multi_layer_gradcam_matches_pytorch_grad_cam_at_layer_resolution(video):
    model, x = video
    layers = ["blocks.3", "blocks.4"]
    _, layer_maps = run_pgc(pgc.GradCAM, model, layers, x, TARGETS["explicit"])
    size = x.shape[2:]
    per_layer = [minmax(upsample(torch.relu(m), size)) for m in layer_maps]
    expected = minmax(torch.stack(per_layer).mean(0))
    assert nontrivial(expected)
    out = gv.GradCAM(model, layers)(x, gv_target("explicit"))
    assert_normalised_close(out.heatmap, expected, "x3d GradCAM multi-layer")


# =========================================================================== #
# EigenCAM sign convention: sum_k v_k >= 0, against a float64 numpy SVD
# =========================================================================== #
@pytest.mark.parametrize("net", ["resnet", "video"])
@pytest.mark.parametrize("method", ["eigencam", "eigengradcam"])
def test_eigen_sign_convention(request, net, method):
    model, x = request.getfixturevalue(net)
    layer = "layer4" if net == "resnet" else "blocks.4"
    _, _, acts, grads = capture(model, [layer], x, "explicit")
    features = acts[layer] if method == "eigencam" else grads[layer] * acts[layer]
    projection = eigen_reference(features)
    ref = upsample(torch.relu(projection), x.shape[2:])
    flipped = upsample(torch.relu(-projection), x.shape[2:])
    assert nontrivial(ref)
    assert not torch.allclose(minmax(ref), minmax(flipped), atol=1e-2)  # the sign matters

    ours_cls = gv.METHODS[method]
    out = ours_cls(model, layer)(x, gv_target("explicit"))
    raw = ours_cls(model, layer, normalize=False)(x, gv_target("explicit"))
    assert_normalised_close(out.heatmap, ref, f"{net} {method}")
    assert_raw_close(raw.heatmap, ref, f"{net} {method} raw")


# =========================================================================== #
# 5. chunking: ScoreCAM chunk sizes; AblationCAM with and without a skip around the layer
# =========================================================================== #
def test_scorecam_chunk_size_independent(small):
    model, x = small
    model = sharpened(model, "fc2")
    ref = upsample(torch.relu(scorecam_reference(model, "block", x, "mixed")), x.shape[2:])
    assert nontrivial(ref)
    # the reference is sharp enough to tell align_corners=True masks from False ones
    other = scorecam_reference(model, "block", x, "mixed", align_corners=False)
    assert (minmax(upsample(torch.relu(other), x.shape[2:])) - minmax(ref)).abs().max() > 1e-3
    heatmaps = {}
    for chunk in (3, 7, 64):  # 24 channels: 8 chunks, 4 chunks (ragged), 1 chunk
        out = gv.ScoreCAM(model, "block", chunk_size=chunk)(x, gv_target("mixed"))
        assert_normalised_close(out.heatmap, ref, f"ScoreCAM chunk_size={chunk}")
        heatmaps[chunk] = out.heatmap
    torch.testing.assert_close(heatmaps[3], heatmaps[64], rtol=0, atol=1e-5)
    torch.testing.assert_close(heatmaps[7], heatmaps[64], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "net, layer, skip",
    [
        ("small", "block", False),  # the output depends on x only through the layer
        ("small", "conv3", True),  # x = relu(x + bn3(conv3(x))): a skip around conv3
        ("resnet", "layer1.0.conv1", True),  # BasicBlock's identity skip
    ],
)
def test_ablationcam_with_and_without_skip_matches_reference(request, net, layer, skip):
    model, x = request.getfixturevalue(net)
    assert depends_around(model, layer, x) == skip
    ref = ablation_reference(model, layer, x, "mixed")
    ref = upsample(torch.relu(ref), x.shape[2:])
    assert nontrivial(ref)
    for chunk in (5, 64):
        out = gv.AblationCAM(model, layer, chunk_size=chunk)(x, gv_target("mixed"))
        assert_normalised_close(out.heatmap, ref, f"AblationCAM {layer} chunk_size={chunk}")
    raw = gv.AblationCAM(model, layer, normalize=False, chunk_size=5)(x, gv_target("mixed"))
    assert_raw_close(raw.heatmap, ref, f"AblationCAM {layer} raw")


# =========================================================================== #
# video: a network that strides in time
# =========================================================================== #
class TemporalStrideNet(nn.Module):
    """3-D conv net that halves time twice: 8 input frames -> 2 at the target layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 8, 3, stride=(2, 2, 2), padding=1),
            nn.ReLU(),
            nn.Conv3d(8, 16, 3, stride=(2, 1, 1), padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


ALL_METHODS = CAM_FAMILY


@pytest.mark.parametrize("method", ALL_METHODS)
def test_temporal_stride_maps_back_to_input_frames(method):
    """The layer has 2 frames for 8 input frames: the heatmap has the input's 8 frames, and it
    is the layer map (pytorch-grad-cam's formula where it can run) upsampled trilinearly."""
    torch.manual_seed(0)
    model = TemporalStrideNet().eval()
    x = make_input((2, 3, 8, 16, 16), seed=3)
    explainer = gv.METHODS[method](model, "features.3", normalize=False)
    out = explainer(x, [1, 2])
    assert out.heatmap.shape == (2, 8, 16, 16)
    layer = get_module(model, "features.3")
    grabbed = {}
    handle = layer.register_forward_hook(lambda _m, _i, o: grabbed.__setitem__("a", o))
    with torch.enable_grad():
        logits = model(x)
        score = logits[torch.arange(2), torch.tensor([1, 2])]
        (g,) = torch.autograd.grad(score.sum(), grabbed["a"])
    handle.remove()
    a = grabbed["a"].detach()
    assert a.shape[2] == 2
    if method in EIGEN:  # the float64 SVD reference with our sign convention
        layer_map = eigen_reference(a if method == "eigencam" else g * a).float()
    elif method in GRADIENT_METHODS:
        pgc_obj = GRADIENT_METHODS[method][1](model, [layer])
        targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(2)]
        layer_map = torch.as_tensor(
            pgc_obj.get_cam_image(x, layer, targets, a.numpy(), g.numpy(), False)
        )
    elif method == "scorecam":
        layer_map = scorecam_reference(model, "features.3", x, "pair12")
    elif method == "reciprocam":  # the formula's per-position loop (tests/test_reciprocam.py)
        from test_reciprocam import reference as reciprocam_reference

        layer_map = reciprocam_reference(model, layer, x, [1, 2], gaussian=True)[1]
    else:
        layer_map = ablation_reference(model, "features.3", x, "pair12")
    want = upsample(torch.relu(layer_map), x.shape[2:])
    assert_raw_close(out.heatmap, want, f"{method} on a time-strided net")
    frames = out.heatmap.flatten(2).amax(2)
    assert bool((frames.amax(1) > 0).all())


class SharedActivationNet(nn.Module):
    """One ReLU6 module called twice on different shapes, after the stem (8 channels, 16x16)
    and after the head (12 channels, 4x4), as EfficientNet ports share `act` / `_swish`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.body = nn.Conv2d(8, 12, 3, stride=4, padding=1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.act(self.body(self.act(self.stem(x)))).mean(dim=(2, 3)))


def test_ablationcam_on_a_module_called_twice_ablates_the_call_it_reads():
    """The map is read at the module's last call (capture_outputs keeps the last output); the
    reference ablates channel k of that call only, picked here by counting the calls."""
    model = SharedActivationNet().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    classes = logits.argmax(1)
    acts = []
    handle = model.act.register_forward_hook(lambda _m, _i, o: acts.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = acts[-1]  # the second call: (2, 12, 4, 4)
    weights = torch.zeros(a.shape[:2])
    for k in range(a.shape[1]):
        calls = []

        def zero_last(_m, _i, out, k=k, calls=calls):
            calls.append(1)
            if len(calls) == 2:
                out = out.clone()
                out[:, k] = 0
            return out

        handle = model.act.register_forward_hook(zero_last)
        with torch.no_grad():
            ablated = model(x)
        handle.remove()
        y = logits.gather(1, classes[:, None])[:, 0]
        weights[:, k] = (y - ablated.gather(1, classes[:, None])[:, 0]) / y
    ref = upsample(torch.relu((weights[:, :, None, None] * a).sum(1)), x.shape[2:])
    assert nontrivial(ref)
    out = gv.AblationCAM(model, "act")(x, classes)
    assert_normalised_close(out.heatmap, ref, "AblationCAM on a shared module")
