"""ReciproCAM and ViT-ReciproCAM against the formula, and their artifacts against eager.

The reference is written here from the papers (Byun & Lee, arXiv 2209.14074; ViT-ReciproCAM,
arXiv 2310.02588), with no gradvis code: for every sample and every position s of the layer's
map, a forward hook replaces the layer's output by the output times the mask of s (one-hot, or
the 3x3 kernel centred on s, cut at the borders; a token layer: the patch tokens times the mask,
the class token kept), the model runs on that one sample, and the map at s is the softmax
probability of the class.  Then ReLU, the upsampling of gradvis_export.core.maps.upsample_to
(F.interpolate, bilinear / trilinear, align_corners=False) and a per-sample min-max.

Eager is compared with the formula in float64 (and once in float32): on these random nets a
map spans only ~1e-2 of the probability, so the min-max turns float32 rounding (batched vs
single-sample convolutions, a few ulp) into up to ~8e-5, too close to the 1e-4 to be a test of
the formula.  The artifacts are float32 and compared with float32 eager.
"""

from __future__ import annotations

import copy
import itertools
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
from models import make_input, resnet18, x3d
from vit_models import VIT_IMAGE, VIT_LAYER, tiny_vit

import gradvis_export as gv
import gradvis_runtime

torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

KERNEL = [[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]]
TOLERANCE = 1e-4


# ------------------------------------------------------------------------- the reference


def mask_at(sizes: tuple[int, ...], position: tuple[int, ...], gaussian: bool) -> torch.Tensor:
    """The mask of `position` on a (H, W) or (T, H, W) map: one-hot, or the kernel centred on
    it (cut at the borders, only in its own frame)."""
    mask = torch.zeros(sizes)
    if not gaussian:
        mask[position] = 1.0
        return mask
    *frame, row, col = position
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r, c = row + dr, col + dc
            if 0 <= r < sizes[-2] and 0 <= c < sizes[-1]:
                mask[(*frame, r, c)] = KERNEL[dr + 1][dc + 1]
    return mask


def layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return captured[-1]


