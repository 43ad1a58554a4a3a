"""Train the shipped car-light classifier: X3D-XS (random init) on generated car-light clips.

    python -m gradvis_export.apps.train --out stage1/carlights_x3d_xs.pt
    python -m gradvis_export.apps.train --resume stage1/carlights_x3d_xs.pt --first-step 450 \
        --steps 150 --lr 1.5e-3 --guidance 1.5 --guidance-loss pointing --freeze-bn --out m.pt

Stage 1 is a fixed budget of optimiser steps (default 450 x 16 clips of 4 x 80 x 80, with the
depthwise convolutions' backward of `depthwise.py`) with a small explanation-guidance term
(`--guidance 0.1`: the share of Grad-CAM's map outside the lamps, differentiated through the
map): 99.3 % held-out accuracy, 2.3 s a step on 2 idle cores, 18 min.  Stage 2 fine-tunes
for Grad-CAM's pointing game (a softmax of the map, batch norm frozen so that the loss shapes the
maps of the deployed, eval-mode model): 1.9 s a step, ~5 min; the shipped checkpoint is stage 2's
(PROVENANCE.md in the assets lists the stages it came from).  Every clip is generated on the
fly from its own seed, so a run's data follow from `--seed` and `--first-step` and no clip is
seen twice; the weights also depend on the thread count through float rounding (re-run on 2
threads: the same stage-1 accuracy and pointing, stage 2 at 98.0 %, BENCHMARKS.md).  Training seeds start at TRAIN_SEED_BASE; held-out seeds (VALIDATION_SEEDS
for the accuracy recorded here, TEST_SEEDS for tests and benchmarks) are below it.  The
checkpoint is {"state_dict": fp16 weights, "meta": {...}}, readable with
torch.load(weights_only=True); the accuracy in "meta" is measured with the fp16 weights.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradvis_export.apps.datasets.carlights import CLASS_NAMES, make_batch
from gradvis_export.apps.depthwise import fast_depthwise

MODEL, CLIP_LEN, SIZE = "x3d_xs", 4, 80
#: X3D-XS with the last stage at stride 1: a 5x5 map at blocks.4 instead of 3x3 (a 3x3 CAM of
#: an 80 px frame cannot single out a 10 px lamp; 160 px input would cost ~3x the training time)
SPATIAL_STRIDES = (2, 2, 2, 1)
#: Grad-CAM layer candidates (5x5, 5x5, 10x10 maps); the best on validation ships
LAYERS = ("blocks.4", "blocks.3", "blocks.2")
#: where `--guidance` asks the Grad-CAM map's mass to lie in the lamps' cells: the 10x10 map
#: (a map equal to the lamps' area per cell wins the pointing game in 0.72 of frames at 5x5 —
#: a 5 px indicator is often > 5 px from every cell centre — and in all of them at 10x10)
GUIDED_LAYER = "blocks.2"
#: its default weight (energy loss, from random init); of 1, 0.3 and 0.1 (450 steps each) 1
#: held accuracy down to 56 %, 0.3 and 0.1 kept 99 % and lifted Grad-CAM's pointing game from
#: 0.13 to ~0.4; the pointing loss with frozen batch norm then takes it to 0.96 (BENCHMARKS.md)
GUIDANCE = 0.1
MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
TRAIN_SEED_BASE = 1_000_000
VALIDATION_SEEDS = range(0, 300)
TEST_SEEDS = range(10_000, 10_050)  # tests/test_carlights.py and benchmarks/quality.py


def to_input(video: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> normalised float (B, 3, T, H, W), as the video pipeline does."""
    x = torch.from_numpy(video).float().div_(255.0)
    x = (x - torch.tensor(MEAN)) / torch.tensor(STD)
    return x.permute(0, 4, 1, 2, 3).contiguous()


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors stored as fp16 (half the file; cast back on load)."""
    return {
        k: v.detach().half() if v.is_floating_point() else v.detach().clone()
        for k, v in model.state_dict().items()
    }


@torch.no_grad()
def accuracy(model: torch.nn.Module, seeds, batch: int = 25) -> float:
    model.eval()
    seeds, correct = list(seeds), 0
    for i in range(0, len(seeds), batch):
        video, labels, _ = make_batch(seeds[i : i + batch], CLIP_LEN, SIZE)
        correct += int((model(to_input(video)).argmax(1).numpy() == labels).sum())
    return correct / len(seeds)


def pointing_game(model: torch.nn.Module, layer: str, seeds) -> float:
    """Share of frames whose Grad-CAM maximum (true class) is within 1/16 of the side of a
    deciding lamp box: how well `layer` localises, to pick the shipped default layer."""
    import gradvis_export as gv

    video, labels, boxes = make_batch(list(seeds), CLIP_LEN, SIZE)
    cam = gv.GradCAM(model, layer)
    heat = cam(to_input(video), torch.from_numpy(labels)).heatmap.detach().numpy()
    ys, xs = np.unravel_index(heat.reshape(*heat.shape[:2], -1).argmax(-1), heat.shape[2:])
    hits = []
    for clip_boxes, y, x in zip(boxes, ys + 0.5, xs + 0.5, strict=True):
        x0, y0, x1, y1 = np.moveaxis(clip_boxes, -1, 0)  # (T, K) each
        dx = np.maximum(np.maximum(x0 - x[:, None], x[:, None] - x1), 0)
        dy = np.maximum(np.maximum(y0 - y[:, None], y[:, None] - y1), 0)
        hits.append((np.hypot(dx, dy) <= SIZE / 16).any(1))
    return float(np.mean(hits))


def lamp_cells(boxes: list[np.ndarray], side: tuple[int, int], size: int) -> torch.Tensor:
    """(B, T, h, w) float: 1 on the cells of an h x w map (over a size x size frame) that
    overlap a deciding lamp box of that frame, else 0."""
    h, w = side
    top = torch.arange(h, dtype=torch.float64) * size / h
    left = torch.arange(w, dtype=torch.float64) * size / w
    masks = []
    for clip_boxes in boxes:
        b = torch.from_numpy(clip_boxes).double()  # (T, K, 4)
        rows = (top < b[..., 3:4]) & (top + size / h > b[..., 1:2])  # (T, K, h)
        cols = (left < b[..., 2:3]) & (left + size / w > b[..., 0:1])  # (T, K, w)
        masks.append((rows[..., :, None] & cols[..., None, :]).any(1))
    return torch.stack(masks).float()


def gradcam_map(features: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's (B, T, h, w) map before its ReLU, kept in the graph (create_graph) so that a
    guidance loss on it trains the weights: `features` are a layer's (B, C, T, h, w)
    activations inside the graph, `score` the summed target logits."""
    (grads,) = torch.autograd.grad(score, features, create_graph=True)
    return (grads.mean((2, 3, 4), keepdim=True) * features).sum(1)


