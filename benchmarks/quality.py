"""Do the explainers point at the lamp?  Faithfulness of every method on two car-light models.

Runs two X3D-XS car-light models on held-out generated clips (seeds never used in training)
and scores each method's maps against the generator's ground-truth lamp boxes, side by side:

- guided: the shipped checkpoint (gradvis_export/assets/carlights_x3d_xs.pt), trained with an
  explanation loss on Grad-CAM at its recorded layer (stage 1: the map's share outside the
  lamps; stage 2: a smooth pointing game) — so Grad-CAM's pointing game and energy on it are
  the figures its training optimised (marked † in the table);
- CE: benchmarks/assets/carlights_x3d_xs_ce.pt, the same architecture and data trained with
  plain cross-entropy (benchmarks/assets/PROVENANCE.md) — nothing of it was trained for a map.

Both are explained at the same layer, the shipped model's recorded one (blocks.2).

    python benchmarks/quality.py --plot /tmp/quality.png        # 12 min on 2 shared cores
    python benchmarks/quality.py --clips 5 --random-clips 2 --methods gradcam guided  # quick
    python benchmarks/quality.py --real                         # Lite0 on photos, 6-8 min

Every figure comes from `gv.metrics` (no copy of a metric here), per clip, then averaged:
- pointing game (`pointing_game`): share of frames whose hottest pixel lies within TOLERANCE
  (1/16 of the side, 5 px at 80; Zhang et al. allow 15 px on ~224 px images) of a deciding
  lamp box;
- energy in box (`energy_in_box`): share of the map's mass inside the deciding lamp boxes (the
  boxes cover ~1-3 % of the frame: a uniform map scores that);
- deletion / insertion AUC (`deletion_auc`, `insertion_auc`): the target class's softmax
  probability as the most salient voxels of the clip (T x H x W) are replaced by the blurred
  clip (insertion: revealed on the blurred clip), at removed fractions 0, 2^-8, ..., 2^-1, 1
  (log-spaced: a lamp is ~1 % of the clip); AUC = mean over the schedule (trapezoid,
  `spacing="uniform"`).  Lower deletion / higher insertion = more faithful;
- cascading randomisation (Adebayo et al. 2018): re-initialise the weights stage by stage from
  the head down (blocks.5, blocks.4, ..., blocks.0); the Spearman rank correlation of each map
  with the trained model's.  A map that still correlates at full randomisation does not
  depend on what the model learnt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "runtime")]

# quality_common, quality_real: the sibling modules (this script's folder is on sys.path)
import numpy as np  # noqa: E402
import quality_real  # noqa: E402
import torch  # noqa: E402
from quality_common import (  # noqa: E402
    RANDOM,
    Panel,
    build_explainer,
    fmt,
    randomised_models,
    rank_correlation,
    save_figure,
)
from torch import nn  # noqa: E402

import gradvis_export as gv  # noqa: E402

#: every registered method (gv.METHODS, registry order), as the CLI builds it (cli_explainer)
METHODS = list(gv.METHODS)
TOLERANCE = 1 / 16  # pointing-game tolerance, as a share of the frame side
FRACTIONS = np.array([0.0] + [2.0**-k for k in range(8, 0, -1)] + [1.0])
STAGES = [(name, [name]) for name in ("blocks.5", "blocks.4", "blocks.3", "blocks.2", "blocks.1", "blocks.0")]  # fmt: skip
#: the two models compared: key -> (label in the table, what it is)
MODELS = {
    "guided": "the shipped checkpoint, trained with Grad-CAM guidance",
    "CE": "benchmarks/assets/carlights_x3d_xs_ce.pt, plain cross-entropy",
}
CE_CHECKPOINT = ROOT / "benchmarks" / "assets" / "carlights_x3d_xs_ce.pt"
#: the metric each guidance loss of gradvis_export.apps.train optimises (on Grad-CAM's map)
TRAINED_METRIC = {"energy": "energy", "pointing": "pointing", "pointing-relu": "pointing"}
TRAINED_METHOD = "gradcam"  # train.py's guidance losses are on Grad-CAM's map


def load_models() -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """The guided (shipped) and CE car-light models in eval mode, and their checkpoints' meta."""
    from gradvis_export.apps import models

    guided_meta = models.shipped_meta("carlights")
    ce_meta = json.loads(CE_CHECKPOINT.with_suffix(".json").read_text())
    ce = models.build(
        ce_meta["model"],
        int(ce_meta["num_classes"]),
        int(ce_meta["clip_len"]),
        int(ce_meta["size"]),
        checkpoint=CE_CHECKPOINT,
        spatial_strides=tuple(ce_meta["spatial_strides"]),
    )
    for key in ("clip_len", "size", "num_classes", "class_names"):
        if ce_meta[key] != guided_meta[key]:
            raise SystemExit(f"the CE model's {key} {ce_meta[key]} is not the shipped model's")
    return {"guided": models.build("carlights"), "CE": ce}, {"guided": guided_meta, "CE": ce_meta}


