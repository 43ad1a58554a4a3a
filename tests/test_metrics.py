"""gv.metrics against formulas written here (plain loops / numpy / scipy) and, for ROAD,
against pytorch-grad-cam 1.5.7's ROAD classes on the same inputs.

Nothing here calls the metrics' internals to compute an expected value: the references
re-implement each protocol from its definition (the ranking with np.argsort(kind="stable"),
the blur with scipy.ndimage, the trapezoid as a sum, the pointing game's distance with
math.hypot per box, ADCC's combination from the explainer's own outputs).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import resnet18

import gradvis_export as gv
from gradvis_export.errors import InputError

torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

M = gv.metrics


# --------------------------------------------------------------------------- models
def tiny_model(video: bool = False, classes: int = 5, seed: int = 0) -> nn.Module:
    """conv + ReLU + global average pool + linear, seeded, eval."""
    torch.manual_seed(seed)
    conv = nn.Conv3d(3, 6, 3, padding=1) if video else nn.Conv2d(3, 6, 3, padding=1)
    pool = nn.AdaptiveAvgPool3d(1) if video else nn.AdaptiveAvgPool2d(1)
    return nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), nn.Linear(6, classes)).eval()


def small_cnn(seed: int = 0) -> nn.Module:
    """A torchvision-like CNN for 3x32x32 images (conv-BN-ReLU blocks, GAP, linear)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        model[-1].weight.mul_(20)  # confident enough that the imputations move the scores
    return model.eval()