def energy_outside(
    features: torch.Tensor, score: torch.Tensor, cells: torch.Tensor
) -> torch.Tensor:
    """The share of the Grad-CAM map's mass outside `cells`, averaged over frames, as a loss
    that can be differentiated (the energy loss of Rao et al., ICCV 2023); `features` and
    `score` as for `gradcam_map`."""
    cam = F.relu(gradcam_map(features, score))  # (B, T, h, w)
    mass = cam.flatten(2).sum(-1)
    inside = (cam * cells).flatten(2).sum(-1)
    return (1 - inside / (mass + 1e-6)).mean()


def pointing_loss(
    features: torch.Tensor,
    score: torch.Tensor,
    cells: torch.Tensor,
    temperature: float = 0.1,
    before_relu: bool = True,
) -> torch.Tensor:
    """A smooth pointing game as a loss, about the map's maximum (which is what the game
    scores) rather than its mass: per frame, the Grad-CAM map before its ReLU, scaled to
    max |value| 1 and divided by `temperature`, plus one "no cell" entry of 0 (a map <= 0
    everywhere points nowhere), go through a softmax; the loss is -log of the mass on `cells`.
    `before_relu=False` is the first form ("pointing-relu": the map after the ReLU, scaled to
    max 1, no extra entry), which gives no gradient on a frame whose map is all 0."""
    cam = gradcam_map(features, score).flatten(2)  # (B, T, h*w)
    if not before_relu:
        cam = F.relu(cam)
    cam = cam / (cam.abs().amax(-1, keepdim=True) + 1e-6) / temperature
    if before_relu:
        log_p = torch.log_softmax(F.pad(cam, (0, 1)), -1)[..., :-1]
    else:
        log_p = torch.log_softmax(cam, -1)
    cells = cells.flatten(2)
    inside = torch.logsumexp(log_p.masked_fill(cells == 0, -torch.inf), -1)
    has_lamp = cells.amax(-1) > 0  # a lamp jittered out of the frame: nothing to point at
    inside = torch.where(has_lamp, inside, torch.zeros_like(inside))
    return -inside.sum() / has_lamp.sum().clamp(min=1)


