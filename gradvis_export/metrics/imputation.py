"""ROAD: RemOve And Debias, with the noisy linear imputation.

Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022.  Removed pixels are not set to a constant (which leaks the
removed shape to the model) but imputed from their neighbours: each removed pixel takes the
weighted mean of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonals;
at the border only the neighbours inside the image, their weights renormalised), removed
neighbours included, i.e. a sparse linear system in the removed pixels, solved per channel;
then Gaussian noise of standard deviation `noise` (absolute, 0.01) is added to the imputed
pixels.

The protocol, as pytorch-grad-cam 1.5.7 (`pytorch_grad_cam.metrics.road`) computes it, which
the tests check this module against:

- percentile p, most relevant first ("most"): the pixels whose map value is >= the p-th
  percentile of the sample's map (linear interpolation, numpy's default) are removed, so
  p = 90 removes the top 10 % and p = 10 the top 90 %;
- least relevant first ("least"): the pixels whose negated map is >= the p-th percentile of
  the negated map, i.e. the least relevant (100 - p) %;
- the result per percentile is the target's score on the imputed input minus its score on
  x (negative: the score dropped); `road` averages that over the percentiles
  (ROADMostRelevantFirstAverage / ROADLeastRelevantFirstAverage) and `road_combined` is
  (least - most) / 2 (ROADCombined; higher = a more faithful map).

The score is the target's softmax probability by default (pytorch-grad-cam: whatever target
callable it is given, ClassifierOutputSoftmaxTarget for this; `score="logit"` is its
ClassifierOutputTarget).  Images only: the imputation is defined on the pixel grid of one
image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gradvis_export.errors import InputError
from gradvis_export.metrics.saliency import check_model_input, saliency
from gradvis_export.metrics.scoring import (
    ClassIndex,
    Score,
    check_batch_size,
    check_score,
    class_indices,
    target_scores,
)

Order = Literal["most", "least"]
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

#: the imputation's neighbour weights: the 4 direct neighbours, the 4 diagonal ones
DIRECT, DIAGONAL = 1 / 6, 1 / 12


@dataclass(frozen=True)
class RoadResult:
    """ROAD per sample.

    score: (B,) mean over the percentiles of (perturbed - clean); percentiles: (P,);
    perturbed: (B, P) the target's score on each imputed input; clean: (B,) on x.
    """

    score: torch.Tensor
    percentiles: torch.Tensor
    perturbed: torch.Tensor
    clean: torch.Tensor


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def removed_pixels(sal: torch.Tensor, percentile: float, order: Order) -> torch.Tensor:
    """(B, H, W) bool: the pixels ROAD removes at `percentile` (see the module docstring)."""
    values = sal.to(_work_dtype(sal.device)).flatten(1)
    if order == "least":
        values = -values
    threshold = torch.quantile(values, percentile / 100, dim=1, keepdim=True)
    return (values >= threshold).view(sal.shape)


def _neighbour_sum(z: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> the weighted sum of each pixel's 8 neighbours inside the image
    (`NEIGHBOUR_WEIGHTS`; shifted slices of the zero-padded grid, faster than a float64 conv)."""
    p = F.pad(z, (1, 1, 1, 1))
    diagonal = p[:, :-2, :-2] + p[:, :-2, 2:] + p[:, 2:, :-2] + p[:, 2:, 2:]
    direct = p[:, 1:-1, :-2] + p[:, 1:-1, 2:] + p[:, :-2, 1:-1] + p[:, 2:, 1:-1]
    return diagonal * DIAGONAL + direct * DIRECT


