"""AblationCAM on ViT token layers against the formula, and its artifacts against eager.

The reference is written here from the formula (Desai & Ramaswamy), with no gradvis code, as
`ablation_reference` in test_cam_family: w_k = (y - y_k) / y, y the target logit and y_k the
logit with channel k of the layer set to 0, one literal forward per sample and channel with a
forward hook.  On a token layer, channel k of the grid (pytorch-grad-cam's documented ViT
reshape_transform: class token dropped, the patch tokens row-major on the grid) is feature k of
the tokens, and the hook zeroes feature k in every token, the class token included: what
pytorch-grad-cam's AblationCAM with a reshape_transform does (its AblationLayerVit sets channel
k of all the layer's tokens; it uses min - 1e7 rather than 0 when the layer's minimum is not 0,
so it is not the reference itself).  Then sum_k w_k A_k, ReLU, the upsampling of
gradvis_export.core.maps.upsample_to (bilinear, align_corners=False) and a per-sample min-max.

The layers: a torchvision ViT's block (B, N, D) with no skip around it (only the part after it
reruns), its default layer (the last block's ln_1, B, N, D, with a skip: the whole model
reruns), and a model on (L, B, D) tokens (a block, and a block's linear1 with a skip around
it).  Eager is compared with the formula in float64 (the default layer in float32: the
default-layer rule probes the model with float32 input); the artifacts are float32.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import make_input
from vit_models import VIT_IMAGE, VIT_LAYER, sequence_first_vit, tiny_vit

import gradvis_export as gv
import gradvis_runtime

torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

TOLERANCE = 1e-4
DEFAULT_LAYER = "encoder.layers.encoder_layer_1.ln_1"


# ------------------------------------------------------------------------- the reference


def tokens_to_grid(tokens: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """(B, 1 + H*W, D) tokens ((L, B, D) if not batch_first) -> (B, D, H, W), class token
    dropped: pytorch-grad-cam's documented ViT reshape_transform."""
    if not batch_first:
        tokens = tokens.transpose(0, 1)
    side = math.isqrt(tokens.shape[1] - 1)
    return tokens[:, 1:].reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def reference(model, layer, x, classes, batch_first=True):
    """(heatmap (B, H, W), raw heatmap (B, H, W), weights (B, D)) of AblationCAM on a token
    layer: one forward per sample and feature k, with feature k of every token set to 0."""
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    grid = tokens_to_grid(captured[-1], batch_first)  # (B, D, H, W)
    weights = torch.zeros(grid.shape[:2], dtype=grid.dtype)
    for b in range(x.shape[0]):
        y = logits[b, classes[b]]
        for k in range(grid.shape[1]):

            def zero_feature(_module, _inputs, out, k=k):
                out = out.clone()
                out[..., k] = 0  # features are the last axis in both layouts
                return out

            handle = layer.register_forward_hook(zero_feature)
            with torch.no_grad():
                y_k = model(x[b : b + 1])[0, classes[b]]
            handle.remove()
            weights[b, k] = (y - y_k) / y
    maps = torch.relu((weights[:, :, None, None] * grid).sum(dim=1))
    raw = F.interpolate(maps.unsqueeze(1), size=x.shape[2:], mode="bilinear")[:, 0]
    flat = raw.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    heatmap = (raw - low[:, None, None]) / (high - low)[:, None, None]
    return heatmap, raw, weights