GUIDANCE_LOSSES = {
    "energy": energy_outside,
    "pointing": pointing_loss,
    "pointing-relu": functools.partial(pointing_loss, before_relu=False),
}


def train(
    steps: int,
    batch: int,
    seed: int = 0,
    lr: float = 3e-3,
    log=print,
    checkpoint: Path | None = None,
    resume: Path | None = None,
    first_step: int = 0,
    guidance: float = 0.0,
    guided_layer: str = GUIDED_LAYER,
    guidance_loss: str = "energy",
    freeze_bn: bool = False,
) -> tuple[torch.nn.Module, list[float]]:
    """Train from random init (or `resume`'s weights) for `steps` steps, on the clips of steps
    first_step, first_step + 1, ...; returns the model (eval mode) and the cross-entropy
    losses.  `guidance` > 0 adds that times the `guidance_loss` of GUIDANCE_LOSSES at
    `guided_layer` ("blocks.<i>"); `freeze_bn` keeps batch norm on its running statistics."""
    from gradvis_export.apps.models import build

    torch.manual_seed(seed)
    model = build(MODEL, len(CLASS_NAMES), CLIP_LEN, SIZE, resume, seed, SPATIAL_STRIDES).train()
    for module in model.modules():  # the head's dropout (0.5) only slows a short run down
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    losses: list[float] = []
    outsides: list[float] = []  # the guidance term, for the log
    split = int(guided_layer.removeprefix("blocks.")) + 1  # model.blocks[:split] give the layer
    start = time.time()
    with fast_depthwise(model):  # the same gradients, ~1.5x faster steps on CPU
        first = TRAIN_SEED_BASE + seed * 10_000_000 + first_step * batch
        for step in range(steps):
            video, labels, boxes = make_batch(
                range(first + step * batch, first + (step + 1) * batch), CLIP_LEN, SIZE
            )
            model.train(not freeze_bn)
            target = torch.from_numpy(labels)
            features = to_input(video)
            for block in model.blocks[:split]:
                features = block(features)
            logits = features
            for block in model.blocks[split:]:
                logits = block(logits)
            loss = F.cross_entropy(logits, target)
            losses.append(loss.item())
            if guidance > 0:
                score = logits.gather(1, target[:, None]).sum()
                cells = lamp_cells(boxes, features.shape[-2:], SIZE)
                outside = GUIDANCE_LOSSES[guidance_loss](features, score, cells)
                loss = loss + guidance * outside
                outsides.append(outside.item())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            if (step + 1) % 10 == 0 or step == steps - 1:
                recent = np.mean(losses[-10:])
                guided = f" outside {np.mean(outsides[-10:]):.3f}" if outsides else ""
                log(f"step {step + 1}/{steps} loss {recent:.4f}{guided} {time.time() - start:.0f}s")
            if checkpoint is not None and (step + 1) % 50 == 0:
                partial = {"state_dict": half_state(model), "meta": {"partial_step": step + 1}}
                save_checkpoint(checkpoint.with_suffix(".partial.pt"), partial)
    return model.eval(), losses