def _conjugate_gradients(
    unknown: torch.Tensor, rhs: torch.Tensor, z: torch.Tensor, tol: float, max_iter: int
) -> torch.Tensor:
    """Solve s_i z_i - sum_{unknown j} w_ij z_j = rhs_i on the unknown pixels of each system
    (N, H, W) from the start z: Jacobi-preconditioned CG, to |r| <= tol * |rhs| per system."""
    weight_sum = _neighbour_sum(torch.ones_like(rhs[:1]))

    def apply(v: torch.Tensor) -> torch.Tensor:
        return unknown * (weight_sum * v - _neighbour_sum(unknown * v))

    r = rhs - apply(z)
    y = r / weight_sum
    p = y
    ry = (r * y).sum(dim=(1, 2), keepdim=True)
    scale = rhs.flatten(1).norm(dim=1).clamp(min=1e-300)
    for i in range(max_iter):
        if i % 16 == 0 and bool((r.flatten(1).norm(dim=1) <= tol * scale).all()):
            break
        ap = apply(p)
        pap = (p * ap).sum(dim=(1, 2), keepdim=True)
        alpha = torch.where(pap > 0, ry / torch.where(pap > 0, pap, 1), 0)
        z = z + alpha * p
        r = r - alpha * ap
        y = r / weight_sum
        ry_next = (r * y).sum(dim=(1, 2), keepdim=True)
        beta = torch.where(ry > 0, ry_next / torch.where(ry > 0, ry, 1), 0)
        p = y + beta * p
        ry = ry_next
    return z


def _harmonic(values: torch.Tensor, unknown: torch.Tensor, tol: float) -> torch.Tensor:
    """(N, H, W) solution of the imputation system on the `unknown` (1.0) pixels (0 elsewhere),
    `values` holding the known pixels.  CG needs about the removed region's width in
    iterations (~650 for a 200 px wide hole)."""
    h, w = values.shape[1:]
    rhs = unknown * _neighbour_sum((1 - unknown) * values)
    start = rhs / _neighbour_sum(torch.ones_like(values[:1]))
    return _conjugate_gradients(unknown, rhs, start, tol, 10 * (h + w) + h * w)


def linear_impute(x: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-10) -> torch.Tensor:
    """x (B,C,H,W) with the `removed` (B,H,W) pixels replaced by the noiseless linear
    imputation: each removed pixel the weighted mean of its in-image neighbours.

    The system (for removed i: s_i z_i - sum_{removed j} w_ij z_j = sum_{kept j} w_ij x_j,
    s_i the sum of i's in-image weights) is symmetric positive definite when a pixel is kept,
    and solved by Jacobi-preconditioned conjugate gradients in float64 to a relative residual of `tol` per channel.  A sample with every pixel removed has
    no data to impute from (the system is singular); its pixels become its channel means
    (pytorch-grad-cam's sparse solver returns an arbitrary solution there).
    """
    work = _work_dtype(x.device)
    b, c, h, w = x.shape
    unknown = removed.to(work).view(b, 1, h, w).expand(b, c, h, w).reshape(b * c, h, w)
    values = x.detach().to(work).reshape(b * c, h, w)
    z = _harmonic(values * (1 - unknown), unknown, tol).view(b, c, h, w)
    everything = removed.flatten(1).all(dim=1)
    if bool(everything.any()):
        means = x.detach().to(work).mean(dim=(2, 3), keepdim=True).expand(b, c, h, w)
        z = torch.where(everything.view(b, 1, 1, 1), means, z)
    return torch.where(removed[:, None], z.to(x.dtype), x.detach())


