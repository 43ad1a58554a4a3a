"""CAM methods on ViT layers (tokens -> grid) vs pytorch-grad-cam with its reshape_transform,
and their exports vs eager.

Patch sizes are odd (7, 15): the bilinear upsampling then puts every grid value exactly on an
output pixel and never leaves the grid's [min, max], so pytorch-grad-cam's min-max before the
resize equals ours after it (see test_cam_family).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pytorch_grad_cam import GradCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vit_models import VIT_GRID as GRID
from vit_models import VIT_LAYER as LAYER
from vit_models import tiny_vit

import gradvis_export as gv

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


def tokens_to_grid(t: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape_transform (class token dropped)."""
    grid = t[:, 1:].reshape(t.shape[0], GRID, GRID, t.shape[2])
    return grid.permute(0, 3, 1, 2)


def make_input(batch: int, seed: int) -> torch.Tensor:
    return torch.randn((batch, 3, 28, 28), generator=torch.Generator().manual_seed(seed))


# (not HiResCAM: sum_k G_k A_k of a layer feeding a LayerNorm cancels to rounding noise)
@pytest.mark.parametrize(
    "ours,theirs", [(gv.GradCAM, GradCAM), (gv.LayerCAM, LayerCAM), (gv.XGradCAM, XGradCAM)]
)
def test_vit_layer_matches_pytorch_grad_cam(vit, ours, theirs):
    x, classes = make_input(3, seed=1), [1, 2, 4]
    got = ours(vit, LAYER, reshape=gv.TokenGrid())(x, torch.tensor(classes)).heatmap
    layer = vit.encoder.layers.encoder_layer_0
    with theirs(model=vit, target_layers=[layer], reshape_transform=tokens_to_grid) as cam:
        want = cam(x, [ClassifierOutputTarget(c) for c in classes])
    assert float(want.max()) > 0.5 and float(want.std()) > 0.01  # a non-trivial map
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_open_clip_tower_layer(vit):
    from gradvis_export.apps.clip import TINY_CLIP_CONFIG, build_clip

    vision = {**TINY_CLIP_CONFIG["vision_cfg"], "image_size": 60, "patch_size": 15}
    visual = build_clip({**TINY_CLIP_CONFIG, "vision_cfg": vision}).visual
    x = torch.randn((2, 3, 60, 60), generator=torch.Generator().manual_seed(2))
    reference = torch.randn((2, 32), generator=torch.Generator().manual_seed(3))
    layer = visual.transformer.resblocks[-2]
    target = gv.EmbeddingSimilarityTarget()
    got = gv.GradCAM(visual, layer, reshape=gv.TokenGrid(), target=target)(x, reference).heatmap

    class Similarity:  # pytorch-grad-cam target: cosine with the reference
        def __init__(self, ref):
            self.ref = ref

        def __call__(self, out):
            return torch.nn.functional.cosine_similarity(out, self.ref, dim=0)

    with GradCAM(model=visual, target_layers=[layer], reshape_transform=tokens_to_grid) as cam:
        want = cam(x, [Similarity(r) for r in reference])
    assert float(want.max()) > 0.5 and float(want.std()) > 0.01  # a non-trivial map
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def run(path, fmt, x, target):
    if fmt == "onnx":
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x.numpy(), "target": target.numpy()})
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return [o.numpy() for o in module(x, target)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_vit_gradcam_export(vit, tmp_path, fmt):
    explainer = gv.GradCAM(vit, LAYER, reshape=gv.TokenGrid())
    path = gv.export(explainer, make_input(2, seed=4), tmp_path / f"vit.{fmt[:4]}", format=fmt)
    for batch in (1, 3):
        x = make_input(batch, seed=10 + batch)
        target = torch.arange(batch) % 5
        want = explainer(x, target)
        got = run(path, fmt, x, target)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


def test_token_errors(vit):
    with pytest.raises(gv.LayerError, match="reshape=gradvis_export.core.tokens.TokenGrid"):
        gv.GradCAM(vit, LAYER)(make_input(1, seed=5))
    with pytest.raises(gv.LayerError, match="not a square grid"):
        gv.GradCAM(vit, LAYER, reshape=gv.TokenGrid(prefix=2))(make_input(1, seed=5))
    with pytest.raises(gv.LayerError, match="not a 3x3 grid"):
        gv.GradCAM(vit, LAYER, reshape=gv.TokenGrid(grid=(3, 3)))(make_input(1, seed=5))
    grid = gv.TokenGrid(grid=(2, 3), batch_first=False)
    tokens = torch.arange(7 * 2 * 4.0).reshape(7, 2, 4)  # (L, B, D)
    torch.testing.assert_close(grid(tokens)[1, 3], tokens[1:, 1, 3].reshape(2, 3))