def trained_for(meta: dict) -> tuple[str, set[str]]:
    """(the layer, the metrics) the guided model's explanation losses optimised, from its meta:
    every stage with guidance > 0 adds its loss's metric (Grad-CAM's map at guided_layer)."""
    stages = meta.get("stages") or [meta]
    metrics = {
        TRAINED_METRIC[stage.get("guidance_loss", "energy")]
        for stage in stages
        if float(stage.get("guidance", 0)) > 0
    }
    return str(meta.get("guided_layer", meta["layer"])), metrics


def explain(method: str, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor):
    """(B, T, H, W) non-negative maps (`gv.metrics.saliency`: a guided map's |.| over channels)."""
    if method == RANDOM:  # baseline: a map that knows nothing
        gen = torch.Generator().manual_seed(int(x.abs().sum() * 1000) % 2**31)
        return torch.rand(x.shape[0], *x.shape[2:], generator=gen)
    heatmap = build_explainer(method, model, layer)(x, target).heatmap
    return gv.metrics.saliency(heatmap, x)


def score_model(
    model: nn.Module,
    layer: str,
    methods: list[str],
    x: torch.Tensor,
    labels: np.ndarray,
    boxes: list[np.ndarray],
    random_clips: int,
    log=print,
) -> dict:
    """Every method's figures on one model: {method: row}."""
    clips = x.shape[0]
    target = torch.from_numpy(labels)  # explain the true class
    side = max(x.shape[-2:])
    box_t = [torch.from_numpy(b)[None] for b in boxes]  # (1, T, K, 4) each: K differs per clip
    random_models = randomised_models(model, STAGES)
    results = {}
    for method in methods:
        explain(method, model, layer, x[:1], target[:1])  # warm-up: first-call costs untimed
        start = time.time()
        heat = torch.cat(
            [explain(method, model, layer, x[i : i + 1], target[i : i + 1]) for i in range(clips)]
        )
        seconds = time.time() - start
        pointing = [
            float(gv.metrics.pointing_game(heat[i : i + 1], box_t[i], tolerance=TOLERANCE * side)[0])
            for i in range(clips)
        ]  # fmt: skip
        energy = [
            float(gv.metrics.energy_in_box(heat[i : i + 1], box_t[i])[0]) for i in range(clips)
        ]
        options = dict(fractions=FRACTIONS, baseline="blur", spacing="uniform")
        row = {
            "pointing": float(np.mean(pointing)),
            "energy": float(np.mean(energy)),
            "deletion": float(gv.metrics.deletion_auc(model, x, heat, target, **options).mean()),
            "insertion": float(gv.metrics.insertion_auc(model, x, heat, target, **options).mean()),
        }
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
            f"  {method:20s} pointing {row['pointing']:.2f} energy {row['energy']:.3f} "
            f"del {row['deletion']:.3f} ins {row['insertion']:.3f} "
            f"rho@full {fmt(row['randomisation'][-1], 2, sign=True)} "
            f"({row['seconds_per_clip']:.2f} s/clip)"
        )
    return results


def run(methods: list[str], clips: int, random_clips: int, log=print) -> dict:
    """Both models on the same held-out clips; the report table() and plot() read."""
    from gradvis_export.apps import train
    from gradvis_export.apps.datasets import CLASS_NAMES, make_batch

    models, metas = load_models()
    layer = metas["guided"]["layer"]  # the shipped model's recorded layer, for both models
    models["CE"].get_submodule(layer)  # the CE model must have it too
    seeds = list(train.TEST_SEEDS)[:clips]
    labels = [i % len(CLASS_NAMES) for i in range(len(seeds))]
    video, labels, boxes = make_batch(
        seeds, metas["guided"]["clip_len"], metas["guided"]["size"], labels
    )
    x = train.to_input(video)
    report = {"clips": clips, "random_clips": random_clips, "layer": layer, "models": {}}
    for name, model in models.items():
        with torch.no_grad():
            accuracy = float((model(x).argmax(1).numpy() == labels).mean())
        log(f"{name} model ({MODELS[name]}): {clips} clips, accuracy {accuracy:.2f}, layer {layer}")
        report["models"][name] = {
            "accuracy": accuracy,
            "methods": score_model(model, layer, methods, x, labels, boxes, random_clips, log),
        }
    report["trained_layer"], trained = trained_for(metas["guided"])
    report["trained_for"] = sorted(trained)
    masks = [gv.metrics.box_mask(torch.from_numpy(b), *video.shape[2:4]) for b in boxes]
    report["box_area"] = float(np.mean([float(m.double().mean()) for m in masks]))
    return report


