"""Do the explainers point at the lamp?  Faithfulness of every method on the shipped model.

Runs the shipped car-light X3D-XS on held-out generated clips (seeds never used in training)
and scores each method's maps against the generator's ground-truth lamp boxes:

    python benchmarks/quality.py                       # ~10 min on 2 idle cores
    python benchmarks/quality.py --clips 5 --random-clips 2 --methods gradcam guided  # quick

Metrics (per clip, then averaged):
- pointing game: share of frames whose hottest pixel lies within TOLERANCE (1/16 of the
  side, 7 px at 112; Zhang et al. allow 15 px on ~224 px images) of a deciding lamp box;
- energy in box: share of the map's mass inside the deciding lamp boxes (the boxes cover
  ~1-3 % of the frame: a uniform map scores that);
- deletion / insertion AUC: the target class's softmax probability as the most salient
  voxels of the clip (T x H x W) are replaced by the blurred clip (insertion: revealed on the
  blurred clip), at removed fractions 0, 2^-8, ..., 2^-1, 1 (log-spaced: a lamp is ~1 % of
  the clip); AUC = mean over the schedule (trapezoid).  Lower deletion / higher insertion =
  more faithful;
- cascading randomisation (Adebayo et al. 2018): re-initialise the weights stage by stage from
  the head down (blocks.5, blocks.4, ..., blocks.0); the Spearman rank correlation of each map
  with the trained model's.  A map that still correlates at full randomisation does not
  depend on what the model learnt.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "runtime")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gradvis_export as gv  # noqa: E402

#: every registered method (gv.METHODS, registry order), as the CLI builds it (cli_explainer)
METHODS = list(gv.METHODS)
#: the baseline scored after them: a map that knows nothing
RANDOM = "random"
TOLERANCE = 1 / 16  # pointing-game tolerance, as a share of the frame side
FRACTIONS = np.array([0.0] + [2.0**-k for k in range(8, 0, -1)] + [1.0])
STAGES = ["blocks.5", "blocks.4", "blocks.3", "blocks.2", "blocks.1", "blocks.0"]


def saliency(heatmap: torch.Tensor) -> np.ndarray:
    """(B, T, H, W) CAM, or (B, 3, T, H, W) signed guided map -> (B, T, H, W) >= 0."""
    heatmap = heatmap.detach().float()
    if heatmap.dim() == 5:
        heatmap = heatmap.abs().sum(1)
    return heatmap.numpy()


def box_mask(boxes: np.ndarray, height: int, width: int, grow: float = 0.0) -> np.ndarray:
    """(T, K, 4) pixel boxes -> (T, H, W) bool, pixel centres within `grow` px of a box."""
    ys = np.arange(height)[None, :, None, None] + 0.5
    xs = np.arange(width)[None, None, :, None] + 0.5
    x0, y0, x1, y1 = (boxes[:, None, None, :, i] for i in range(4))
    dx = np.maximum(np.maximum(x0 - xs, xs - x1), 0)
    dy = np.maximum(np.maximum(y0 - ys, ys - y1), 0)
    return (np.hypot(dx, dy) <= grow).any(-1)


def pointing_game(heat: np.ndarray, boxes: np.ndarray) -> float:
    """Share of frames of one clip (T, H, W) whose maximum is within TOLERANCE of a box."""
    t, h, w = heat.shape
    near = box_mask(boxes, h, w, grow=TOLERANCE * max(h, w))
    flat = heat.reshape(t, -1).argmax(1)
    return float(near.reshape(t, -1)[np.arange(t), flat].mean())


def energy_in_box(heat: np.ndarray, boxes: np.ndarray) -> float:
    inside = box_mask(boxes, *heat.shape[1:])
    total = heat.sum()
    return float(heat[inside].sum() / total) if total > 0 else 0.0


def blurred(x: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Spatial Gaussian blur of a (B, 3, T, H, W) clip (the 'information removed' baseline)."""
    radius = int(3 * sigma)
    k = torch.exp(-((torch.arange(-radius, radius + 1.0) / sigma) ** 2) / 2)
    k = (k / k.sum()).to(x.dtype)
    b, c, t, h, w = x.shape
    y = x.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def deletion_insertion(
    model, x: torch.Tensor, heat: np.ndarray, target: int
) -> tuple[float, float]:
    """AUCs for one clip x (1, 3, T, H, W) with map heat (T, H, W)."""
    order = np.argsort(-heat.ravel(), kind="stable")
    base = blurred(x)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rank = torch.from_numpy(rank.reshape(heat.shape))
    curves = []
    for start, end in ((x, base), (base, x)):  # deletion, insertion
        clips = []
        for fraction in FRACTIONS:
            chosen = (rank < round(fraction * rank.numel())).to(x.dtype)
            clips.append(start[0] * (1 - chosen) + end[0] * chosen)
        probs = torch.softmax(model(torch.stack(clips)), dim=1)[:, target].numpy()
        curves.append(float(np.trapezoid(probs, dx=1.0 / (len(FRACTIONS) - 1))))
    return curves[0], curves[1]


