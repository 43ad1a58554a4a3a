"""What the two quality benchmarks share: building an explainer, the cascading randomisation,
the rank correlation and the figure.

`benchmarks/quality.py` (the car-light models) and `benchmarks/quality_real.py`
(EfficientNet-Lite0 on photos) score their maps with `gv.metrics` only; this module holds the
benchmark machinery around the metrics, once, so that the two scripts cannot drift apart.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import gradvis_export as gv

#: the baseline scored after the methods: a map that knows nothing
RANDOM = "random"


def build_explainer(method: str, model: nn.Module, layer: str | None, **options: object):
    """`method` as the CLI builds it (apps/explain.py: cli_explainer): the layer for the methods
    that read one, every activation of the model (`all`) for the guided ones, plus `options`
    (e.g. a `chunk_size`, which changes the speed, not the map)."""
    cls = gv.METHODS[method]
    return gv.make_explainer(
        method,
        model,
        layer if cls.takes_layer else None,
        activations="all" if cls.takes_activations else None,
        **options,
    )


def randomised_models(
    model: nn.Module, stages: Sequence[tuple[str, Sequence[str]]], seed: int = 1
) -> list[nn.Module]:
    """Cascading randomisation (Adebayo et al., NeurIPS 2018): copy k re-initialises the
    modules of stages[0..k] (parameters and batch-norm statistics), head first.

    Every copy is re-initialised from `seed` in the same order, so a group randomised at stage
    k has the same random weights at every later stage: the cascade only ever adds groups."""
    out = []
    for k in range(len(stages)):
        copy_ = copy.deepcopy(model)
        torch.manual_seed(seed)
        for _, names in stages[: k + 1]:
            for name in names:
                for module in copy_.get_submodule(name).modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                    if hasattr(module, "reset_running_stats"):
                        module.reset_running_stats()
        out.append(copy_.eval())
    return out


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman's rank correlation of two maps over all positions; 0 when one is constant
    (no ranking), so a map that collapses to a constant counts as uncorrelated."""
    from scipy.stats import spearmanr

    a = a.numpy() if isinstance(a, torch.Tensor) else a
    b = b.numpy() if isinstance(b, torch.Tensor) else b
    rho = spearmanr(np.ravel(a), np.ravel(b))[0]
    return 0.0 if np.isnan(rho) else float(rho)


def fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    """A table cell: '—' for a figure that does not exist (None / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


@dataclass
class Panel:
    """One row of the figure: bars of scores per method (left), the randomisation curves
    (right).  bars: label -> one value per name (NaN: no bar); curves: method -> the rank
    correlation after each stage (the trained map's 1.0 is prepended)."""

    title: str
    names: list[str]
    bars: dict[str, list[float]]
    stages: list[str]
    curves: dict[str, list[float]]
    reference: tuple[float, str] | None = None  # a horizontal line on the bars
    threshold: float | None = None  # the sanity check's threshold on the curves
    ylim: tuple[float, float] | None = None


def save_figure(panels: Sequence[Panel], path: Path) -> None:
    """Write the panels, one row each, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(14, 4.9 * len(panels)), squeeze=False)
    for (left, right), panel in zip(axes, panels, strict=True):
        pos = np.arange(len(panel.names))
        width = 0.8 / max(len(panel.bars), 1)
        for i, (label, values) in enumerate(panel.bars.items()):
            offset = (i - (len(panel.bars) - 1) / 2) * width
            left.bar(pos + offset, values, width=width, label=label)
        if panel.reference is not None:
            left.axhline(panel.reference[0], color="k", lw=0.8, ls=":", label=panel.reference[1])
        left.axhline(0, color="k", lw=0.6)
        left.set_xticks(pos, panel.names, rotation=45, ha="right")
        if panel.ylim is not None:
            left.set_ylim(*panel.ylim)
        left.legend(fontsize=8, ncol=3, loc="upper center")
        left.set_title(panel.title)
        for i, (name, rho) in enumerate(panel.curves.items()):  # 10 colours, then dashed
            style = {"marker": "o"} if i < 10 else {"marker": "s", "ls": "--"}
            right.plot(range(len(panel.stages) + 1), [1.0, *rho], label=name, **style)
        ticks = ["trained"] + [f"+{s}" for s in panel.stages]
        right.set_xticks(range(len(panel.stages) + 1), ticks, rotation=30, ha="right")
        if panel.threshold is not None:
            right.axhline(panel.threshold, color="k", lw=0.8, ls=":", label="sanity threshold")
        right.axhline(0, color="k", lw=0.6)
        right.set_ylabel("Spearman rank correlation with the trained map")
        right.set_title("cascading randomisation (head first)")
        right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