def trained_line(report: dict) -> str:
    """The one line that says which figures the guidance trained for."""
    names = {"pointing": "pointing game", "energy": "energy in box"}
    metrics = " and ".join(names[m] for m in report["trained_for"])
    return (
        f"† trained for: the guided model's loss targeted {TRAINED_METHOD}'s map at "
        f"{report['trained_layer']} (its {metrics}), so {TRAINED_METHOD}'s {metrics} on the guided "
        "model are figures its training optimised; every other figure, and all of the CE "
        "model's, are not (on the guided model, methods close to Grad-CAM inherit some of it)."
    )


def table(report: dict) -> str:
    """The markdown table: per method, the guided model's row then the CE model's."""
    lines = [
        "| method | model | pointing game ↑ | energy in box ↑ | deletion AUC ↓ | insertion AUC ↑ "
        "| rank corr., head randomised | rank corr., all randomised | s / clip |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = list(next(iter(report["models"].values()))["methods"])
    for method in names:
        for model, entry in report["models"].items():
            r = entry["methods"][method]
            mark = {
                m: " †" if model == "guided" and method == TRAINED_METHOD and m in report["trained_for"] else ""
                for m in ("pointing", "energy")
            }  # fmt: skip
            lines.append(
                f"| {method} | {model} | {r['pointing']:.2f}{mark['pointing']} | "
                f"{r['energy']:.3f}{mark['energy']} | {r['deletion']:.3f} | {r['insertion']:.3f} | "
                f"{fmt(r['randomisation'][0], 2, True)} | {fmt(r['randomisation'][-1], 2, True)} | "
                f"{r['seconds_per_clip']:.2f} |"
            )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """One row per model: the four scores per method, and the randomisation curves."""
    panels = []
    for model, entry in report["models"].items():
        rows = entry["methods"]
        names = list(rows)
        panels.append(
            Panel(
                title=f"{model} model: {report['clips']} held-out clips, layer {report['layer']}",
                names=names,
                bars={
                    label: [rows[n][key] for n in names]
                    for key, label in (
                        ("pointing", "pointing game"),
                        ("energy", "energy in box"),
                        ("deletion", "deletion AUC (lower better)"),
                        ("insertion", "insertion AUC"),
                    )
                },
                stages=[s for s, _ in STAGES],
                curves={n: rows[n]["randomisation"] for n in names if n != RANDOM},
                reference=(report["box_area"], "box area (uniform map)"),
                ylim=(0, 1.3),  # room for the legend above the bars
            )
        )
    save_figure(panels, path)


def parser() -> argparse.ArgumentParser:
    """The options of both benchmarks (the car-light one, and --real's)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--real runs benchmarks/quality_real.py's benchmark instead (EfficientNet-Lite0 "
        "with ImageNet weights on scikit-image photos); its options are --photos, "
        "--random-photos, --steps and --percentiles.",
    )
    p.add_argument(
        "--real",
        action="store_true",
        help="EfficientNet-Lite0 (real ImageNet weights) on photos instead of the car-light models",
    )
    p.add_argument("--clips", type=int, default=20, help="car-light: held-out clips scored")
    p.add_argument(
        "--random-clips",
        type=int,
        default=4,
        help="car-light: clips re-explained per randomisation stage",
    )
    p.add_argument(
        "--photos",
        type=int,
        default=None,
        help="--real: the first N photos of tests/efficientnet_lite.py's PHOTOS "
        f"(default {quality_real.PHOTO_COUNT} of 6)",
    )
    p.add_argument(
        "--random-photos",
        type=int,
        default=None,
        help="--real: photos re-explained per randomisation stage "
        f"(default {quality_real.RANDOMISATION_PHOTOS})",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"--real: deletion / insertion steps (default {quality_real.STEPS})",
    )
    p.add_argument(
        "--percentiles",
        type=float,
        nargs="+",
        default=None,
        help="--real: ROAD percentiles (default "
        + " ".join(f"{q:g}" for q in quality_real.PERCENTILES)
        + ")",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=[*METHODS, RANDOM],
        default=[*METHODS, RANDOM],
        help="methods to score (default: every registered one, then the random baseline)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="the figure (PNG); default docs/quality.png, with --real /tmp/gradvis_quality_real.png",
    )
    p.add_argument("--no-plot", action="store_true", help="write no figure")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.real:
        return quality_real.main(args)
    start = time.time()
    report = run(args.methods, args.clips, min(args.random_clips, args.clips), log=print)
    report["seconds"] = round(time.time() - start, 1)
    print()
    print(table(report))
    print()
    print(trained_line(report))
    print(
        "models: "
        + "; ".join(
            f"{name} = {what} (accuracy {report['models'][name]['accuracy']:.2f})"
            for name, what in MODELS.items()
        )
        + f"; both explained at {report['layer']}"
    )
    print(f"box area {report['box_area']:.3f} of the frame; total {report['seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    if not args.no_plot:
        path = args.plot or ROOT / "docs" / "quality.png"
        plot(report, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
