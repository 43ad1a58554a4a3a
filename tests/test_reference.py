"""gradvis_export eager outputs vs. an independent plain-autograd reference (and captum).

The reference implementation in this file never calls gradvis_export:

* Grad-CAM: a forward hook grabs the target layer output ``A``; ``dy/dA`` comes
  from ``torch.autograd.grad``; weights are the spatial mean of the gradient.
* Guided backprop: a ``TorchFunctionMode`` intercepts every activation call
  (module, functional, ``torch.*`` and ``Tensor.*`` spellings, in-place or not)
  and routes it through an autograd Function whose backward is
  ``vjp_f(x, relu(grad_out))`` -- i.e. the ordinary derivative of the
  activation times ReLU of the incoming gradient.  For ReLU this is exactly
  "pass the gradient only where input > 0 and grad > 0".

The first group of tests checks the reference itself against hand-written
formulas and against captum, so it runs even before gradvis_export exists.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models
from guided_reference import GuidedMode
from models import MODEL_FACTORIES, make_input

# One intra-op thread by default: these nets are tiny, and with 2 OpenMP threads
# on a 2-core box that is also running anything else, each forward/backward gets
# 10-50x slower (spinning threads).  Override with GRADVIS_TEST_THREADS=2.
torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore:'saved_variables' is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

MODEL_NAMES = list(MODEL_FACTORIES)
RELU_ONLY = [
    n for n in MODEL_NAMES if n in ("resnet18", "vgg11_bn", "slow_resnet", "mixed_relu_net")
]
# captum only hooks nn.ReLU modules; for mixed_relu_net we run captum on the
# numerically identical twin whose ReLUs are all nn.ReLU modules (see models.py).
CAPTUM_MODELS = ["resnet18", "vgg11_bn", "mixed_relu_net", "slow_resnet"]
# nets without any ReLU: gradvis_export refuses activations="relu" there (it
# raises ValueError rather than silently returning the plain gradient), so
# their guided tests use activations="all".
NO_RELU = ["efficientnet_b0"]
# non-ReLU nets on which activations="all" is checked (X3D's Swish is a custom
# autograd.Function the spec does not cover, so X3D is only tested with "relu").
ALL_ACT_MODELS = ["mobilenet_v3_small", "efficientnet_b0"]


# =========================================================================== #
# helpers
# =========================================================================== #
def build(name, seed=0):
    spec = MODEL_FACTORIES[name](seed)
    x = make_input(spec.input_shape, seed=seed + 1)
    return spec, x


def num_classes(spec, x):
    with torch.no_grad():
        return spec.model(x[:1]).shape[1]


def make_target(kind, n_classes, batch):
    """None | mixed explicit/-1 | all explicit, as an int64 (B,) tensor."""
    if kind == "none":
        return None
    n = n_classes
    if kind == "mixed":
        # class 3 gives a non-zero Grad-CAM map on every test net (checked below)
        vals = [3 % n if b % 2 == 0 else -1 for b in range(batch)]
    elif kind == "explicit":
        vals = [(3 * b + 1) % n for b in range(batch)]
    elif kind == "all_minus1":
        vals = [-1] * batch
    else:
        raise ValueError(kind)
    return torch.tensor(vals, dtype=torch.int64)


def resolve_targets(logits, target):
    am = logits.detach().argmax(dim=1)
    if target is None:
        return am
    t = torch.as_tensor(target, dtype=torch.int64)
    return torch.where(t == -1, am, t)


def get_module(model, layer):
    if isinstance(layer, nn.Module):
        return layer
    return dict(model.named_modules())[layer]


def scaled_close(actual, expected, rel=1e-5, rtol=1e-4, what=""):
    """assert_close with atol relative to max|expected| and a readable message."""
    actual = torch.as_tensor(actual).detach()
    expected = torch.as_tensor(expected).detach()
    assert actual.shape == expected.shape, (
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    assert torch.isfinite(actual).all(), f"{what}: non-finite values in output"
    scale = expected.abs().max().item()
    atol = rel * scale if scale > 0 else 1e-12
    diff = (actual.double() - expected.double()).abs().max().item()
    torch.testing.assert_close(
        actual,
        expected,
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{what}: max|diff|={diff:.3e}, max|ref|={scale:.3e}, atol={atol:.3e}\n{m}",
    )


def normalise_per_sample(h):
    flat = h.flatten(1)
    mn = flat.min(dim=1).values.view(-1, *([1] * (h.dim() - 1)))
    mx = flat.max(dim=1).values.view(-1, *([1] * (h.dim() - 1)))
    rng = mx - mn
    safe = torch.where(rng > 0, rng, torch.ones_like(rng))
    return torch.where(rng > 0, (h - mn) / safe, torch.zeros_like(h))


def upsample(cam, size):
    """(B, *S) -> (B, *size) with the spec's interpolation."""
    mode = {2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(cam[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


# =========================================================================== #
# the reference implementation
# =========================================================================== #
def reference_gradcam(model, layer, x, target=None, normalize=True):
    """Returns (logits, heatmap (B, *x.shape[2:]))."""
    module = get_module(model, layer)
    captured = []
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = model(xg)
            t = resolve_targets(logits, target)
            score = logits.gather(1, t[:, None]).sum()
            assert len(captured) == 1, "target layer must run exactly once"
            A = captured[0]
            (G,) = torch.autograd.grad(score, A)
    finally:
        handle.remove()
    A = A.detach()
    w = G.mean(dim=tuple(range(2, A.dim())), keepdim=True)
    cam = torch.relu((w * A).sum(dim=1))
    cam = upsample(cam, x.shape[2:])
    if normalize:
        cam = normalise_per_sample(cam)
    return logits.detach(), cam.detach()


def reference_guided(model, x, target=None, activations="relu", return_hits=False):
    """Returns (logits, d y / d x with guided activations)."""
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        mode = GuidedMode(activations)
        with mode:
            logits = model(xg)
        t = resolve_targets(logits, target)
        score = logits.gather(1, t[:, None]).sum()
        (g,) = torch.autograd.grad(score, xg)
    if return_hits:
        return logits.detach(), g.detach(), mode.hits
    return logits.detach(), g.detach()


def reference_guided_gradcam(model, layer, x, target=None, normalize=True, activations="relu"):
    """Returns (logits, heatmap, cam, guided)."""
    logits, cam = reference_gradcam(model, layer, x, target, normalize)
    _, guided = reference_guided(model, x, target, activations)
    return logits, guided * cam[:, None], cam, guided


# =========================================================================== #
# 1. sanity checks of the reference itself (no gradvis_export needed)
# =========================================================================== #
class TwoReLUMLP(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        torch.manual_seed(3)
        self.l1, self.l2, self.l3 = nn.Linear(5, 8), nn.Linear(8, 6), nn.Linear(6, 4)
        self.spelling = spelling

    def forward(self, x):
        if self.spelling == "module":
            return self.l3(nn.ReLU()(self.l2(nn.ReLU(inplace=True)(self.l1(x)))))
        h = self.l1(x)
        h.relu_()
        return self.l3(F.relu(self.l2(h), inplace=True))


def _hand_guided_mlp(m, x, t, act1=lambda z: (z > 0).float(), act2=lambda z: (z > 0).float()):
    """Hand-written guided backprop through Linear-act-Linear-act-Linear."""
    W1, W2, W3 = m.l1.weight, m.l2.weight, m.l3.weight
    z1 = x @ W1.T + m.l1.bias
    z2 = torch.relu(z1) @ W2.T + m.l2.bias
    g = W3[t]  # (B, 6) dy/da2
    g = act2(z2) * g.clamp(min=0)
    g = g @ W2  # dy/da1
    g = act1(z1) * g.clamp(min=0)
    return g @ W1


@pytest.mark.parametrize("spelling", ["module", "functional_inplace"])
def test_reference_guided_relu_mlp_by_hand(spelling):
    m = TwoReLUMLP(spelling).eval()
    x = make_input((16, 5), seed=7)
    t = torch.arange(16) % 4
    with torch.no_grad():
        expect = _hand_guided_mlp(m, x, t)
        plain_logits = m(x)
    logits, g, hits = reference_guided(m, x, t, return_hits=True)
    assert hits == 2
    scaled_close(logits, plain_logits, what="logits")
    scaled_close(g, expect, what="guided vs hand formula")
    # the guided rule must actually differ from the plain gradient here
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(m(xg).gather(1, t[:, None]).sum(), xg)
    assert (plain - g).abs().max() > 1e-3


def test_reference_guided_all_rule_by_hand():
    """SiLU/Sigmoid in activations='all': derivative * relu(grad)."""

    class SiLUMLP(TwoReLUMLP):
        def forward(self, x):
            return self.l3(torch.sigmoid(self.l2(nn.SiLU(inplace=True)(self.l1(x)))))

    m = SiLUMLP("module").eval()
    x = make_input((16, 5), seed=8)
    t = torch.arange(16) % 4
    W1, W2, W3 = m.l1.weight, m.l2.weight, m.l3.weight
    with torch.no_grad():
        z1 = x @ W1.T + m.l1.bias
        z2 = F.silu(z1) @ W2.T + m.l2.bias
        s2 = torch.sigmoid(z2)
        g = s2 * (1 - s2) * W3[t].clamp(min=0)
        g = g @ W2
        s1 = torch.sigmoid(z1)
        g = s1 * (1 + z1 * (1 - s1)) * g.clamp(min=0)
        expect = g @ W1
    _, got, hits = reference_guided(m, x, t, activations="all", return_hits=True)
    assert hits == 2
    scaled_close(got, expect, what="all-rule guided vs hand formula")
    # with activations="relu" nothing is guided -> plain gradient
    _, plain_ref = reference_guided(m, x, t, activations="relu")
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(m(xg).gather(1, t[:, None]).sum(), xg)
    scaled_close(plain_ref, plain, what="relu-mode on non-relu net == plain grad")


class ReLU6MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.l1, self.l2 = nn.Linear(5, 32), nn.Linear(32, 3)
        with torch.no_grad():
            self.l1.weight.mul_(8.0)  # push a good fraction of units above 6

    def forward(self, x):
        return self.l2(nn.ReLU6(inplace=True)(self.l1(x)))


def test_reference_guided_relu6_by_hand():
    m = ReLU6MLP().eval()
    x = make_input((8, 5), seed=9)
    t = torch.arange(8) % 3
    with torch.no_grad():
        z = m.l1(x)
        assert (z > 6).any() and (z < 0).any()
        expect = (((z > 0) & (z < 6)).float() * m.l2.weight[t].clamp(min=0)) @ m.l1.weight
    _, got = reference_guided(m, x, t)
    scaled_close(got, expect, what="relu6 guided vs hand formula")


class GAPHead(nn.Module):
    """conv -> relu -> (target) -> global avg pool -> linear."""

    def __init__(self, dims=2, k=6, classes=5):
        super().__init__()
        torch.manual_seed(5)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.feat = nn.Sequential(conv(3, k, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(k, classes)

    def forward(self, x):
        return self.fc(self.feat(x).flatten(2).mean(-1))


@pytest.mark.parametrize("shape", [(3, 3, 16, 12), (2, 3, 4, 8, 10)], ids=["2d", "3d"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "norm"])
def test_reference_gradcam_gap_by_hand(shape, normalize):
    m = GAPHead(dims=len(shape) - 2).eval()
    x = make_input(shape, seed=10)
    t = torch.tensor([4, -1, 0][: shape[0]])
    with torch.no_grad():
        A = m.feat(x)
        tt = resolve_targets(m(x), t)
        S = A[0, 0].numel()
        w = m.fc.weight[tt] / S  # (B, K): dy/dA_k is fc_weight[t, k] / |S| everywhere
        cam = torch.relu(torch.einsum("bk,bk...->b...", w, A))
        cam = upsample(cam, x.shape[2:])
        if normalize:
            flat = cam.flatten(1)
            mn = flat.min(1).values.view(-1, *[1] * (cam.dim() - 1))
            mx = flat.max(1).values.view(-1, *[1] * (cam.dim() - 1))
            cam = (cam - mn) / (mx - mn)
    _, got = reference_gradcam(m, "feat", x, t, normalize)
    assert got.shape == (shape[0], *shape[2:])
    assert (cam.flatten(1).amax(1) > 0).all()
    scaled_close(got, cam, what="gradcam vs GAP formula")


def test_reference_normalise_constant_maps():
    h = torch.stack([torch.zeros(4, 5), torch.full((4, 5), 2.5), torch.arange(20.0).view(4, 5)])
    n = normalise_per_sample(h)
    assert torch.isfinite(n).all()
    assert (n[0] == 0).all() and (n[1] == 0).all()
    assert n[2].min() == 0 and n[2].max() == 1


def test_reference_handles_every_relu_spelling():
    """The mixed-spelling net and its all-nn.ReLU twin give identical guided grads."""
    a, _ = build("mixed_relu_net")
    b = models.mixed_relu_net(spelling="modules").model
    x = make_input(a.input_shape, seed=1)
    la, ga, hits_a = reference_guided(a.model, x, None, return_hits=True)
    lb, gb, hits_b = reference_guided(b, x, None, return_hits=True)
    assert hits_a == hits_b == 7
    scaled_close(la, lb, what="logits")
    scaled_close(ga, gb, what="guided mixed vs modules")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reference_models_are_not_degenerate(name):
    """Guard against vacuous comparisons: non-trivial CAMs and guided grads."""
    spec, x = build(name)
    for kind in ("none", "mixed"):
        target = make_target(kind, num_classes(spec, x), x.shape[0])
        _, cam = reference_gradcam(spec.model, spec.target_layer, x, target, normalize=False)
        assert (cam.flatten(1).amax(1) > 0).all(), f"a Grad-CAM map is all zero (target {kind})"
    _, g = reference_guided(spec.model, x, None, "all" if name in NO_RELU else "relu")
    assert (g.flatten(1).abs().amax(1) > 0).all(), "guided gradient is zero"


# --------------------------------------------------------------------------- #
# reference vs captum (still no gradvis_export)
# --------------------------------------------------------------------------- #
def captum_model(name, spec):
    """Copy of the model that captum can hook: nn.ReLU modules, not in place."""
    if name == "mixed_relu_net":
        m = models.mixed_relu_net(spelling="modules").model
    else:
        m = copy.deepcopy(spec.model)
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    return m.eval()


def captum_all(name, spec, x, target):
    """captum LayerGradCam (upsampled), GuidedBackprop and GuidedGradCam, raw."""
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerGradCam

    m = captum_model(name, spec)
    layer = get_module(m, spec.target_layer)
    with torch.no_grad():
        t = resolve_targets(m(x), target)
    mode = {4: "bilinear", 5: "trilinear"}[x.dim()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lgc = LayerGradCam(m, layer).attribute(x.clone(), target=t, relu_attributions=True)
        cam = F.interpolate(lgc, size=x.shape[2:], mode=mode, align_corners=False)[:, 0]
        gbp = GuidedBackprop(m).attribute(x.clone(), target=t)
        ggc = GuidedGradCam(m, layer).attribute(x.clone(), target=t, interpolate_mode=mode)
    return cam.detach(), gbp.detach(), ggc.detach()


@pytest.mark.parametrize("name", CAPTUM_MODELS)
def test_reference_vs_captum(name):
    spec, x = build(name)
    target = make_target("mixed", num_classes(spec, x), x.shape[0])
    cam_c, gbp_c, ggc_c = captum_all(name, spec, x, target)
    _, cam = reference_gradcam(spec.model, spec.target_layer, x, target, normalize=False)
    _, gbp = reference_guided(spec.model, x, target)
    scaled_close(cam, cam_c, what=f"{name}: ref gradcam vs captum")
    scaled_close(gbp, gbp_c, what=f"{name}: ref guided vs captum")
    scaled_close(gbp * cam[:, None], ggc_c, what=f"{name}: ref guided gradcam vs captum")


# =========================================================================== #
# 2. gradvis_export vs the reference
# =========================================================================== #
@pytest.fixture(scope="module")
def gv():
    import gradvis_export

    return gradvis_export


def _check_logits(out, model, x, name):
    with torch.no_grad():
        expect = model(x)
    scaled_close(out.logits, expect, rel=1e-6, rtol=1e-5, what=f"{name}: logits")


TARGET_KINDS = ["none", "mixed"]


@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "raw"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradcam_matches_reference(gv, name, normalize, target_kind):
    spec, x = build(name)
    n_cls = num_classes(spec, x)
    target = make_target(target_kind, n_cls, x.shape[0])
    _, ref = reference_gradcam(spec.model, spec.target_layer, x, target, normalize)
    x_before = x.clone()
    explainer = gv.GradCAM(spec.model, target_layer=spec.target_layer, normalize=normalize)
    out = explainer(x) if target is None else explainer(x, target)
    assert torch.equal(x, x_before), "input was modified"
    _check_logits(out, spec.model, x, name)
    assert tuple(out.heatmap.shape) == (x.shape[0], *x.shape[2:])
    scaled_close(out.heatmap, ref, what=f"{name}: gradcam normalize={normalize}")


@pytest.mark.parametrize("target_kind", ["explicit", "all_minus1"])
def test_gradcam_resnet18_more_targets(gv, target_kind):
    spec, x = build("resnet18")
    target = make_target(target_kind, 10, x.shape[0])
    for normalize in (True, False):
        _, ref = reference_gradcam(spec.model, spec.target_layer, x, target, normalize)
        out = gv.GradCAM(spec.model, target_layer=spec.target_layer, normalize=normalize)(x, target)
        scaled_close(out.heatmap, ref, what=f"resnet18 {target_kind} normalize={normalize}")
    if target_kind == "all_minus1":  # -1 everywhere == target None
        none_out = gv.GradCAM(spec.model, target_layer=spec.target_layer)(x)
        ref_none = reference_gradcam(spec.model, spec.target_layer, x, None)[1]
        scaled_close(none_out.heatmap, ref_none, what="resnet18 target=None")


@pytest.mark.parametrize("name", ["resnet18", "mixed_relu_net", "x3d"])
def test_gradcam_target_layer_as_module(gv, name):
    spec, x = build(name)
    target = make_target("mixed", num_classes(spec, x), x.shape[0])
    layer = get_module(spec.model, spec.target_layer)
    _, ref = reference_gradcam(spec.model, layer, x, target, True)
    out = gv.GradCAM(spec.model, target_layer=layer)(x, target)
    scaled_close(out.heatmap, ref, what=f"{name}: gradcam(module object)")


def _guided_params():
    params = []
    for n in MODEL_NAMES:
        if n not in NO_RELU:
            params.append(pytest.param(n, "relu", id=f"{n}-relu"))
        if n in RELU_ONLY or n in ALL_ACT_MODELS:
            params.append(pytest.param(n, "all", id=f"{n}-all"))
    return params


@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("name,activations", _guided_params())
def test_guided_matches_reference(gv, name, activations, target_kind):
    spec, x = build(name)
    target = make_target(target_kind, num_classes(spec, x), x.shape[0])
    _, ref = reference_guided(spec.model, x, target, activations)
    x_before = x.clone()
    explainer = gv.GuidedBackprop(spec.model, activations=activations)
    out = explainer(x) if target is None else explainer(x, target)
    assert torch.equal(x, x_before), "input was modified"
    _check_logits(out, spec.model, x, name)
    scaled_close(out.heatmap, ref, what=f"{name}: guided activations={activations}")
    if spec.relu_only and activations == "all":
        # nothing but ReLUs: "all" must coincide with "relu"
        _, ref_relu = reference_guided(spec.model, x, target, "relu")
        scaled_close(out.heatmap, ref_relu, what=f"{name}: all == relu on relu-only net")


@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "raw"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_guided_gradcam_matches_reference(gv, name, normalize, target_kind):
    spec, x = build(name)
    target = make_target(target_kind, num_classes(spec, x), x.shape[0])
    acts = "all" if name in NO_RELU else "relu"
    _, heat, cam, guided = reference_guided_gradcam(
        spec.model, spec.target_layer, x, target, normalize, activations=acts
    )
    explainer = gv.GuidedGradCAM(
        spec.model,
        target_layer=spec.target_layer,
        activations=acts,
        normalize=normalize,
    )
    out = explainer(x) if target is None else explainer(x, target)
    _check_logits(out, spec.model, x, name)
    what = f"{name}: guided-gradcam normalize={normalize}"
    scaled_close(out.cam, cam, what=what + " .cam")
    scaled_close(out.guided, guided, what=what + " .guided")
    scaled_close(out.heatmap, heat, what=what + " .heatmap")


@pytest.mark.parametrize("name", ALL_ACT_MODELS)
def test_guided_gradcam_all_activations(gv, name):
    spec, x = build(name)
    target = make_target("mixed", num_classes(spec, x), x.shape[0])
    _, heat, cam, guided = reference_guided_gradcam(
        spec.model, spec.target_layer, x, target, True, activations="all"
    )
    out = gv.GuidedGradCAM(spec.model, target_layer=spec.target_layer, activations="all")(x, target)
    scaled_close(out.cam, cam, what=f"{name}: .cam")
    scaled_close(out.guided, guided, what=f"{name}: .guided (all)")
    scaled_close(out.heatmap, heat, what=f"{name}: .heatmap (all)")


# --------------------------------------------------------------------------- #
# gradvis_export vs captum (raw, unnormalised maps)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", CAPTUM_MODELS)
def test_gv_vs_captum(gv, name):
    spec, x = build(name)
    target = make_target("mixed", num_classes(spec, x), x.shape[0])
    cam_c, gbp_c, ggc_c = captum_all(name, spec, x, target)
    cam = gv.GradCAM(spec.model, target_layer=spec.target_layer, normalize=False)(x, target).heatmap
    gbp = gv.GuidedBackprop(spec.model, activations="relu")(x, target).heatmap
    ggc = gv.GuidedGradCAM(spec.model, target_layer=spec.target_layer, normalize=False)(x, target)
    scaled_close(cam, cam_c, what=f"{name}: GradCAM vs captum LayerGradCam")
    scaled_close(gbp, gbp_c, what=f"{name}: GuidedBackprop vs captum")
    scaled_close(ggc.heatmap, ggc_c, what=f"{name}: GuidedGradCAM vs captum")


# --------------------------------------------------------------------------- #
# small targeted behaviours
# --------------------------------------------------------------------------- #
def test_gradcam_zero_and_constant_maps(gv):
    """A sample whose map is all zero or constant normalises to zeros, not NaN."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        m[0].weight.abs_()
        m[0].bias.fill_(0.5)
        m[4].weight.copy_(
            torch.tensor([[1.0, 2.0, 0.5, 1.0], [-1.0, -2.0, -0.5, -1.0], [1.0, -1.0, 1.0, -1.0]])
        )
    m.eval()
    x = torch.stack([make_input((3, 8, 8), seed=11).abs(), torch.ones(3, 8, 8)])
    # sample 0 -> class 1 (all weights negative, A >= 0): ReLU'd map is all zero
    # sample 1 -> class 0 on a constant image: map is a positive constant
    target = torch.tensor([1, 0])
    for normalize in (True, False):
        _, ref = reference_gradcam(m, "1", x, target, normalize)
        out = gv.GradCAM(m, target_layer="1", normalize=normalize)(x, target)
        assert torch.isfinite(out.heatmap).all()
        assert (ref[0] == 0).all()
        if normalize:
            assert (ref == 0).all()  # construction really is exactly constant
            assert (out.heatmap == 0).all(), "constant maps must normalise to zeros"
        else:
            assert ref[1].min() > 0
        scaled_close(out.heatmap, ref, what=f"degenerate maps normalize={normalize}")
        ggc = gv.GuidedGradCAM(m, target_layer="1", normalize=normalize)(x, target)
        assert torch.isfinite(ggc.heatmap).all() and torch.isfinite(ggc.cam).all()
        scaled_close(
            ggc.cam,
            ref,
            what=f"degenerate maps GuidedGradCAM.cam normalize={normalize}",
        )


def test_guided_relu6(gv):
    """ReLU6 is guided like ReLU: ordinary ReLU6 derivative (0 < z < 6) times relu(grad)."""
    m = ReLU6MLP().eval()
    x = make_input((8, 5), seed=9)
    # gradvis takes image/video input; wrap the MLP so it sees (B, 5, 1, 1)
    net = nn.Sequential(nn.Flatten(), m).eval()
    xi = x.view(8, 5, 1, 1)
    t = torch.arange(8) % 3
    _, ref = reference_guided(net, xi, t)
    out = gv.GuidedBackprop(net, activations="relu")(xi, t)
    scaled_close(out.heatmap, ref, what="ReLU6 guided (saturated units > 6 get zero gradient)")


def test_batch_samples_are_independent(gv):
    spec, x = build("resnet18")
    target = torch.tensor([7, -1])
    cam_b = gv.GradCAM(spec.model, target_layer="layer4")(x, target).heatmap
    gbp_b = gv.GuidedBackprop(spec.model)(x, target).heatmap
    for b in range(2):
        cam_1 = gv.GradCAM(spec.model, target_layer="layer4")(
            x[b : b + 1], target[b : b + 1]
        ).heatmap
        gbp_1 = gv.GuidedBackprop(spec.model)(x[b : b + 1], target[b : b + 1]).heatmap
        scaled_close(cam_b[b : b + 1], cam_1, what=f"gradcam sample {b} alone vs batched")
        scaled_close(gbp_b[b : b + 1], gbp_1, what=f"guided sample {b} alone vs batched")


@pytest.mark.parametrize("name", ["resnet18", "mixed_relu_net", "efficientnet_b0"])
def test_model_left_untouched(gv, name):
    """After the explainers ran, the model computes the same outputs/grads, no hooks left."""
    spec, x = build(name)
    model = spec.model

    def hook_counts():
        return [
            (
                len(mod._forward_hooks),
                len(mod._forward_pre_hooks),
                len(mod._backward_hooks),
            )
            for mod in model.modules()
        ]

    def plain_grad():
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        (g,) = torch.autograd.grad(out[:, 0].sum(), xg)
        return out.detach(), g

    hooks0 = hook_counts()
    out0, g0 = plain_grad()
    acts = "all" if name == "efficientnet_b0" else "relu"
    gv.GradCAM(model, target_layer=spec.target_layer)(x)
    gv.GuidedBackprop(model, activations=acts)(x)
    gv.GuidedGradCAM(model, target_layer=spec.target_layer, activations=acts)(x)
    out1, g1 = plain_grad()
    assert hook_counts() == hooks0, "hooks left behind on the model"
    assert model.training is False
    assert torch.equal(out0, out1)
    scaled_close(g1, g0, rel=1e-6, what=f"{name}: plain gradient after explainers")


def test_parameter_grads_not_accumulated(gv):
    """Not stated in the spec, but explaining should not leave .grad on the weights."""
    spec, x = build("mixed_relu_net")
    gv.GradCAM(spec.model, target_layer=spec.target_layer)(x)
    gv.GuidedBackprop(spec.model)(x)
    gv.GuidedGradCAM(spec.model, target_layer=spec.target_layer)(x)
    dirty = [n for n, p in spec.model.named_parameters() if p.grad is not None]
    assert not dirty, f"parameter .grad populated: {dirty[:5]}"


def test_pytorchvideo_swish_is_guided_with_all(gv):
    """X3D's Swish is a custom autograd.Function; with activations="all" it must be guided like
    SiLU.  Reference: the independent guided reference on a twin whose Swish modules are nn.SiLU
    (same values; SiLU is caught by the reference's function mode)."""
    from pytorchvideo.layers.swish import Swish

    spec, x = build("x3d")
    twin = copy.deepcopy(spec.model)
    for parent in twin.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, Swish):
                setattr(parent, child_name, nn.SiLU())
    target = torch.tensor([3, -1])
    _, ref = reference_guided(twin, x, target, activations="all")
    out = gv.GuidedBackprop(spec.model, activations="all")(x, target)
    scaled_close(out.heatmap, ref, what="x3d guided all")
    _, relu_only = reference_guided(spec.model, x, target, activations="relu")
    assert (ref - relu_only).abs().max() > 1e-3 * ref.abs().max()  # Swish guiding matters
