"""Deletion and insertion (RISE's causal metrics): the class score as the most salient
positions are removed from the input, or revealed on a baseline.

Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018, section 4.1.  Deletion replaces the most salient positions first by the baseline
(RISE: zeros); insertion starts from the baseline (RISE: a blurred copy of the image) and
reveals the most salient positions first.  The score is the target class's softmax
probability; the AUC is the trapezoid rule over the removed fraction in [0, 1].  A good map
gives a low deletion AUC (the score falls as soon as the evidence goes) and a high insertion
AUC.
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

Baseline = Literal["blur", "zero", "mean"] | torch.Tensor
BASELINES = ("blur", "zero", "mean")
Spacing = Literal["fraction", "uniform"]


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve per sample.

    auc: (B,) the area under `scores`; fractions: (S,) the removed (revealed) share of the
    positions at each step, as actually removed (count / positions); scores: (B, S) the
    target's score there (step 0: nothing removed; step S-1: everything removed).
    """

    auc: torch.Tensor
    fractions: torch.Tensor
    scores: torch.Tensor


def blurred(x: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """A spatial Gaussian blur of each channel (and frame) of x (B,C,H,W) or (B,C,T,H,W).

    Separable kernel exp(-d²/2σ²) truncated at radius int(3σ) and normalised to sum 1,
    replicate padding; frames are blurred independently (never across time).
    """
    x = check_model_input(x)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise InputError(f"sigma={sigma!r}; the blur's standard deviation in pixels is > 0")
    if not math.isfinite(sigma):
        raise InputError(f"sigma={sigma!r}; the blur's standard deviation must be finite")
    radius = int(3 * sigma)
    d = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-((d / sigma) ** 2) / 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    h, w = x.shape[-2:]
    y = x.reshape(-1, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return y.reshape(x.shape)


def baseline_input(x: torch.Tensor, baseline: Baseline, sigma: float = 5.0) -> torch.Tensor:
    """The input with all information removed, x's shape: "zero" (the model input 0, i.e. the
    dataset mean after the usual normalisation), "blur" (`blurred(x, sigma)`), "mean" (each
    sample's per-channel mean over its positions), or a tensor broadcastable to x."""
    if isinstance(baseline, torch.Tensor):
        try:
            torch.broadcast_shapes(baseline.shape, x.shape)
        except RuntimeError as error:
            raise InputError(
                f"the baseline has shape {tuple(baseline.shape)}, which does not broadcast to x's "
                f"{tuple(x.shape)}"
            ) from error
        if torch.broadcast_shapes(baseline.shape, x.shape) != x.shape:
            raise InputError(
                f"the baseline has shape {tuple(baseline.shape)}; it must broadcast to x's "
                f"{tuple(x.shape)} without growing it"
            )
        return baseline.detach().to(device=x.device, dtype=x.dtype).expand(x.shape)
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        return blurred(x, sigma)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand(x.shape)
    raise InputError(
        f"baseline={baseline!r}; choose 'zero', 'blur', 'mean' or a tensor broadcastable to x"
    )


def schedule(fractions: Sequence[float] | torch.Tensor | None, steps: int) -> torch.Tensor:
    """(S,) float64 removed fractions: `fractions` as given (increasing, from 0 to 1), or
    0, 1/steps, ..., 1."""
    if fractions is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps={steps!r}; the number of equal steps is an int >= 1")
        return torch.arange(steps + 1, dtype=torch.float64) / steps
    out = torch.as_tensor(fractions, dtype=torch.float64).detach().cpu()
    if out.dim() != 1 or out.numel() < 2:
        raise InputError(
            f"fractions has shape {tuple(out.shape)}; pass a 1-D schedule of at least two "
            "fractions, from 0 to 1"
        )
    if not bool(torch.isfinite(out).all()) or float(out[0]) != 0.0 or float(out[-1]) != 1.0:
        raise InputError(
            f"fractions runs from {float(out[0])} to {float(out[-1])}; the schedule starts at 0 "
            "(nothing removed) and ends at 1 (everything removed)"
        )
    if bool((out[1:] <= out[:-1]).any()):
        raise InputError("fractions must be strictly increasing")
    return out


def ranks(sal: torch.Tensor) -> torch.Tensor:
    """(B, P) rank of each position of (B, *positions): 0 = the most salient; ties in the
    order of the flattened positions ((T,) H, W row-major, a stable sort)."""
    flat = sal.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    position = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return rank.scatter_(1, order, position)


def curve(
    model: nn.Module | Callable,
    x: torch.Tensor,
    heatmap: torch.Tensor,
    target: ClassIndex,
    *,
    insertion: bool,
    fractions: Sequence[float] | torch.Tensor | None,
    steps: int,
    baseline: Baseline,
    sigma: float,
    spacing: Spacing,
    score: Score,
    batch_size: int,
) -> Curve:
    """The deletion (insertion=False) or insertion curve of each sample and its AUC."""
    x = check_model_input(x)
    sal = saliency(heatmap, x)
    check_score(score)
    batch_size = check_batch_size(batch_size)
    if spacing not in ("fraction", "uniform"):
        raise InputError(
            f"spacing={spacing!r}; choose 'fraction' (trapezoid over the removed fraction) or "
            "'uniform' (equal spacing per step of the schedule)"
        )
    nominal = schedule(fractions, steps)
    b, positions = sal.shape[0], sal[0].numel()
    counts = torch.round(nominal * positions).to(torch.long)  # half to even, as round()
    removed = (counts.to(torch.float64) / positions).to(device=x.device, dtype=x.dtype)
    counts = counts.to(x.device)
    classes = class_indices(target, b, x.device)
    rank = ranks(sal)
    base = baseline_input(x.detach(), baseline, sigma)
    start, end = (base, x.detach()) if insertion else (x.detach(), base)
    steps_n = counts.numel()

    def build(index: torch.Tensor) -> torch.Tensor:
        sample, step = index // steps_n, index % steps_n
        chosen = (rank[sample] < counts[step, None]).view(len(index), 1, *sal.shape[1:])
        return torch.where(chosen, end[sample], start[sample])

    scores = target_scores(
        model, b * steps_n, build, classes.repeat_interleave(steps_n), score, batch_size
    ).view(b, steps_n)
    if spacing == "fraction":
        auc = torch.trapezoid(scores, x=removed, dim=1)
    else:
        auc = torch.trapezoid(scores, dx=1.0 / (steps_n - 1), dim=1)
    return Curve(auc=auc, fractions=removed, scores=scores)


def deletion_auc(
    model: nn.Module | Callable,
    x: torch.Tensor,
    heatmap: torch.Tensor,
    target: ClassIndex,
    *,
    fractions: Sequence[float] | torch.Tensor | None = None,
    steps: int = 100,
    baseline: Baseline = "zero",
    sigma: float = 5.0,
    spacing: Spacing = "fraction",
    score: Score = "softmax",
    batch_size: int = 16,
    return_curves: bool = False,
) -> torch.Tensor | Curve:
    """RISE's deletion metric (Petsiuk et al., BMVC 2018): the area under the target's score
    as the most salient positions are replaced by the baseline, per sample (B,); lower = a more
    faithful map.

    x: (B,C,H,W) images or (B,C,T,H,W) clips, the model's input; heatmap: (B,[T,]H,W), or with
    a channel axis (reduced by `saliency`); target: the class per sample (an int or (B,)).
    Positions ((T,)H,W) are ranked by the map, descending, ties in flattened order; at removed
    fraction f the first round(f * positions) of them (half to even) are replaced across all
    channels.  `fractions`: the schedule (increasing, 0 to 1), default 0, 1/steps, ..., 1.
    `baseline`: "zero" (RISE's deletion: the model input 0), "blur" (Gaussian, `sigma` px),
    "mean" (per-sample channel means) or a tensor.  `spacing`: "fraction" integrates over the
    removed fraction (RISE; the x-axis is count / positions), "uniform" gives every step of
    the schedule the width 1/(S-1) (the mean over the schedule by the trapezoid rule, as a
    log-spaced schedule is often scored).  `score`: the target's "softmax" probability (RISE)
    or its "logit".  The model runs under torch.no_grad on `batch_size` perturbed inputs at a
    time, in the mode it is in (call model.eval() first).  return_curves=True gives the
    `Curve` (auc, fractions, scores).
    """
    out = curve(
        model, x, heatmap, target, insertion=False, fractions=fractions, steps=steps,
        baseline=baseline, sigma=sigma, spacing=spacing, score=score, batch_size=batch_size,
    )  # fmt: skip
    return out if return_curves else out.auc


def insertion_auc(
    model: nn.Module | Callable,
    x: torch.Tensor,
    heatmap: torch.Tensor,
    target: ClassIndex,
    *,
    fractions: Sequence[float] | torch.Tensor | None = None,
    steps: int = 100,
    baseline: Baseline = "blur",
    sigma: float = 5.0,
    spacing: Spacing = "fraction",
    score: Score = "softmax",
    batch_size: int = 16,
    return_curves: bool = False,
) -> torch.Tensor | Curve:
    """RISE's insertion metric (Petsiuk et al., BMVC 2018): the area under the target's score
    as the most salient positions of x are revealed on the baseline (RISE: a blurred copy of
    the image, the default "blur" with `sigma` px), per sample (B,); higher = a more faithful
    map.  Step 0 is the baseline alone, the last step x itself.  Everything else as
    `deletion_auc`.
    """
    out = curve(
        model, x, heatmap, target, insertion=True, fractions=fractions, steps=steps,
        baseline=baseline, sigma=sigma, spacing=spacing, score=score, batch_size=batch_size,
    )  # fmt: skip
    return out if return_curves else out.auc