def argmax_classes(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[int]:
    with torch.no_grad():
        best = model(x).argmax(dim=1)
    return torch.where(target < 0, best, target).tolist()


def assert_close(got: torch.Tensor, want: torch.Tensor, label: str) -> float:
    assert got.shape == want.shape, label
    diff = float((got - want).abs().max())
    assert diff <= TOLERANCE, f"{label}: max abs diff {diff:.2e}"
    return diff


def assert_nontrivial(weights: torch.Tensor, raw: torch.Tensor) -> None:
    """Ablation must move the score (the bug: nothing ablated, weights ~1e-7, and a min-max of
    noise), and the map must have a spread the min-max does not turn into rounding noise."""
    assert float(weights.abs().amax()) > 1e-2, f"weights {float(weights.abs().amax()):.1e}"
    spread = raw.flatten(1).amax(1) - raw.flatten(1).amin(1)
    assert bool((spread > 1e-3 * raw.flatten(1).amax(1)).all()), f"spread {spread.tolist()}"


# ------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def sequence_first():
    return sequence_first_vit()


# ------------------------------------------------------------------------- eager vs formula

# (model fixture, layer, TokenGrid batch_first, the output depends on x only through the layer)
TOKEN_LAYERS = [
    ("vit", VIT_LAYER, True, True),
    ("sequence_first", "blocks.0", False, True),
    ("sequence_first", "blocks.1.linear1", False, False),  # the block's skip around its MLP
]


@pytest.mark.parametrize("net, layer, batch_first, suffix_only", TOKEN_LAYERS)
def test_token_layer_ablates_the_token_features(request, net, layer, batch_first, suffix_only):
    model = copy.deepcopy(request.getfixturevalue(net)).double()
    x, target = make_input((2, *VIT_IMAGE), seed=4).double(), torch.tensor([-1, 1])
    module = dict(model.named_modules())[layer]
    want, want_raw, weights = reference(
        model, module, x, argmax_classes(model, x, target), batch_first
    )
    assert_nontrivial(weights, want_raw)
    grid = gv.TokenGrid(batch_first=batch_first)
    for chunk in (5, 64):  # ragged chunks, one chunk
        explainer = gv.AblationCAM(model, layer, chunk_size=chunk, reshape=grid)
        assert_close(explainer(x, target).heatmap, want, f"{net} {layer} chunk_size={chunk}")
        assert explainer.only_through_layer(x, 0) is suffix_only
    raw = gv.AblationCAM(model, layer, normalize=False, chunk_size=5, reshape=grid)
    assert_close(raw(x, target).heatmap, want_raw, f"{net} {layer} raw")


def test_vit_default_layer_ablates_the_token_features(vit):
    """The default layer of a ViT (the last block's ln_1) gets its TokenGrid; a skip goes
    around it, so the whole model reruns on copies of the input."""
    x, target = make_input((2, *VIT_IMAGE), seed=5), torch.tensor([3, -1])
    explainer = gv.AblationCAM(vit, chunk_size=16)
    got = explainer(x, target).heatmap
    assert explainer.target_layers == (DEFAULT_LAYER,)
    assert isinstance(explainer.reshape, gv.TokenGrid)
    assert not explainer.only_through_layer(x, 0)
    module = dict(vit.named_modules())[DEFAULT_LAYER]
    want, want_raw, weights = reference(vit, module, x, argmax_classes(vit, x, target))
    assert_nontrivial(weights, want_raw)
    assert_close(got, want, "vit default layer")


@pytest.mark.parametrize("batch_first", [True, False])
def test_mask_channels_scales_the_features_of_every_token(batch_first):
    grid = gv.TokenGrid(grid=(2, 3), prefix=2, batch_first=batch_first)
    samples, copies, dim = 2, 3, 4
    tokens = torch.randn(samples * copies, 2 + 6, dim)  # (B * M, N, D), samples repeated
    masks = torch.rand(copies, dim)
    given = tokens if batch_first else tokens.transpose(0, 1)
    got = grid.mask_channels(given, masks)
    got = got if batch_first else got.transpose(0, 1)
    for b in range(samples * copies):  # the prefix tokens too
        torch.testing.assert_close(got[b], tokens[b] * masks[b % copies])
    # the grid view of the masked tokens is the grid times the channel mask
    torch.testing.assert_close(
        grid(grid.mask_channels(given, masks)).unflatten(0, (samples, copies)),
        grid(given).unflatten(0, (samples, copies)) * masks[:, :, None, None],
    )
    with pytest.raises(gv.LayerError, match="must be"):
        grid.mask_channels(given, torch.rand(copies, dim + 1))


def test_reshape_must_be_a_token_grid(vit):
    with pytest.raises(gv.LayerError, match="must be a TokenGrid"):
        gv.AblationCAM(vit, VIT_LAYER, reshape=lambda t: t)
    with pytest.raises(gv.LayerError, match="reshape=gradvis_export.core.tokens.TokenGrid"):
        gv.AblationCAM(vit, VIT_LAYER)(make_input((1, *VIT_IMAGE)))


# ------------------------------------------------------------------------- artifacts

# (model fixture, layer (None: the default), TokenGrid batch_first, format).  Both formats
# write the same traced graph: ONNX (the slow export) on one (B, N, D) and one (L, B, D) case,
# one of each path; TorchScript on all four.
ARTIFACTS = [
    ("vit", VIT_LAYER, True, "pt"),  # only the part after the layer reruns
    ("vit", None, True, "pt"),  # the default layer: its TokenGrid, the whole model reruns
    ("vit", None, True, "onnx"),
    ("sequence_first", "blocks.0", False, "pt"),
    ("sequence_first", "blocks.0", False, "onnx"),
    ("sequence_first", "blocks.1.linear1", False, "pt"),
]


@pytest.mark.parametrize("net, layer, batch_first, fmt", ARTIFACTS)
def test_artifact_matches_eager(request, tmp_path, net, layer, batch_first, fmt):
    model = request.getfixturevalue(net)
    reshape = None if layer is None else gv.TokenGrid(batch_first=batch_first)
    explainer = gv.AblationCAM(model, layer, chunk_size=24, reshape=reshape)  # 32, 64: ragged
    example = make_input((2, *VIT_IMAGE), seed=100)
    path = gv.export(explainer, example, tmp_path / f"a.{fmt}", check=False)  # compared here
    runtime = gradvis_runtime.load(path, threads=1)
    assert runtime.spec.method == "ablationcam"
    assert runtime.spec.options["chunk_size"] == 24
    for batch in (1, 3):
        x = make_input((batch, *VIT_IMAGE), seed=batch)  # not the traced example
        target = torch.tensor([-1, 4, 1][:batch])
        want = explainer(x, target)
        got = runtime.run(x.numpy(), target=target.numpy())
        np.testing.assert_allclose(got["logits"], want.logits.numpy(), rtol=1e-4, atol=1e-4)
        assert bool((want.heatmap.flatten(1).amax(1) > 0).all()), "a zero map proves nothing"
        heat = torch.from_numpy(got["heatmap"])
        assert_close(heat, want.heatmap, f"{net} {layer} {fmt} b={batch}")