class Recorder(nn.Module):
    """Records every input it is given; logits = a fixed linear map of the flattened input."""

    def __init__(self, positions: int, channels: int = 1, classes: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.weight = torch.randn(classes, channels * positions, generator=gen)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.extend(x.clone())
        return x.flatten(1) @ self.weight.T


def rand(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- references
def ref_saliency(heat: np.ndarray, spatial: int) -> np.ndarray:
    return np.abs(heat).sum(1) if heat.ndim == spatial + 2 else heat


def ref_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian over the last two axes, replicate edges, truncated at 3 sigma (scipy)."""
    assert int(3 * sigma) == int(3 * sigma + 0.5)  # the same radius as int(3 sigma)
    sigmas = (0,) * (x.ndim - 2) + (sigma, sigma)
    return ndimage.gaussian_filter(x.astype(np.float64), sigmas, mode="nearest", truncate=3.0)


def ref_curve(model, x, heat, targets, fractions, baseline, insertion):
    """Per sample: remove the first round(f n) positions of argsort(-map, stable)."""
    x_np = x.numpy()
    scores, removed = [], []
    for b in range(x.shape[0]):
        order = np.argsort(-heat[b].ravel(), kind="stable")
        n = order.size
        row = []
        for f in fractions:
            k = round(f * n)
            chosen = np.zeros(n, bool)
            chosen[order[:k]] = True
            chosen = chosen.reshape(heat[b].shape)[None]  # over all channels
            start, end = (baseline[b], x_np[b]) if insertion else (x_np[b], baseline[b])
            image = np.where(chosen, end, start).astype(np.float32)
            with torch.no_grad():
                logits = model(torch.from_numpy(image)[None]).double()
            row.append(float(torch.softmax(logits, 1)[0, targets[b]]))
            if b == 0:
                removed.append(k / n)
        scores.append(row)
    return np.array(scores), np.array(removed)


def trapezoid(y, xs):
    return sum((xs[i + 1] - xs[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(y) - 1))


# --------------------------------------------------------------------------- saliency
def test_saliency_reduces_a_channel_axis_and_names_the_shapes():
    x = rand(2, 3, 5, 6)
    signed = rand(2, 3, 5, 6, seed=1)
    np.testing.assert_allclose(
        M.saliency(signed, x).numpy(), ref_saliency(signed.numpy(), 2), rtol=1e-6
    )
    plain = rand(2, 5, 6, seed=2)
    assert torch.equal(M.saliency(plain, x), plain)  # no channel axis: as is, signs kept
    clip = rand(2, 3, 4, 5, 6)
    assert M.saliency(rand(2, 4, 5, 6), clip).shape == (2, 4, 5, 6)
    np.testing.assert_allclose(
        M.saliency(rand(2, 3, 4, 5, 6, seed=3), clip).numpy(),
        np.abs(rand(2, 3, 4, 5, 6, seed=3).numpy()).sum(1),
        rtol=1e-6,
    )
    with pytest.raises(InputError, match=r"\(2, 4, 6\).*\(2, 3, 5, 6\)"):
        M.saliency(rand(2, 4, 6), x)
    with pytest.raises(InputError, match=r"\(B,T,H,W\)"):
        M.saliency(rand(2, 5, 6), clip)


# --------------------------------------------------------------------------- deletion / insertion
def test_ranking_ties_and_counts_are_exact():
    """Which positions each step removes: ties by flattened index, round half to even."""
    heat = torch.tensor([[[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 2.0, 5.0]]])  # (1, 2, 4)
    order = [7, 1, 2, 4, 5, 6, 0, 3]  # descending, ties (the 3s, the 2s) in index order
    x = torch.arange(1.0, 9.0).view(1, 1, 2, 4)
    model = Recorder(8)
    fractions = [0, 1 / 16, 3 / 16, 5 / 16, 7 / 16, 1]  # 8 f = 0.5, 1.5, 2.5, 3.5: exact
    curve = M.deletion_auc(
        model, x, heat, 0, fractions=fractions, baseline="zero", return_curves=True
    )
    counts = [0, 0, 2, 2, 4, 8]  # round half to even, as Python's round()
    assert len(model.seen) == len(fractions)
    for seen, k in zip(model.seen, counts):
        expected = x[0, 0].flatten().clone()
        expected[order[:k]] = 0
        assert torch.equal(seen[0].flatten(), expected), (k, seen)
    np.testing.assert_allclose(curve.fractions.numpy(), np.array(counts) / 8, rtol=1e-6)
    # insertion reveals the same positions on the baseline
    model.seen.clear()
    M.insertion_auc(model, x, heat, 0, fractions=fractions, baseline="zero")
    for seen, k in zip(model.seen, counts):
        expected = torch.zeros(8)
        expected[order[:k]] = x[0, 0].flatten()[order[:k]]
        assert torch.equal(seen[0].flatten(), expected)


@pytest.mark.parametrize("baseline", ["zero", "blur", "mean", "tensor"])
def test_deletion_and_insertion_match_the_loop(baseline):
    """Batch of 2 with different targets, a signed 3-channel map, every baseline."""
    model = tiny_model()
    x = rand(2, 3, 12, 12)
    heat = rand(2, 3, 12, 12, seed=4)  # signed, channel axis
    targets = [3, 1]
    sal = ref_saliency(heat.numpy(), 2)
    if baseline == "zero":
        base = np.zeros(x.shape)
    elif baseline == "blur":
        base = ref_blur(x.numpy(), 2.0)
    elif baseline == "mean":
        base = np.broadcast_to(x.numpy().mean(axis=(2, 3), keepdims=True), x.shape)
    else:
        base = np.broadcast_to(np.array([0.5, -1.0, 2.0]).reshape(1, 3, 1, 1), x.shape)
    given = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1) if baseline == "tensor" else baseline
    fractions = np.linspace(0, 1, 9)
    for insertion, fn in ((False, M.deletion_auc), (True, M.insertion_auc)):
        scores, removed = ref_curve(model, x, sal, targets, fractions, base, insertion)
        out = fn(
            model, x, heat, torch.tensor(targets), steps=8, baseline=given, sigma=2.0,
            batch_size=5, return_curves=True,
        )  # fmt: skip
        np.testing.assert_allclose(out.scores.numpy(), scores, atol=2e-6)
        expected = [trapezoid(s, removed) for s in scores]
        np.testing.assert_allclose(out.auc.numpy(), expected, atol=2e-6)


def test_blur_is_a_separable_gaussian_with_replicated_edges():
    x = rand(2, 3, 4, 20, 17)  # video: every frame blurred on its own
    for sigma in (1.0, 2.0, 5.0):
        np.testing.assert_allclose(
            M.blurred(x, sigma).numpy(), ref_blur(x.numpy(), sigma), atol=2e-6
        )


def test_trapezoid_spacing_fraction_versus_uniform():
    """A log-spaced schedule (quality.py's): 'fraction' integrates over the removed fraction,
    'uniform' gives each step the width 1/(S-1) (np.trapezoid(dx=1/(S-1)))."""
    model = tiny_model()
    x = rand(1, 3, 16, 16)
    heat = rand(1, 16, 16, seed=5).abs()
    fractions = [0.0] + [2.0**-k for k in range(8, 0, -1)] + [1.0]
    kw = dict(fractions=fractions, baseline="blur", sigma=2.0, return_curves=True)
    frac = M.deletion_auc(model, x, heat, 2, spacing="fraction", **kw)
    unif = M.deletion_auc(model, x, heat, 2, spacing="uniform", **kw)
    scores, removed = ref_curve(
        model, x, heat.numpy(), [2], fractions, ref_blur(x.numpy(), 2.0), insertion=False
    )
    np.testing.assert_allclose(frac.scores.numpy(), scores, atol=2e-6)
    np.testing.assert_allclose(frac.auc.numpy(), [trapezoid(scores[0], removed)], atol=2e-6)
    uniform = sum((scores[0][i] + scores[0][i + 1]) / 2 for i in range(9)) / 9
    np.testing.assert_allclose(unif.auc.numpy(), [uniform], atol=2e-6)
    assert abs(float(frac.auc[0]) - float(unif.auc[0])) > 1e-3  # the two really differ


def test_video_deletion_and_insertion():
    """(B,C,T,H,W) clips with (B,T,H,W) maps: positions ranked over T x H x W."""
    model = tiny_model(video=True)
    x = rand(2, 3, 3, 8, 8)
    heat = rand(2, 3, 8, 8, seed=6)
    fractions = [0, 0.01, 0.1, 0.3, 0.7, 1]
    base = ref_blur(x.numpy(), 1.0)
    for insertion, fn in ((False, M.deletion_auc), (True, M.insertion_auc)):
        scores, removed = ref_curve(model, x, heat.numpy(), [4, 0], fractions, base, insertion)
        out = fn(
            model, x, heat, [4, 0], fractions=fractions, baseline="blur", sigma=1.0,
            return_curves=True,
        )  # fmt: skip
        np.testing.assert_allclose(out.scores.numpy(), scores, atol=2e-6)
        np.testing.assert_allclose(
            out.auc.numpy(), [trapezoid(s, removed) for s in scores], atol=2e-6
        )


def test_logit_score_and_default_schedule():
    model = tiny_model()
    x = rand(1, 3, 6, 6)
    heat = rand(1, 6, 6, seed=7)
    out = M.deletion_auc(model, x, heat, 1, score="logit", steps=4, return_curves=True)
    with torch.no_grad():
        first = model(x)[0, 1]
    assert out.fractions.tolist() == pytest.approx([0, 9 / 36, 18 / 36, 27 / 36, 1])
    assert float(out.scores[0, 0]) == pytest.approx(float(first), abs=1e-6)
    assert M.deletion_auc(model, x, heat, 1).shape == (1,)  # 100 steps by default


# --------------------------------------------------------------------------- pointing game
def ref_pointing(heat: np.ndarray, boxes: np.ndarray, tol: float) -> float:
    """One frame (H, W) and its boxes (N, 4): distance of the max's centre to each box."""
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    cx, cy = col + 0.5, row + 0.5
    for x1, y1, x2, y2 in boxes:
        if np.isnan([x1, y1, x2, y2]).any():
            continue
        if math.hypot(max(x1 - cx, cx - x2, 0), max(y1 - cy, cy - y2, 0)) <= tol:
            return 1.0
    return 0.0


def test_pointing_game_tolerance_edge_exactly():
    heat = torch.zeros(1, 20, 30)
    heat[0, 12, 9] = 1.0  # centre (9.5, 12.5)
    box = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])  # corner (0.5, 0.5): dx 9, dy 12 -> 15
    assert M.pointing_game(heat, box, tolerance=15).tolist() == [1.0]
    assert M.pointing_game(heat, box, tolerance=14.999).tolist() == [0.0]
    mask = torch.zeros(1, 20, 30, dtype=torch.bool)
    mask[0, 0, 0] = True  # pixel centre (0.5, 0.5): the same distance
    assert M.pointing_game(heat, mask=mask, tolerance=15).tolist() == [1.0]
    assert M.pointing_game(heat, mask=mask, tolerance=14.999).tolist() == [0.0]
    assert M.pointing_game(heat, mask=mask).tolist() == [1.0]  # default: Zhang et al.'s 15
    inside = torch.tensor([[[9.0, 12.0, 10.0, 13.0]]])  # holds the max's centre
    assert M.pointing_game(heat, inside, tolerance=0).tolist() == [1.0]


def test_pointing_game_batch_video_padding_and_signed_maps():
    gen = np.random.default_rng(0)
    heat = torch.from_numpy(gen.random((3, 4, 16, 20)))  # video (B, T, H, W)
    boxes = gen.uniform(0, 16, (3, 4, 2, 4))
    boxes[..., 2:] = boxes[..., :2] + gen.uniform(0, 5, (3, 4, 2, 2))
    boxes[0, 1, 1] = np.nan  # padding
    for tol in (0.0, 2.0, 4.5):
        expected = [
            np.mean([ref_pointing(heat[b, t].numpy(), boxes[b, t], tol) for t in range(4)])
            for b in range(3)
        ]
        got = M.pointing_game(heat, torch.from_numpy(boxes), tolerance=tol)
        np.testing.assert_allclose(got.numpy(), expected)
    # an image batch with a signed 3-channel map: the max of sum |.|
    signed = rand(2, 3, 10, 10, seed=8)
    img_boxes = torch.tensor([[[2.0, 2.0, 4.0, 5.0]], [[0.0, 0.0, 10.0, 1.0]]])
    sal = ref_saliency(signed.numpy(), 2)
    expected = [ref_pointing(sal[b], img_boxes[b].numpy(), 3.0) for b in range(2)]
    np.testing.assert_allclose(M.pointing_game(signed, img_boxes, tolerance=3).numpy(), expected)


# --------------------------------------------------------------------------- energy in box
def test_energy_in_box_formula():
    gen = np.random.default_rng(1)
    heat = gen.random((2, 3, 12, 14)) - 0.2  # video, some negative values
    boxes = np.array([[[[1.0, 2.0, 6.5, 7.0]]] * 3, [[[0.0, 0.0, 14.0, 12.0]]] * 3])
    expected = []
    for b in range(2):
        mass = np.clip(heat[b], 0, None)
        inside = 0.0
        for t in range(3):
            for i in range(12):
                for j in range(14):
                    x1, y1, x2, y2 = boxes[b, t, 0]
                    if x1 <= j + 0.5 <= x2 and y1 <= i + 0.5 <= y2:
                        inside += mass[t, i, j]
        expected.append(inside / mass.sum())
    got = M.energy_in_box(torch.from_numpy(heat), torch.from_numpy(boxes))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert float(got[1]) == pytest.approx(1.0)  # a box over the whole frame
    # mask form, image, and an all-zero map
    image = torch.from_numpy(heat[:, 0])
    mask = torch.from_numpy(gen.random((2, 12, 14)) > 0.5)
    pos = image.clamp(min=0).numpy()
    expected = [pos[b][mask[b].numpy()].sum() / pos[b].sum() for b in range(2)]
    np.testing.assert_allclose(M.energy_in_box(image, mask=mask).numpy(), expected, rtol=1e-12)
    assert M.energy_in_box(torch.zeros(1, 5, 5), mask=torch.ones(1, 5, 5)).tolist() == [0.0]


# --------------------------------------------------------------------------- ROAD vs pgc
def road_inputs():
    x = rand(2, 3, 32, 32, seed=9)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    cams = np.stack(
        [
            np.exp(-((yy - 10) ** 2 + (xx - 20) ** 2) / 50) + 1e-3 * xx + 1e-4 * yy,
            np.sin(xx / 5) * np.cos(yy / 7) + 1e-3 * (yy * 32 + xx) / 1024,
        ]
    )
    cams = (cams - cams.min(axis=(1, 2), keepdims=True)) / np.ptp(cams, axis=(1, 2))[:, None, None]
    return x, cams.astype(np.float32)


@pytest.mark.parametrize("score", ["softmax", "logit"])
def test_road_matches_pytorch_grad_cam(score):
    from pytorch_grad_cam.metrics import road as pgc_road
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
    )

    model = small_cnn()
    x, cams = road_inputs()
    classes = [7, 2]
    wrap = ClassifierOutputSoftmaxTarget if score == "softmax" else ClassifierOutputTarget
    targets = [wrap(c) for c in classes]
    heat = torch.from_numpy(cams)
    cases = [
        (pgc_road.ROADMostRelevantFirst(80), dict(order="most", percentiles=[80])),
        (pgc_road.ROADLeastRelevantFirst(20), dict(order="least", percentiles=[20])),
        (pgc_road.ROADMostRelevantFirstAverage(), dict(order="most")),
        (pgc_road.ROADLeastRelevantFirstAverage(), dict(order="least")),
    ]
    for seed, (metric, kw) in enumerate(cases):
        torch.manual_seed(seed)  # the same noise: both draw from the global generator
        expected = metric(x, cams, targets, model)
        torch.manual_seed(seed)
        got = M.road(model, x, heat, classes, score=score, **kw)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    # the imputed images themselves, removal by np.percentile as pytorch-grad-cam documents
    torch.manual_seed(11)
    _, images = pgc_road.ROADMostRelevantFirst(60)(
        x, cams, targets, model, return_visualization=True
    )
    removed = torch.from_numpy(np.stack([cam >= np.percentile(cam, 60) for cam in cams]))
    torch.manual_seed(11)
    np.testing.assert_allclose(M.noisy_linear_impute(x, removed), images, atol=1e-6)
    torch.manual_seed(10)
    expected = pgc_road.ROADCombined()(x, cams, targets, model)
    gen = torch.Generator().manual_seed(10)  # an explicit generator gives the same stream
    got = M.road_combined(model, x, heat, torch.tensor(classes), score=score, generator=gen)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_road_without_noise_matches_pytorch_grad_cam(monkeypatch):
    """Independent of the noise's draw order: both noiseless."""
    from pytorch_grad_cam.metrics import road as pgc_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    class Noiseless(pgc_road.NoisyLinearImputer):
        def __init__(self, *args, **kwargs):
            super().__init__(noise=0.0)

    monkeypatch.setattr(pgc_road, "NoisyLinearImputer", Noiseless)
    model = small_cnn(seed=1)
    x, cams = road_inputs()
    cams = cams[::-1].copy()  # the other map for each sample
    targets = [ClassifierOutputSoftmaxTarget(c) for c in (0, 9)]
    expected = pgc_road.ROADCombined(percentiles=[5, 25, 50, 75, 95])(x, cams, targets, model)
    got = M.road_combined(
        model, x, torch.from_numpy(cams), [0, 9], percentiles=[5, 25, 50, 75, 95], noise=0
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    result = M.road(model, x, torch.from_numpy(cams), [0, 9], percentiles=[30], noise=0,
                    return_curves=True)  # fmt: skip
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[[0, 1], [0, 9]]
    np.testing.assert_allclose(result.clean.numpy(), clean.numpy(), atol=1e-7)
    np.testing.assert_allclose(
        result.score.numpy(), (result.perturbed[:, 0] - clean).numpy(), atol=1e-7
    )


def test_linear_imputation_is_the_neighbour_mean():
    """Each removed pixel = the weighted mean of its in-image neighbours (1/6 direct, 1/12
    diagonal, renormalised at the border), removed ones included; all removed -> the mean."""
    x = rand(1, 2, 7, 9, seed=11)
    removed = torch.from_numpy(np.random.default_rng(2).random((1, 7, 9)) > 0.4)
    removed[0, 0, 0] = True  # a corner
    out = M.linear_impute(x, removed).double().numpy()
    weights = {(dy, dx): (1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1)
               for dx in (-1, 0, 1) if dy or dx}  # fmt: skip
    for c in range(2):
        for i in range(7):
            for j in range(9):
                if not removed[0, i, j]:
                    assert out[0, c, i, j] == pytest.approx(float(x[0, c, i, j]))
                    continue
                num = den = 0.0
                for (dy, dx), w in weights.items():
                    if 0 <= i + dy < 7 and 0 <= j + dx < 9:
                        num += w * out[0, c, i + dy, j + dx]
                        den += w
                assert out[0, c, i, j] == pytest.approx(num / den, abs=1e-5)
    everything = M.linear_impute(x, torch.ones(1, 7, 9, dtype=torch.bool))
    np.testing.assert_allclose(
        everything.numpy(), np.broadcast_to(x.numpy().mean(axis=(2, 3), keepdims=True), x.shape),
        atol=1e-6,
    )  # fmt: skip


# --------------------------------------------------------------------------- ADCC
def test_adcc_matches_the_formula_with_gradcam():
    spec = resnet18()
    explainer = gv.GradCAM(spec.model, spec.target_layer)
    x = rand(2, 3, 64, 64, seed=12)
    with torch.no_grad():
        argmax = spec.model(x).argmax(1)
    for target in (None, torch.tensor([3, 8])):
        classes = argmax if target is None else target
        first = explainer(x, classes)
        e1 = first.heatmap.double().numpy()
        second = explainer(x * first.heatmap[:, None], classes)
        e2 = second.heatmap.double().numpy()
        expected = {k: [] for k in ("adcc", "average_drop", "coherency", "complexity")}
        for b in range(2):
            c = int(classes[b])
            y = float(torch.softmax(first.logits.double(), 1)[b, c])
            o = float(torch.softmax(second.logits.double(), 1)[b, c])
            drop = max(0.0, y - o) / y
            r = np.corrcoef(e1[b].ravel(), e2[b].ravel())[0, 1]
            coherency = (1 + r) / 2
            complexity = e1[b].mean()
            expected["adcc"].append(3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - drop)))
            expected["average_drop"].append(drop)
            expected["coherency"].append(coherency)
            expected["complexity"].append(complexity)
        got = M.adcc(explainer, x, target)
        assert got.target.tolist() == classes.tolist()
        for key, values in expected.items():
            np.testing.assert_allclose(getattr(got, key).numpy(), values, atol=1e-5, err_msg=key)