SAMPLE_SEED, SAMPLE_LABELS = 7, (1, 2, 3, 4, 0)
SAMPLE_FRAMES_EACH, SAMPLE_SIZE, SAMPLE_FPS = 12, 224, 8


def save_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a hidden `.NAME.part` next to `path`, then rename it into place: a
    failure (disk full, read-only folder) is a one-line OutputError, never half a checkpoint,
    and an older file at `path` stays as it was; a stale `.part` a killed run left goes first."""
    from gradvis_export.apps.outputs import remove_stale, temporary, writing

    tmp = temporary(path)
    remove_stale(path)
    try:
        with writing(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def save_checkpoint(path: Path, obj: object) -> None:
    """`torch.save(obj)` atomically (see save_atomic).  Serialised in memory first: torch's
    file writer turns a full disk into an opaque RuntimeError, Python's write says ENOSPC."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    save_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def _write_text(path: Path, text: str) -> None:
    save_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_sample(path: Path, seed: int = SAMPLE_SEED) -> dict:
    """The shipped sample video: one car going through headlights, left, right, hazard, off
    (12 frames each at 8 fps, 224x224 H.264); returns its provenance."""
    from gradvis_export.apps.datasets.carlights import make_sequence
    from gradvis_export.apps.video.encode import mp4_writer

    frames, _, labels = make_sequence(seed, list(SAMPLE_LABELS), SAMPLE_FRAMES_EACH, SAMPLE_SIZE)
    with mp4_writer(path, SAMPLE_FPS, SAMPLE_SIZE, SAMPLE_SIZE, preset="slow", crf=18) as write:
        for frame in frames:
            write(frame)
    return {
        "seed": seed,
        "classes": [CLASS_NAMES[i] for i in SAMPLE_LABELS],
        "frames_each": SAMPLE_FRAMES_EACH,
        "size": SAMPLE_SIZE,
        "fps": SAMPLE_FPS,
        "script": "python -m gradvis_export.apps.train --sample " + str(path),
    }


#: what each training stage (one run of this script) records in meta["stages"]
STAGE_KEYS = (
    "script",
    "resumed_at_step",
    "steps",
    "lr",
    "guidance",
    "guidance_loss",
    "freeze_bn",
    "accuracy",
    "pointing_game",
    "train_seconds",
    "threads",
    "note",
)


def stages_of(meta: dict) -> list[dict]:
    """The training stages that made a checkpoint, oldest first: its recorded "stages", or the
    one run its meta describes (checkpoints written before stages were recorded)."""
    if "stages" in meta:
        return list(meta["stages"])
    return [{k: meta[k] for k in STAGE_KEYS if k in meta}] if "script" in meta else []


def _stage_line(stage: dict) -> str:
    first = stage.get("resumed_at_step") or 0
    loss = stage.get("guidance_loss", "energy")
    guidance = (
        f"guidance {stage['guidance']} x {loss} loss" if stage.get("guidance") else "no guidance"
    )
    bn = "batch norm frozen" if stage.get("freeze_bn") else "batch norm on batch statistics"
    threads = f"{stage['threads']} thread" + ("s" if stage["threads"] > 1 else "")
    return (
        f"`{stage['script']}`: steps {first}..{stage['steps']}, lr {stage['lr']}, {guidance}, "
        f"{bn}; {stage['train_seconds']:.0f} s on {threads}; then held-out accuracy "
        f"{stage['accuracy']:.3f}, Grad-CAM pointing game {_per_layer(stage['pointing_game'])}"
        + stage.get("note", "")
    )


def _per_layer(pointing: dict[str, float]) -> str:
    return ", ".join(f"{layer} {value:.2f}" for layer, value in pointing.items())


