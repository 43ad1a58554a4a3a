"""ADCC: the harmonic mean of Average Drop, Coherency and Complexity.

Poppi, Cornia, Baraldi, Cucchiara, "Revisiting The Evaluation of Class Activation Mapping for
Explainability: A Novel Metric and Experimental Analysis", CVPR Workshops 2021.  With E the
explainer's normalised map (in [0, 1]) broadcast over the channels, y and o the target's
softmax probability on x and on x ⊙ E(x):

    average_drop = max(0, y - o) / y
    coherency    = (1 + r) / 2,  r = Pearson(E(x), E(x ⊙ E(x)))  (the same target)
    complexity   = mean(E(x))
    adcc         = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - average_drop))

x ⊙ E(x) multiplies the model's input, i.e. the image after its normalisation, as the paper's
code and pytorch-grad-cam's CamMultImageConfidenceChange do (a removed pixel becomes the
input 0, the dataset's mean colour under the usual normalisation).

Degenerate cases, defined rather than NaN: a constant E(x) or E(x ⊙ E(x)) has no Pearson
correlation, r = 0 (coherency 0.5); y = 0 gives average_drop = 0 (no probability to drop);
a zero term of the harmonic mean (coherency 0, complexity 1, average_drop 1) gives adcc = 0,
the limit of the harmonic mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradvis_export.core.explainer import Explainer
from gradvis_export.errors import InputError
from gradvis_export.metrics.saliency import check_model_input, saliency
from gradvis_export.metrics.scoring import ClassIndex, class_indices, logits_of, pick


@dataclass(frozen=True)
class ADCCResult:
    """ADCC and its three terms per sample (B,), and the class explained (B,) int64."""

    adcc: torch.Tensor
    average_drop: torch.Tensor
    coherency: torch.Tensor
    complexity: torch.Tensor
    target: torch.Tensor


def _unit_map(heatmap: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    sal = saliency(heatmap, x)
    if bool(((sal < -1e-6) | (sal > 1 + 1e-6)).any()):
        raise InputError(
            f"ADCC needs {what} in [0, 1] (it multiplies the input by it); got values in "
            f"[{float(sal.min()):.3g}, {float(sal.max()):.3g}]: build the explainer with "
            "normalize=True (a CAM method)"
        )
    return sal.clamp(0, 1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Pearson correlation of each sample's values; 0 where either is constant."""
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    den = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    r = (a * b).sum(dim=1) / torch.where(den > 0, den, 1)
    return torch.where(den > 0, r.clamp(-1, 1), 0.0)


def adcc(explainer: Explainer, x: torch.Tensor, target: ClassIndex | None = None) -> ADCCResult:
    """ADCC (Poppi et al., CVPR-W 2021) of `explainer` on x (B,C,H,W) or (B,C,T,H,W).

    `explainer(x, target)` must return `.logits` (B, classes) and a `.heatmap` in [0, 1]
    ((B,[T,]H,W), or with a channel axis, reduced by `saliency`): a classification explainer
    with normalize=True.  target: an int or (B,) classes; None = each sample's argmax class on
    x (one extra forward), used for both explanations.  The explainer runs twice (on x and on
    x ⊙ E(x)), with autograd.  See the module docstring for the degenerate cases.
    """
    x = check_model_input(x).detach()
    if target is None:
        with torch.no_grad():
            classes = logits_of(explainer.model, explainer.model_input(x)).argmax(dim=1)
    else:
        classes = class_indices(target, x.shape[0], x.device)
    first = explainer(x, classes)
    e1 = _unit_map(first.heatmap, x, "the heatmap E(x)")
    y = pick(_logits(first), classes, "softmax")
    masked = x * e1.unsqueeze(1).to(x.dtype)
    second = explainer(masked, classes)
    e2 = _unit_map(second.heatmap, x, "the heatmap E(x ⊙ E(x))")
    o = pick(_logits(second), classes, "softmax")

    drop = torch.where(y > 0, (y - o).clamp(min=0) / torch.where(y > 0, y, 1), 0.0)
    coherency = (1 + pearson(e1, e2)) / 2
    complexity = e1.flatten(1).mean(dim=1)
    terms = torch.stack([coherency, 1 - complexity, 1 - drop])
    positive = (terms > 0).all(dim=0)
    score = 3 / (1 / torch.where(terms > 0, terms, 1)).sum(dim=0)
    return ADCCResult(
        adcc=torch.where(positive, score, 0.0),
        average_drop=drop,
        coherency=coherency,
        complexity=complexity,
        target=classes,
    )


def _logits(output: object) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise InputError(
            "ADCC needs an explainer of a classifier: its output's .logits must be "
            f"(B, classes), got {getattr(logits, 'shape', type(logits).__name__)}"
        )
    return logits.detach()