def upsample_and_normalise(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    mode = "bilinear" if maps.dim() == 3 else "trilinear"
    up = F.interpolate(maps.unsqueeze(1), size=x.shape[2:], mode=mode, align_corners=False)[:, 0]
    flat = up.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    shape = (-1,) + (1,) * (up.dim() - 1)
    return (up - low.view(shape)) / (high - low).view(shape)


def reference(model, layer, x, classes, gaussian, prefix=None, score=None):
    """(heatmap (B, *x spatial), raw maps (B, *S)) of ReciproCAM, one masked forward per
    position.  `prefix`: a token layer (B, prefix + H*W, D) on a square grid; `score`: the
    target's score of an output (B,) instead of the class probability."""
    maps = []
    for b in range(x.shape[0]):
        sample = x[b : b + 1]
        out = layer_output(model, layer, sample)
        if prefix is None:
            sizes = tuple(out.shape[2:])
        else:
            side = math.isqrt(out.shape[1] - prefix)
            sizes = (side, side)
        values = torch.zeros(sizes, dtype=out.dtype)
        for position in itertools.product(*(range(s) for s in sizes)):
            mask = mask_at(sizes, position, gaussian)

            def hook(_module, _inputs, output, mask=mask):
                if prefix is None:
                    return output * mask  # the same mask for every channel
                patches = output[:, prefix:] * mask.reshape(1, -1, 1)  # row-major patches
                return torch.cat([output[:, :prefix], patches], dim=1)

            handle = layer.register_forward_hook(hook)
            with torch.no_grad():
                output = model(sample)
            handle.remove()
            if score is None:
                values[position] = torch.softmax(output, dim=1)[0, classes[b]]
            else:
                values[position] = score(output)[0]
        maps.append(values)
    maps = torch.relu(torch.stack(maps))
    return upsample_and_normalise(maps, x), maps


def argmax_classes(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[int]:
    with torch.no_grad():
        best = model(x).argmax(dim=1)
    return torch.where(target < 0, best, target).tolist()


def assert_close(got: torch.Tensor, want: torch.Tensor, label: str = "") -> float:
    diff = float((got - want).abs().max())
    assert got.shape == want.shape, label
    assert diff <= TOLERANCE, f"{label}: max abs diff {diff:.2e}"
    return diff


def double(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


def assert_nontrivial(raw: torch.Tensor) -> None:
    """A map whose values barely differ would make the min-max compare rounding noise."""
    spread = raw.flatten(1).amax(1) - raw.flatten(1).amin(1)
    assert bool((spread > 1e-3).all()), f"raw map spread {spread.tolist()}: pick other inputs"


# ------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def resnet():
    return resnet18().model


@pytest.fixture(scope="module")
def video():
    """X3D with its class projection scaled: the random net's logits barely move otherwise
    (probabilities of ~0.2 that differ in the 5th digit)."""
    model = x3d().model
    with torch.no_grad():
        model.blocks[5].proj.weight.mul_(30.0)
    return model


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


IMAGE = (3, 64, 64)
CLIP = (3, 4, 64, 64)


# ------------------------------------------------------------------------- eager vs formula


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize(
    "layer, suffix_only, dtype",
    [
        ("layer4", True, torch.float64),
        ("layer3", True, torch.float64),
        ("layer4.0.conv1", False, torch.float64),  # a skip around it: the whole model
        ("layer3", True, torch.float32),
    ],
)
def test_resnet_matches_the_formula(resnet, layer, suffix_only, dtype, gaussian):
    resnet = resnet if dtype == torch.float32 else double(resnet)
    x, target = make_input((2, *IMAGE), seed=1).to(dtype), torch.tensor([-1, 3])
    explainer = gv.ReciproCAM(resnet, layer, gaussian=gaussian, chunk_size=5)
    got = explainer(x, target).heatmap
    assert explainer.only_through_layer(x, 0) is suffix_only
    module = dict(resnet.named_modules())[layer]
    want, raw = reference(resnet, module, x, argmax_classes(resnet, x, target), gaussian)
    assert_nontrivial(raw)
    assert_close(got, want, f"{layer} {dtype} gaussian={gaussian}")


def test_suffix_only_and_whole_model_paths_agree(resnet, monkeypatch):
    x, target = make_input((3, *IMAGE), seed=2), torch.tensor([0, -1, 7])
    explainer = gv.ReciproCAM(resnet, "layer3", chunk_size=6)
    suffix = explainer(x, target).heatmap
    assert explainer.only_through_layer(x, 0)
    monkeypatch.setattr(explainer, "only_through_layer", lambda *args, **kwargs: False)
    whole = explainer(x, target).heatmap
    assert_close(whole, suffix, "whole model vs suffix only")


@pytest.mark.parametrize("gaussian", [True, False])
def test_x3d_matches_the_formula(video, gaussian):
    video = double(video)
    x, target = make_input((2, *CLIP), seed=3).double(), torch.tensor([-1, 0])
    explainer = gv.ReciproCAM(video, "blocks.4", gaussian=gaussian, chunk_size=7)
    got = explainer(x, target).heatmap
    assert explainer.only_through_layer(x, 0)
    want, raw = reference(
        video, video.blocks[4], x, argmax_classes(video, x, target), gaussian
    )  # blocks.4: (B, 192, 4, 2, 2)
    assert raw.shape == (2, 4, 2, 2)
    assert_nontrivial(raw)
    assert_close(got, want, f"x3d gaussian={gaussian}")


@pytest.mark.parametrize("gaussian", [True, False])
def test_vit_masks_patch_tokens_and_keeps_the_class_token(vit, gaussian):
    vit = double(vit)
    x, target = make_input((2, *VIT_IMAGE), seed=4).double(), torch.tensor([-1, 1])
    explainer = gv.ReciproCAM(
        vit, VIT_LAYER, gaussian=gaussian, chunk_size=5, reshape=gv.TokenGrid()
    )
    got = explainer(x, target).heatmap
    assert explainer.only_through_layer(x, 0)
    layer = dict(vit.named_modules())[VIT_LAYER]
    want, raw = reference(vit, layer, x, argmax_classes(vit, x, target), gaussian, prefix=1)
    assert raw.shape == (2, 4, 4)
    assert_nontrivial(raw)
    assert_close(got, want, f"vit gaussian={gaussian}")


def test_vit_default_layer_gets_its_token_grid(vit):
    """The default layer of a ViT (the last block's ln_1) is a token layer with a skip around
    it: the whole-model path, on the token grid.  In float32 (the default-layer rule probes
    the model with float32 input)."""
    x, target = make_input((2, *VIT_IMAGE), seed=5), torch.tensor([3, -1])
    explainer = gv.ReciproCAM(vit, chunk_size=16)
    got = explainer(x, target).heatmap
    assert explainer.target_layers == ("encoder.layers.encoder_layer_1.ln_1",)
    assert isinstance(explainer.reshape, gv.TokenGrid)
    assert not explainer.only_through_layer(x, 0)
    layer = vit.encoder.layers.encoder_layer_1.ln_1
    want, raw = reference(vit, layer, x, argmax_classes(vit, x, target), True, prefix=1)
    assert_nontrivial(raw)
    assert_close(got, want, "vit default layer")


class TinyRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(8 * 5 * 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def test_another_target_scores_each_copy_with_its_own_score():
    model = TinyRegressor().eval().double()
    x = make_input((2, 3, 10, 10), seed=7).double()
    explainer = gv.ReciproCAM(model, "features", target=gv.RawOutputTarget(), chunk_size=4)
    got = explainer(x).heatmap

    def score(output):
        return output.flatten(1).sum(dim=1)

    want, raw = reference(model, model.features, x, None, True, score=score)
    assert_nontrivial(raw)
    assert_close(got, want, "RawOutputTarget")


@pytest.mark.parametrize("batch_first", [True, False])
def test_mask_tokens_scales_the_patches_and_keeps_the_prefix(batch_first):
    grid = gv.TokenGrid(grid=(2, 3), prefix=2, batch_first=batch_first)
    samples, copies, dim = 2, 3, 4
    tokens = torch.randn(samples * copies, 2 + 6, dim)  # (B * M, N, D), samples repeated
    masks = torch.rand(copies, 2, 3)
    given = tokens if batch_first else tokens.transpose(0, 1)
    got = grid.mask_tokens(given, masks)
    got = got if batch_first else got.transpose(0, 1)
    for b in range(samples * copies):
        m = masks[b % copies].reshape(-1, 1)
        torch.testing.assert_close(got[b, :2], tokens[b, :2], rtol=0, atol=0)
        torch.testing.assert_close(got[b, 2:], tokens[b, 2:] * m)
    # the grid view of the masked tokens is the grid times the mask
    torch.testing.assert_close(
        grid(grid.mask_tokens(given, masks)).unflatten(0, (samples, copies)),
        grid(given).unflatten(0, (samples, copies)) * masks.unsqueeze(1),
    )
    with pytest.raises(gv.LayerError, match="must be"):
        grid.mask_tokens(given, torch.rand(copies, 3, 2))


# ------------------------------------------------------------------------- artifacts


def artifact_matches_eager(explainer, shape, path, classes) -> list[float]:
    example = make_input((2, *shape), seed=100)
    path = gv.export(explainer, example, path, check=False)
    runtime = gradvis_runtime.load(path, threads=1)
    assert runtime.spec.method == "reciprocam"
    assert runtime.spec.options["gaussian"] == explainer.gaussian
    assert runtime.spec.options["chunk_size"] == explainer.chunk_size
    diffs = []
    for batch in (1, 3):
        x = make_input((batch, *shape), seed=batch)  # not the traced example
        target = torch.tensor([-1, classes - 1, 1][:batch])
        want = explainer(x, target)
        got = runtime.run(x.numpy(), target=target.numpy())
        np.testing.assert_allclose(got["logits"], want.logits.numpy(), rtol=1e-4, atol=1e-4)
        heat = torch.from_numpy(got["heatmap"])
        assert bool((want.heatmap.flatten(1).amax(1) > 0).all()), "a zero map proves nothing"
        diffs.append(assert_close(heat, want.heatmap, f"{path.name} b={batch}"))
    return diffs


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_resnet_artifact_matches_eager(resnet, tmp_path, fmt):
    explainer = gv.ReciproCAM(resnet, "layer3", chunk_size=6)  # 16 positions: 3 chunks
    artifact_matches_eager(explainer, IMAGE, tmp_path / f"r.{fmt}", 10)


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_resnet_whole_model_artifact_matches_eager(resnet, tmp_path, fmt):
    explainer = gv.ReciproCAM(resnet, "layer4.0.conv1", gaussian=False, chunk_size=3)
    artifact_matches_eager(explainer, IMAGE, tmp_path / f"r.{fmt}", 10)


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_x3d_artifact_matches_eager(video, tmp_path, fmt):
    explainer = gv.ReciproCAM(video, "blocks.4", gaussian=False, chunk_size=7)
    artifact_matches_eager(explainer, CLIP, tmp_path / f"v.{fmt}", 5)


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_vit_artifact_matches_eager(vit, tmp_path, fmt):
    explainer = gv.ReciproCAM(vit, VIT_LAYER, chunk_size=5, reshape=gv.TokenGrid())
    artifact_matches_eager(explainer, VIT_IMAGE, tmp_path / f"t.{fmt}", 5)


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("chunk_size", [0, -2, 1.5])
def test_chunk_size_must_be_a_positive_int(resnet, chunk_size):
    with pytest.raises(gv.InputError, match="chunk_size must be a positive int"):
        gv.ReciproCAM(resnet, "layer4", chunk_size=chunk_size)


def test_refusals(resnet):
    with pytest.raises(gv.InputError, match="gaussian must be True or False"):
        gv.ReciproCAM(resnet, "layer4", gaussian="yes")
    with pytest.raises(gv.LayerError, match="must be a TokenGrid"):
        gv.ReciproCAM(resnet, "layer4", reshape=lambda t: t)
    explainer = gv.ReciproCAM(resnet, "layer4")
    with pytest.raises(gv.InputError, match="masks one input tensor"):
        explainer([make_input((1, *IMAGE)), make_input((1, *IMAGE))])