def write_provenance(folder: Path) -> None:
    """PROVENANCE.md from the recorded PROVENANCE.json (checkpoint) and SAMPLE.json (video)."""
    meta = json.loads((folder / "PROVENANCE.json").read_text())
    sample = json.loads((folder / "SAMPLE.json").read_text())
    stages = stages_of(meta)
    lines = [
        "# Provenance of the shipped car-light model and sample video",
        "",
        "Both are generated and trained by this repository's own code; nothing was downloaded.",
        "",
        "## carlights_x3d_xs.pt",
        "",
        f"- architecture: pytorchvideo `{meta['model']}`, random init (seed {meta['seed']}), "
        f"{meta['clip_len']} frames x {meta['size']}x{meta['size']}, stage spatial strides "
        f"{tuple(meta.get('spatial_strides', (2, 2, 2, 2)))} (the last stage's map: "
        f"{math.ceil(meta['size'] / 2 / math.prod(meta.get('spatial_strides', (2, 2, 2, 2))))}"
        "^2 cells), classes " + ", ".join(meta["class_names"]),
        f"- data: `{meta['dataset']}`, one fresh clip per training sample (step s uses clip "
        f"seeds {meta['train_seed_base']} + s x {meta['batch']} onwards), {meta['batch']} clips "
        "a step, AdamW with warm-up and cosine decay within each stage",
        f"- guidance losses, on the Grad-CAM map at `{meta.get('guided_layer', GUIDED_LAYER)}` "
        "and added to the cross-entropy: energy = the share of the map's mass outside the "
        "deciding lamps' cells (Rao et al., ICCV 2023); pointing = -log of the softmax mass of "
        "the map (before its ReLU) on those cells; pointing-relu = the same on the map after "
        "its ReLU (`pointing_loss` in `gradvis_export/apps/train.py`)",
        f"- trained by `gradvis_export/apps/train.py` in {len(stages)} stage(s), each resuming "
        "the previous stage's checkpoint (`--resume`) with a fresh optimiser (commands as "
        "recorded; before gradvis 0.2 the module was `gradvis_export.train`, now "
        "`python -m gradvis_export.apps.train`):",
        *[f"  {i}. {_stage_line(stage)}" for i, stage in enumerate(stages, 1)],
        f"- shipped: held-out accuracy {meta['accuracy']:.3f} on clip seeds "
        f"{meta['validation_seeds'][0]}..{meta['validation_seeds'][1] - 1} (fp16 weights); "
        f"Grad-CAM pointing game on the first 40 of them {_per_layer(meta['pointing_game'])}; "
        f"default layer `{meta['layer']}`",
        f"- training time: {sum(stage['train_seconds'] for stage in stages):.0f} s wall in all, "
        f"on a 2-core machine; torch {meta['torch']}",
        "- stored as fp16 (cast to fp32 on load); `torch.load(weights_only=True)` reads it",
        "",
        "## carlights_sample.mp4",
        "",
        f"- written by: `{sample['script']}`",
        f"- one generated car (seed {sample['seed']}) going through "
        + ", ".join(sample["classes"])
        + f", {sample['frames_each']} frames each, {sample['size']}x{sample['size']} at "
        f"{sample['fps']} fps, H.264",
        "",
    ]
    _write_text(folder / "PROVENANCE.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Train (and/or write the sample); a write failure is one line and exit code 2."""
    from gradvis_export.errors import GradvisError

    try:
        return _main(argv)
    except GradvisError as error:
        print(f"train: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="checkpoint to write (.pt)")
    parser.add_argument("--sample", type=Path, default=None, help="also write the sample video")
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--guidance",
        type=float,
        default=GUIDANCE,
        help="weight of the explanation-guidance loss (0: cross-entropy only)",
    )
    parser.add_argument(
        "--guidance-loss",
        choices=sorted(GUIDANCE_LOSSES),
        default="energy",
        help="energy: the share of the Grad-CAM map outside the lamps; pointing: a softmax "
        "pointing game on the map before its ReLU; pointing-relu: the same after it",
    )
    parser.add_argument(
        "--freeze-bn",
        action="store_true",
        help="batch norm on its running statistics (for fine-tuning: guidance then shapes the "
        "maps the deployed model computes, not those of training batches)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--note", default="", help="recorded with this stage in the provenance (e.g. machine load)"
    )
    parser.add_argument("--resume", type=Path, default=None, help="continue from these weights")
    parser.add_argument(
        "--first-step", type=int, default=0, help="with --resume: steps already done (new clips)"
    )
    args = parser.parse_args(argv)
    if args.guidance < 0:
        parser.error(f"--guidance {args.guidance}: a weight >= 0 (0 trains on cross-entropy only)")
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    from gradvis_export.apps.outputs import check_output, writing

    for flag, path in (("--out", args.out), ("--sample", args.sample)):
        if path is not None:  # before minutes of training: a read-only or full folder says so
            if flag == "--out":
                with writing(path, flag):
                    path.parent.mkdir(parents=True, exist_ok=True)
            check_output(path, flag)

    def log(message: str) -> None:
        print(message, flush=True)

    if args.sample is not None:
        info = write_sample(args.sample)
        _write_text(args.sample.parent / "SAMPLE.json", json.dumps(info, indent=2) + "\n")
        log(f"wrote {args.sample} ({args.sample.stat().st_size / 1e3:.0f} kB)")
    if args.out is None:
        return 0

    start = time.time()
    model, losses = train(
        args.steps,
        args.batch,
        args.seed,
        args.lr,
        log,
        args.out,
        args.resume,
        args.first_step,
        args.guidance,
        GUIDED_LAYER,
        args.guidance_loss,
        args.freeze_bn,
    )
    train_seconds = time.time() - start
    state = half_state(model)
    model.load_state_dict(state)  # measure what ships: the fp16-rounded weights
    acc = accuracy(model, VALIDATION_SEEDS)
    log(f"held-out accuracy {acc:.4f} on {len(VALIDATION_SEEDS)} clips (fp16 weights)")
    pointing = {layer: pointing_game(model, layer, VALIDATION_SEEDS[:40]) for layer in LAYERS}
    layer = max(LAYERS, key=lambda name: pointing[name])
    log(f"Grad-CAM pointing game on 40 validation clips: {pointing}; default layer {layer}")
    meta = {
        "model": MODEL,
        "num_classes": len(CLASS_NAMES),
        "clip_len": CLIP_LEN,
        "size": SIZE,
        "spatial_strides": list(SPATIAL_STRIDES),
        "layer": layer,
        "pointing_game": pointing,
        "class_names": list(CLASS_NAMES),
        "mean": list(MEAN),
        "std": list(STD),
        "dataset": "gradvis_export.apps.datasets.carlights",
        "script": "python -m gradvis_export.apps.train " + shlex.join(argv or sys.argv[1:]),
        "seed": args.seed,
        "steps": args.first_step + args.steps,
        "resumed_at_step": args.first_step if args.resume else None,
        "batch": args.batch,
        "lr": args.lr,
        "guidance": args.guidance,
        "guided_layer": GUIDED_LAYER,
        "guidance_loss": args.guidance_loss,
        "freeze_bn": args.freeze_bn,
        "train_seed_base": TRAIN_SEED_BASE,
        "validation_seeds": [VALIDATION_SEEDS.start, VALIDATION_SEEDS.stop],
        "accuracy": acc,
        "final_loss": float(np.mean(losses[-20:])),
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "torch": str(torch.__version__),
    }
    if args.note:
        meta["note"] = "; " + args.note
    resumed = torch.load(args.resume, weights_only=True) if args.resume else {}
    meta["stages"] = stages_of(resumed.get("meta", {})) + stages_of(meta)
    save_checkpoint(args.out, {"state_dict": state, "meta": meta})
    args.out.with_suffix(".partial.pt").unlink(missing_ok=True)
    _write_text(args.out.parent / "PROVENANCE.json", json.dumps(meta, indent=2) + "\n")
    if (args.out.parent / "SAMPLE.json").is_file():
        write_provenance(args.out.parent)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