class FixedMap(nn.Module):
    """An explainer stand-in whose map is a constant `value` (the degenerate cases)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.model = tiny_model()
        self.value = value

    def model_input(self, x):
        return x

    def forward(self, x, target):
        return gv.ExplainerOutput(self.model(x), torch.full((x.shape[0], *x.shape[2:]), self.value))


def test_adcc_degenerate_maps():
    x = rand(2, 3, 8, 8, seed=13)
    half = M.adcc(FixedMap(0.5), x)
    assert half.coherency.tolist() == [0.5, 0.5]  # constant map: r := 0
    assert half.complexity.tolist() == [0.5, 0.5]
    with torch.no_grad():
        logits = FixedMap(0.5).model(x)
        y = torch.softmax(logits, 1).max(1).values
        o = torch.softmax(FixedMap(0.5).model(x * 0.5), 1)[[0, 1], logits.argmax(1)]
    drop = ((y - o).clamp(min=0) / y).double().numpy()
    np.testing.assert_allclose(half.average_drop.numpy(), drop, atol=1e-6)
    np.testing.assert_allclose(
        half.adcc.numpy(), 3 / (1 / 0.5 + 1 / 0.5 + 1 / (1 - drop)), atol=1e-6
    )
    assert M.adcc(FixedMap(1.0), x).adcc.tolist() == [0.0, 0.0]  # complexity 1
    with pytest.raises(InputError, match=r"\[0, 1\].*normalize=True"):
        M.adcc(FixedMap(2.0), x)


# --------------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    model = tiny_model()
    x = rand(1, 3, 8, 8)
    heat = rand(1, 8, 8)
    with pytest.raises(InputError, match=r"\(1, 8, 7\).*\(1, 3, 8, 8\)"):
        M.deletion_auc(model, x, rand(1, 8, 7), 0)
    with pytest.raises(InputError, match="baseline='noise'"):
        M.insertion_auc(model, x, heat, 0, baseline="noise")
    with pytest.raises(InputError, match="from 0 to 1|starts at 0"):
        M.deletion_auc(model, x, heat, 0, fractions=[0.1, 0.5, 1])
    with pytest.raises(InputError, match="spacing"):
        M.deletion_auc(model, x, heat, 0, spacing="log")
    with pytest.raises(InputError, match="out of range"):
        M.deletion_auc(model, x, heat, 5, steps=2)
    with pytest.raises(InputError, match="tolerance"):
        M.pointing_game(heat, torch.tensor([[[0.0, 0, 1, 1]]]), tolerance=-1)
    with pytest.raises(InputError, match="either boxes"):
        M.pointing_game(heat)
    with pytest.raises(InputError, match="x2 < x1"):
        M.energy_in_box(heat, torch.tensor([[[3.0, 0, 1, 1]]]))
    with pytest.raises(InputError, match=r"mask has shape \(1, 8, 9\)"):
        M.energy_in_box(heat, mask=torch.ones(1, 8, 9))
    with pytest.raises(InputError, match="video.*deletion_auc"):
        M.road(tiny_model(video=True), rand(1, 3, 2, 8, 8), rand(1, 2, 8, 8), 0)
    with pytest.raises(InputError, match="order="):
        M.road(model, x, heat, 0, order="middle")