def randomised(model: torch.nn.Module, stages: list[str], seed: int = 1) -> torch.nn.Module:
    """A copy of `model` whose `stages` are re-initialised (parameters and BN statistics)."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    for name in stages:
        for module in model.get_submodule(name).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return model.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(a.ravel(), b.ravel())[0]
    return 0.0 if np.isnan(rho) else float(rho)


def explain(method: str, model, layer: str, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    from gradvis_export.apps.explain import cli_explainer

    if method == RANDOM:  # baseline: a map that knows nothing
        gen = torch.Generator().manual_seed(int(x.abs().sum() * 1000) % 2**31)
        return torch.rand(x.shape[0], *x.shape[2:], generator=gen).numpy()
    explainer = cli_explainer(method, model, layer)
    return saliency(explainer(x, target).heatmap)


def run(methods: list[str], clips: int, random_clips: int, log=print) -> dict:
    from gradvis_export.apps import models, train
    from gradvis_export.apps.datasets import CLASS_NAMES, make_batch

    meta = models.shipped_meta("carlights")
    model = models.build("carlights")
    layer = meta["layer"]
    seeds = list(train.TEST_SEEDS)[:clips]
    labels = [i % len(CLASS_NAMES) for i in range(len(seeds))]
    video, labels, boxes = make_batch(seeds, meta["clip_len"], meta["size"], labels)
    x = train.to_input(video)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    log(f"{clips} clips, accuracy {float((predicted.numpy() == labels).mean()):.2f}")
    target = torch.from_numpy(labels)  # explain the true class
    stages = [STAGES[: i + 1] for i in range(len(STAGES))]
    random_models = [randomised(model, s) for s in stages]
    results = {}
    for method in methods:
        start = time.time()
        heat = np.concatenate(
            [explain(method, model, layer, x[i : i + 1], target[i : i + 1]) for i in range(clips)]
        )
        seconds = time.time() - start
        row = {
            "pointing": float(np.mean([pointing_game(h, b) for h, b in zip(heat, boxes)])),
            "energy": float(np.mean([energy_in_box(h, b) for h, b in zip(heat, boxes)])),
        }
        auc = [
            deletion_insertion(model, x[i : i + 1], heat[i], int(labels[i])) for i in range(clips)
        ]
        row["deletion"] = float(np.mean([a[0] for a in auc]))
        row["insertion"] = float(np.mean([a[1] for a in auc]))
        rho = []
        for random_model in random_models if method != RANDOM else []:
            maps = [
                explain(method, random_model, layer, x[i : i + 1], target[i : i + 1])[0]
                for i in range(random_clips)
            ]
            rho.append(float(np.mean([rank_correlation(m, h) for m, h in zip(maps, heat)])))
        row["randomisation"] = rho or [float("nan")] * len(STAGES)  # random: nothing to test
        row["seconds_per_clip"] = seconds / clips
        results[method] = row
        log(
            f"{method:20s} pointing {row['pointing']:.2f} energy {row['energy']:.3f} "
            f"del {row['deletion']:.3f} ins {row['insertion']:.3f} "
            f"rho@full {fmt(row['randomisation'][-1])} "
            f"({row['seconds_per_clip']:.2f} s/clip)"
        )
    area = float(np.mean([box_mask(b, *video.shape[2:4]).mean() for b in boxes]))
    return {"clips": clips, "random_clips": random_clips, "box_area": area, "methods": results}


def fmt(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:+.2f}"


def table(report: dict) -> str:
    lines = [
        "| method | pointing game ↑ | energy in box ↑ | deletion AUC ↓ | insertion AUC ↑ "
        "| rank corr., head randomised | rank corr., all randomised | s / clip |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["methods"].items():
        lines.append(
            f"| {name} | {r['pointing']:.2f} | {r['energy']:.3f} | {r['deletion']:.3f} | "
            f"{r['insertion']:.3f} | {fmt(r['randomisation'][0])} | {fmt(r['randomisation'][-1])} "
            f"| {r['seconds_per_clip']:.2f} |"
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["methods"])
    rows = [report["methods"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    pos = np.arange(len(names))
    for offset, key, label in (
        (-0.3, "pointing", "pointing game"),
        (-0.1, "energy", "energy in box"),
        (0.1, "deletion", "deletion AUC (lower better)"),
        (0.3, "insertion", "insertion AUC"),
    ):
        left.bar(pos + offset, [r[key] for r in rows], width=0.2, label=label)
    left.axhline(report["box_area"], color="k", lw=0.8, ls=":", label="box area (uniform map)")
    left.set_xticks(pos, names, rotation=45, ha="right")
    left.set_ylim(0, 1.3)  # room for the legend above the bars
    left.set_yticks(np.linspace(0, 1, 6))
    left.legend(fontsize=8, ncol=3, loc="upper center")
    left.set_title(f"faithfulness on {report['clips']} held-out clips")
    shown = [(name, r) for name, r in zip(names, rows, strict=True) if name != RANDOM]
    for i, (name, r) in enumerate(shown):  # 10 colours, then dashed lines with square markers
        style = {"marker": "o"} if i < 10 else {"marker": "s", "ls": "--"}
        right.plot(range(len(STAGES) + 1), [1.0] + r["randomisation"], label=name, **style)
    right.set_xticks(range(len(STAGES) + 1), ["trained"] + [f"+{s}" for s in STAGES], rotation=30)
    right.set_ylabel("Spearman rank correlation with the trained map")
    right.set_title("cascading randomisation (head first)")
    right.axhline(0, color="k", lw=0.8)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the lines
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--random-clips", type=int, default=4, help="clips for randomisation")
    parser.add_argument(
        "--methods", nargs="+", choices=[*METHODS, RANDOM], default=[*METHODS, RANDOM]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "quality.png")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    start = time.time()
    report = run(args.methods, args.clips, min(args.random_clips, args.clips), log=print)
    report["seconds"] = round(time.time() - start, 1)
    print()
    print(table(report))
    print(f"\nbox area {report['box_area']:.3f} of the frame; total {report['seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot is not None:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