def noisy_linear_impute(
    x: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation of the `removed` (B,H,W) pixels of x (B,C,H,W).

    The noise is drawn sample by sample (torch.randn on x's device, from `generator` or the
    global generator), for sample b a (C, N_b) draw, N_b the removed pixels in row-major
    order — the draw pytorch-grad-cam 1.5.7 makes with SciPy's spsolve (whose solution is
    column-major, so its randn_like fills channel by channel): seeding both alike gives the
    same noise.
    """
    out = linear_impute(x, removed)
    if noise == 0:
        return out
    for i in range(x.shape[0]):
        where = removed[i].flatten().nonzero()[:, 0]
        draw = torch.randn(
            (x.shape[1], where.numel()), generator=generator, device=x.device, dtype=x.dtype
        )
        flat = out[i].reshape(x.shape[1], -1)
        flat[:, where] += noise * draw
    return out


def _check(x: torch.Tensor, percentiles: Sequence[float], order: str) -> list[float]:
    x = check_model_input(x)
    if x.dim() == 5:
        raise InputError(
            f"x has shape {tuple(x.shape)} (video); ROAD's linear imputation is defined on the "
            "pixel grid of one image (B,C,H,W): score video with deletion_auc / insertion_auc, "
            "or run ROAD on an image model's frames"
        )
    if order not in ("most", "least"):
        raise InputError(
            f"order={order!r}; choose 'most' (remove the most relevant first) or 'least'"
        )
    try:
        values = [float(p) for p in percentiles]
    except (TypeError, ValueError) as error:
        raise InputError(f"percentiles={percentiles!r}; pass numbers in [0, 100]") from error
    if not values or not all(0 <= p <= 100 for p in values):
        raise InputError(f"percentiles={percentiles!r}; pass one or more numbers in [0, 100]")
    return values


def road(
    model: nn.Module | Callable,
    x: torch.Tensor,
    heatmap: torch.Tensor,
    target: ClassIndex,
    *,
    percentiles: Sequence[float] = PERCENTILES,
    order: Order = "most",
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    score: Score = "softmax",
    batch_size: int = 16,
    return_curves: bool = False,
) -> torch.Tensor | RoadResult:
    """ROAD (Rong et al., ICML 2022) as pytorch-grad-cam's ROADMostRelevantFirstAverage
    (order="most") or ROADLeastRelevantFirstAverage (order="least"): per sample (B,), the mean
    over `percentiles` of the target's score on the noisy-linear-imputed input minus its score
    on x.  "most": a faithful map makes it strongly negative; "least": close to 0.

    x: (B,C,H,W) images (video is refused); heatmap: (B,H,W) or with a channel axis;
    target: an int or (B,) classes; score: "softmax" probability or "logit".  The imputations
    are made percentile by percentile, sample by sample (the noise's draw order); the model
    runs under torch.no_grad on `batch_size` inputs at a time.  return_curves=True gives the
    `RoadResult` with the score at each percentile.
    """
    values = _check(x, percentiles, order)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise InputError(f"noise={noise!r}; the imputation noise's standard deviation is >= 0")
    sal = saliency(heatmap, x)
    check_score(score)
    batch_size = check_batch_size(batch_size)
    classes = class_indices(target, x.shape[0], x.device)
    images = torch.cat(
        [
            noisy_linear_impute(x, removed_pixels(sal, p, order), noise=noise, generator=generator)
            for p in values
        ]
    )  # (P * B, C, H, W), percentile-major
    x = x.detach()
    clean = target_scores(model, x.shape[0], lambda i: x[i], classes, score, batch_size)
    repeated = classes.repeat(len(values))
    perturbed = target_scores(model, len(images), lambda i: images[i], repeated, score, batch_size)
    perturbed = perturbed.view(len(values), -1).T  # (B, P)
    result = RoadResult(
        score=(perturbed - clean[:, None]).mean(dim=1),
        percentiles=torch.tensor(values, dtype=torch.float64),
        perturbed=perturbed,
        clean=clean,
    )
    return result if return_curves else result.score


def road_combined(
    model: nn.Module | Callable,
    x: torch.Tensor,
    heatmap: torch.Tensor,
    target: ClassIndex,
    *,
    percentiles: Sequence[float] = PERCENTILES,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    score: Score = "softmax",
    batch_size: int = 16,
) -> torch.Tensor:
    """pytorch-grad-cam's ROADCombined: (road(order="least") - road(order="most")) / 2 per
    sample (B,); higher = a more faithful map.  The least-relevant-first imputations are drawn
    first (its noise order)."""
    options = dict(
        percentiles=percentiles, noise=noise, generator=generator, score=score,
        batch_size=batch_size,
    )  # fmt: skip
    least = road(model, x, heatmap, target, order="least", **options)
    most = road(model, x, heatmap, target, order="most", **options)
    return (least - most) / 2
