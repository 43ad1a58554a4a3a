"""The `gradvis` command line: explain a video, export an explainer, describe an artifact.

    gradvis explain [VIDEO] [--model x3d_xs --checkpoint PATH] --out out.mp4 [--gif out.gif]
    gradvis export --model x3d_xs --method gradcam --format onnx --out explainer.onnx
    gradvis info explainer.onnx
    gradvis batch --input videos/ --artifact explainer.onnx --out results/ [--ray auto]
    gradvis triton-repo --artifact explainer.onnx --out model_repository/

Errors are one line on stderr and exit code 2 (bad input) or 1 (anything else); `batch` exits
1 when any video failed (each is listed in OUT/manifest.jsonl with its error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradvis_export.errors import GradvisError
from gradvis_runtime.contract import PROFILES

#: `--model clip-<open_clip ViT>`: Grad-ECLIP on every frame
CLIP_PREFIX = "clip-"


def method_names() -> list[str]:
    """The registry's names (gv.METHODS), without importing torch for `--help` of other
    commands: the registry is imported when a parser that lists methods is built."""
    from gradvis_export.methods.registry import METHODS

    return list(METHODS)


def cli_explainer(method: str, model, layer: str | None):
    """The explainer `method` as the CLI builds it: the layer for methods that read one, and
    every activation X3D has (`all`) for the guided ones."""
    from gradvis_export.methods.registry import make_explainer, method_class

    cls = method_class(method)
    return make_explainer(
        method,
        model,
        layer if cls.takes_layer else None,
        activations="all" if cls.takes_activations else None,
    )


def _model_args(parser: argparse.ArgumentParser) -> None:
    from gradvis_export.apps.models import CONFIGS

    parser.add_argument(
        "--model",
        default=None,
        help=f"one of {', '.join(CONFIGS)} (default: the shipped, trained carlights model; "
        "x3d_xs with --checkpoint); explain also takes clip-<open_clip ViT>, e.g. clip-ViT-B-32, "
        "with --prompt",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="state dict to load")
    parser.add_argument(
        "--num-classes", type=int, default=None, help="default 400 (a shipped model: its own)"
    )
    parser.add_argument(
        "--method",
        default="gradcam",
        choices=method_names(),
        metavar="METHOD",
        help=f"one of {', '.join(method_names())} (default gradcam)",
    )
    parser.add_argument(
        "--layer", default=None, help="target layer (default: the model's last stage)"
    )
    parser.add_argument(
        "--clip-len", type=int, default=None, help="frames per clip (model default)"
    )
    parser.add_argument("--size", type=int, default=None, help="square input side (model default)")


@dataclass(frozen=True)
class ModelChoice:
    """The model the command line names: `--model` (default: the shipped carlights model, or
    x3d_xs with --checkpoint), its number of classes and, for a shipped model, their names."""

    name: str
    num_classes: int
    class_names: list[str] | None
    checkpoint: Path | None


def resolve_model(
    model: str | None, checkpoint: Path | None, num_classes: int | None
) -> ModelChoice:
    """The embedded default: no --model and no --checkpoint means the shipped carlights model
    (trained; classes, clip length and size from its checkpoint)."""
    from gradvis_export.apps import models

    name = model or ("carlights" if checkpoint is None else "x3d_xs")
    if name in models.SHIPPED:
        meta = models.shipped_meta(name)
        if num_classes not in (None, meta["num_classes"]):
            raise GradvisError(
                f"--num-classes {num_classes} does not fit the shipped {name!r} model "
                f"({meta['num_classes']} classes: {', '.join(meta['class_names'])})"
            )
        return ModelChoice(name, int(meta["num_classes"]), list(meta["class_names"]), checkpoint)
    return ModelChoice(name, num_classes or 400, None, checkpoint)


def build_explainer(
    choice: ModelChoice,
    method: str,
    layer: str | None,
    clip_len: int | None,
    size: int | None,
    warn: Callable[[str], None],
):
    """(model config, clip length, size, explainer) for the chosen model and method."""
    from gradvis_export.apps import models

    cfg = models.config(choice.name)
    clip_len, size = clip_len or cfg.clip_len, size or cfg.size
    model = models.build(choice.name, choice.num_classes, clip_len, size, choice.checkpoint)
    if choice.checkpoint is None and choice.name not in models.SHIPPED:
        warn(
            f"note: no --checkpoint, so {choice.name} has random weights: the heatmaps show the "
            "machinery, not a trained model's reasoning"
        )
    return cfg, clip_len, size, cli_explainer(method, model, layer or cfg.layer)


def cmd_explain(args: argparse.Namespace) -> int:
    if (args.model or "").startswith(CLIP_PREFIX):  # CLIP + Grad-ECLIP, per frame
        return cmd_explain_clip(args)
    from gradvis_export.apps import models
    from gradvis_export.apps.video.backends import ArtifactBackend, EagerBackend, default_workers
    from gradvis_export.apps.video.pipeline import VideoOptions, explain_video
    from gradvis_export.apps.video.worker import cpu_count

    def warn(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    video = args.video
    if video is None:  # the embedded default: the shipped sample (and model)
        if args.model is not None or args.checkpoint is not None:
            raise GradvisError("give a VIDEO to explain (only the shipped model has a sample)")
        video = models.SAMPLE_VIDEO
        if not video.is_file():
            raise GradvisError(f"the shipped sample video is missing ({video}); give a VIDEO")
    choice = resolve_model(args.model, args.checkpoint, args.num_classes)
    cfg = models.config(choice.name)
    workers = 1
    if args.workers is not None and (args.workers < 1 or args.artifact is None):
        raise GradvisError(
            f"--workers {args.workers}: give a number >= 1, with --artifact (the eager explainer "
            "runs one clip at a time on --threads threads)"
        )
    if args.artifact is not None:
        workers = args.workers or default_workers(args.artifact, args.threads)
        threads = max(1, (args.threads or cpu_count()) // workers)
        backend = ArtifactBackend(args.artifact, threads=threads)
        spec = backend.spec  # the clip length and size the artifact was exported for
        clip_len = args.clip_len or spec.clip_len
        size = args.size or spec.frame_size[0]
        backend.check(clip_len, size)
        uint8, labels = spec.uint8, spec.class_names
        mean, std = spec.preprocess.mean or cfg.mean, spec.preprocess.std or cfg.std
        meta = {"method": spec.method, "artifact": str(args.artifact)}
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        cfg, clip_len, size, explainer = build_explainer(
            choice, args.method, args.layer, args.clip_len, args.size, warn
        )
        backend, uint8, labels = EagerBackend(explainer), False, choice.class_names
        mean, std = cfg.mean, cfg.std
        meta = {"method": args.method, "model": choice.name}
    stride = args.stride or max(1, clip_len // 2)
    out = args.out
    if out is None and args.gif is None and args.json is None:
        out = Path(video).with_name(Path(video).stem + "_gradvis.mp4")
        if Path(video) == models.SAMPLE_VIDEO:  # not inside the installed package
            out = Path(out.name)
    sidecar = args.json
    if sidecar is None and out is not None:
        sidecar = Path(out).with_suffix(".json")
    options = VideoOptions(
        clip_len=clip_len,
        stride=min(stride, clip_len),
        size=size,
        mean=tuple(mean),
        std=tuple(std),
        target=args.target,
        alpha=args.alpha,
        panel=args.panel,
        boxes=args.boxes,
        uint8_input=uint8,
        labels=list(labels) if labels is not None else None,
        workers=workers,
        preset=args.preset,
    )
    summary = explain_video(
        video,
        backend,
        options,
        out=out,
        gif=args.gif,
        sidecar=sidecar,
        progress=not args.quiet,
        warn=warn,
        metadata=meta,
    )
    if not args.quiet:
        print(
            f"wrote {', '.join(summary.outputs)}: {summary.frames} frames, {summary.clips} clips",
            file=sys.stderr,
        )
    return 0


def cmd_explain_clip(args: argparse.Namespace) -> int:
    """`gradvis explain VIDEO --model clip-ViT-B-32 --prompt "..."`: Grad-ECLIP per frame."""
    import torch

    from gradvis_export.apps.clip import build_clip
    from gradvis_export.apps.clip_video import artifact_explain, explain_video_clip

    if args.video is None:
        raise GradvisError("give a VIDEO to explain with a CLIP model")
    if not args.prompt:
        raise GradvisError('a CLIP model needs --prompt "what to look for"')
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.model.removeprefix(CLIP_PREFIX)
    model = build_clip(name, checkpoint=args.checkpoint)
    if args.checkpoint is None and not args.quiet:
        print(
            f"note: no --checkpoint, so {name} has random weights: the heatmaps show the "
            "machinery, not a trained CLIP's reasoning",
            file=sys.stderr,
        )
    explain = artifact_explain(args.artifact, args.threads) if args.artifact else None
    out = args.out
    if out is None and args.json is None:
        out = Path(args.video).with_name(Path(args.video).stem + "_gradvis.mp4")
    sidecar = args.json or (Path(out).with_suffix(".json") if out is not None else None)
    summary = explain_video_clip(
        args.video,
        model,
        args.prompt,
        out,
        frames=args.frames,
        clip_len=args.clip_len or 16,
        explain=explain,
        alpha=args.alpha,
        sidecar=sidecar,
    )
    if not args.quiet:
        print(f"wrote {', '.join(summary['outputs'])}: {summary['frames']} frames", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from gradvis_export.core.preprocess import UInt8Input
    from gradvis_export.exporter.api import export

    if args.overlay is not None and not args.uint8:
        raise GradvisError("--overlay draws on the uint8 input frames: add --uint8")
    choice = resolve_model(args.model, args.checkpoint, args.num_classes)
    cfg, clip_len, size, explainer = build_explainer(
        choice, args.method, args.layer, args.clip_len, args.size,
        lambda m: print(m, file=sys.stderr),
    )  # fmt: skip
    if args.uint8:
        explainer = UInt8Input(explainer, mean=cfg.mean, std=cfg.std, overlay=args.overlay)
        example = torch.randint(0, 256, (2, clip_len, size, size, 3), dtype=torch.uint8)
        metadata = {}
    else:
        example = torch.randn(2, 3, clip_len, size, size)
        metadata = {"mean": list(cfg.mean), "std": list(cfg.std)}
    if choice.class_names is not None:
        metadata["class_names"] = choice.class_names
    precision = "fp16" if args.fp16 else "fp32"
    path = export(
        explainer,
        example,
        args.out,
        format=args.format,
        precision=precision,
        profile=args.profile,
        metadata=metadata,
    )
    print(f"wrote {path}", file=sys.stderr)
    error = describe(path).spec.extra.get("fp16_error") if args.fp16 else None
    for name, value in (error or {}).items():
        if isinstance(value, dict) and "max_abs" in value:
            print(
                f"fp16 vs fp32 {name}: max abs diff {value['max_abs']:.3g}, relative L2 "
                f"{value['rel_l2']:.3g} ({error['samples']} samples, {error['measured_on']})",
                file=sys.stderr,
            )
    return 0


def describe(path: str | os.PathLike):
    """The artifact loaded by gradvis_runtime (its `spec` is the contract, `backend` the
    runtime that opened it)."""
    import gradvis_runtime

    return gradvis_runtime.load(path)


def cmd_info(args: argparse.Namespace) -> int:
    runtime = describe(args.artifact)
    spec = runtime.spec
    if args.json:
        print(json.dumps({**spec.to_dict(), "backend": runtime.backend}, indent=2))
        return 0
    print(
        f"{args.artifact} ({runtime.backend}, gradvis {spec.gradvis_version}, contract "
        f"{spec.contract})"
    )
    print(f"  method:  {spec.method}  layer: {', '.join(spec.layers or ['-'])}")
    print(f"  target:  {spec.target.get('type')}  precision: {spec.precision}"
          + (f"  profile: {spec.profile}" if spec.profile else ""))  # fmt: skip
    for s in spec.inputs:
        layout = f" {s.layout}" if s.layout else ""
        default = f" default {s.default}" if s.default is not None else ""
        print(f"  input   {s.name}: {s.dtype} {tuple(s.shape)}{layout} ({s.role}{default})")
    for o in spec.outputs:
        print(f"  output  {o.name}: {o.dtype} {tuple(o.shape)}")
    if spec.class_names is not None:
        print(f"  classes: {', '.join(spec.class_names)}")
    elif spec.num_classes is not None:
        print(f"  classes: {spec.num_classes} (unnamed)")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from gradvis_export.apps.batch import MANIFEST, BatchSettings, run_batch

    settings = BatchSettings(
        artifact=args.artifact,
        out_dir=args.out,
        stride=args.stride,
        target=args.target,
        alpha=args.alpha,
        boxes=args.boxes,
        json_only=args.json_only,
        workers=args.workers,
        threads=args.threads,
        ray=args.ray,
        limit=args.limit,
    )
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    report = run_batch(args.input, settings, log=log)
    print(
        f"{report.total} videos: {report.ok} explained, {report.skipped} skipped (done before), "
        f"{report.failed} failed; {report.workers} {report.runner} workers x {report.threads} "
        f"threads, {report.seconds:.1f} s; manifest {args.out / MANIFEST}",
        file=sys.stderr,
    )
    return 1 if report.failed else 0


def cmd_triton_repo(args: argparse.Namespace) -> int:
    from gradvis_export.apps.triton import write_repository

    folder = write_repository(
        args.artifact,
        args.out,
        name=args.name,
        backend=args.backend,
        max_batch_size=args.max_batch_size,
        force=args.force,
    )
    print(f"wrote {folder} (config.pbtxt, 1/, gradvis.json)", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gradvis", description=__doc__.split("\n\n")[0])
    sub = root.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="overlay heatmaps on every frame of a video")
    explain.add_argument(
        "video",
        type=Path,
        nargs="?",
        default=None,
        help="video to explain (default: the shipped car-light sample, with the shipped model)",
    )
    _model_args(explain)
    explain.add_argument("--stride", type=int, default=None, help="frames between clip starts")
    explain.add_argument("--target", type=int, default=-1, help="class to explain (-1: predicted)")
    explain.add_argument("--out", type=Path, default=None, help="overlay video (.mp4)")
    explain.add_argument("--gif", type=Path, default=None, help="also a GIF (short videos)")
    explain.add_argument("--json", type=Path, default=None, help="sidecar (default: OUT.json)")
    explain.add_argument("--artifact", type=Path, default=None, help="run this exported explainer")
    explain.add_argument(
        "--panel", action="store_true", help="frame | overlay | guided side by side"
    )
    explain.add_argument("--boxes", action="store_true", help="boxes around the hottest regions")
    explain.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity")
    explain.add_argument(
        "--threads", type=int, default=None, help="threads in all (default: cores)"
    )
    explain.add_argument(
        "--workers",
        type=int,
        default=None,
        help="--artifact: clips explained at once, each on threads/workers threads (default: "
        "one per thread up to 4 for .onnx, else 1)",
    )
    explain.add_argument(
        "--preset",
        default="ultrafast",
        choices=["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"],
        help="x264 preset of the MP4: slower ones write smaller files (default: ultrafast)",
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    explain.add_argument(
        "--prompt", default=None, help="CLIP models (--model clip-ViT-B-32): the text to find"
    )
    explain.add_argument(
        "--frames",
        choices=["all", "middle"],
        default="all",
        help="CLIP models: explain every frame, or the middle frame of each --clip-len run",
    )
    explain.set_defaults(run=cmd_explain)

    exp = sub.add_parser("export", help="export an explainer for a video model")
    _model_args(exp)
    exp.add_argument("--format", choices=["onnx", "torchscript"], default=None)
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument(
        "--uint8", action="store_true", help="take uint8 frames (B,T,H,W,3); normalise in-graph"
    )
    exp.add_argument(
        "--overlay",
        type=float,
        default=None,
        metavar="ALPHA",
        help="with --uint8: also output the frames with the heatmap drawn on them (opacity ALPHA)",
    )
    exp.add_argument(
        "--fp16",
        action="store_true",
        help="float16 weights and activations inside (float32 interface); prints the error vs fp32",
    )
    exp.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=None,
        help="ONNX only: tensorrt (operators TensorRT 10 parses) or onnxruntime-cpu (graph "
        "rewrites faster on onnxruntime's CPU provider, e.g. X3D's depthwise convolutions)",
    )
    exp.set_defaults(run=cmd_export)

    info = sub.add_parser("info", help="inputs, outputs, method and layer of an artifact")
    info.add_argument("artifact", type=Path)
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)

    batch = sub.add_parser("batch", help="explain many videos (a process pool, or Ray)")
    batch.add_argument(
        "--input", required=True, help="a folder, a glob pattern, a .txt list or a video"
    )
    batch.add_argument("--artifact", type=Path, required=True, help="an exported video explainer")
    batch.add_argument("--out", type=Path, required=True, help="folder for outputs + manifest")
    batch.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: a cluster address (auto, ray://host:10001) or 'local'",
    )
    batch.add_argument("--workers", type=int, default=None, help="processes / Ray actors")
    batch.add_argument("--threads", type=int, default=None, help="threads per worker")
    batch.add_argument("--stride", type=int, default=None, help="frames between clip starts")
    batch.add_argument("--target", type=int, default=-1, help="class to explain (-1: predicted)")
    batch.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity")
    batch.add_argument("--boxes", action="store_true", help="boxes around the hottest regions")
    batch.add_argument("--json-only", action="store_true", help="sidecars only, no MP4s")
    batch.add_argument("--limit", type=int, default=None, help="only the first N videos")
    batch.add_argument("--quiet", action="store_true", help="no line per video")
    batch.set_defaults(run=cmd_batch)

    triton = sub.add_parser("triton-repo", help="a Triton Inference Server model repository")
    triton.add_argument("--artifact", type=Path, required=True, help=".onnx or TorchScript .pt")
    triton.add_argument("--out", type=Path, required=True, help="the model repository folder")
    triton.add_argument("--name", default=None, help="model name (default: the artifact's stem)")
    triton.add_argument(
        "--backend",
        choices=["onnxruntime", "tensorrt", "pytorch"],
        default=None,
        help="onnxruntime (default for .onnx), tensorrt (ONNX Runtime + TensorRT), pytorch (.pt)",
    )
    triton.add_argument("--max-batch-size", type=int, default=8, help="0: no batching")
    triton.add_argument("--force", action="store_true", help="replace an existing model folder")
    triton.set_defaults(run=cmd_triton_repo)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return args.run(args)
    except (GradvisError, FileNotFoundError, PermissionError, ValueError) as error:
        print(f"gradvis: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradvis: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
