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
from pathlib import Path

from .errors import GradvisError

METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "guided": "GuidedBackprop",
    "guided-gradcam": "GuidedGradCAM",
}


def make_explainer(method: str, model, layer: str | None, activations: str = "all"):
    """An explainer by CLI name; guided methods guide every activation X3D has (`all`)."""
    import gradvis_export as gv

    if method not in METHODS:
        raise GradvisError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls = getattr(gv, METHODS[method])
    if method == "guided":
        return cls(model, activations=activations)
    if method == "guided-gradcam":
        return cls(model, layer, activations=activations)
    return cls(model, layer)


def _model_args(parser: argparse.ArgumentParser) -> None:
    from .models import CONFIGS

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
        "--method", default="gradcam", help=f"one of {', '.join(METHODS)} (default gradcam)"
    )
    parser.add_argument(
        "--layer", default=None, help="target layer (default: the model's last stage)"
    )
    parser.add_argument(
        "--clip-len", type=int, default=None, help="frames per clip (model default)"
    )
    parser.add_argument("--size", type=int, default=None, help="square input side (model default)")


def _resolve_model(args: argparse.Namespace) -> None:
    """The embedded default: no --model and no --checkpoint means the shipped carlights model
    (trained; classes, clip length and size from its checkpoint)."""
    from . import models

    if args.model is None:
        args.model = "carlights" if args.checkpoint is None else "x3d_xs"
    if args.model in models.SHIPPED:
        meta = models.shipped_meta(args.model)
        if args.num_classes not in (None, meta["num_classes"]):
            raise GradvisError(
                f"--num-classes {args.num_classes} does not fit the shipped {args.model!r} model "
                f"({meta['num_classes']} classes: {', '.join(meta['class_names'])})"
            )
        args.num_classes = int(meta["num_classes"])
        args.class_names = list(meta["class_names"])
    else:
        args.num_classes = args.num_classes or 400
        args.class_names = None


def _build(args: argparse.Namespace, warn=print):
    from . import models

    _resolve_model(args)
    cfg = models.config(args.model)
    clip_len, size = args.clip_len or cfg.clip_len, args.size or cfg.size
    model = models.build(args.model, args.num_classes, clip_len, size, args.checkpoint)
    if args.checkpoint is None and args.model not in models.SHIPPED:
        warn(
            f"note: no --checkpoint, so {args.model} has random weights: the heatmaps show the "
            "machinery, not a trained model's reasoning"
        )
    explainer = make_explainer(args.method, model, args.layer or cfg.layer)
    return cfg, clip_len, size, explainer


def cmd_explain(args: argparse.Namespace) -> int:
    if (args.model or "").startswith("clip-"):  # CLIP + Grad-ECLIP, per frame
        from .clip_video import cmd_explain_clip

        return cmd_explain_clip(args)
    from . import models
    from .batch import cpu_count
    from .video.backends import ArtifactBackend, EagerBackend, default_workers
    from .video.pipeline import VideoOptions, explain_video

    def warn(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    if args.video is None:  # the embedded default: the shipped sample (and model)
        if args.model is not None or args.checkpoint is not None:
            raise GradvisError("give a VIDEO to explain (only the shipped model has a sample)")
        args.video = models.SAMPLE_VIDEO
        if not args.video.is_file():
            raise GradvisError(f"the shipped sample video is missing ({args.video}); give a VIDEO")
    _resolve_model(args)
    cfg = models.config(args.model)
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
        shape = backend.input_shape or []
        # the clip length and size the artifact was exported for: uint8 (B, T, S, S, 3) or
        # float (B, 3, T, S, S)
        clip_len, size = cfg.clip_len, cfg.size
        if len(shape) == 5:
            clip_len, size = (shape[1], shape[2]) if backend.uint8_input else (shape[2], shape[3])
        clip_len, size = args.clip_len or clip_len, args.size or size
        backend.check(clip_len, size)
        uint8 = backend.uint8_input
        meta = {"method": backend.runtime.metadata.get("method"), "artifact": str(args.artifact)}
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        cfg, clip_len, size, explainer = _build(args, warn)
        backend, uint8 = EagerBackend(explainer), False
        meta = {"method": args.method, "model": args.model}
    stride = args.stride or max(1, clip_len // 2)
    out = args.out
    if out is None and args.gif is None and args.json is None:
        out = Path(args.video).with_name(Path(args.video).stem + "_gradvis.mp4")
        if Path(args.video) == models.SAMPLE_VIDEO:  # not inside the installed package
            out = Path(out.name)
    sidecar = args.json
    if sidecar is None and out is not None:
        sidecar = Path(out).with_suffix(".json")
    options = VideoOptions(
        clip_len=clip_len,
        stride=min(stride, clip_len),
        size=size,
        mean=cfg.mean,
        std=cfg.std,
        target=args.target,
        alpha=args.alpha,
        panel=args.panel,
        boxes=args.boxes,
        uint8_input=uint8,
        labels=args.class_names if args.artifact is None else None,
        workers=workers,
        preset=args.preset,
    )
    summary = explain_video(
        args.video,
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


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .exporter import export
    from .preprocess import UInt8Input

    cfg, clip_len, size, explainer = _build(args, lambda m: print(m, file=sys.stderr))
    if args.overlay is not None and not args.uint8:
        raise GradvisError("--overlay draws on the uint8 input frames: add --uint8")
    if args.uint8:
        explainer = UInt8Input(explainer, mean=cfg.mean, std=cfg.std, overlay=args.overlay)
        example = torch.randint(0, 256, (2, clip_len, size, size, 3), dtype=torch.uint8)
    else:
        example = torch.randn(2, 3, clip_len, size, size)
    precision = "fp16" if args.fp16 else "fp32"
    path = export(
        explainer, example, args.out, format=args.format, precision=precision, profile=args.profile
    )
    print(f"wrote {path}", file=sys.stderr)
    error = describe(path).get("fp16_error") if args.fp16 else None
    for name, value in (error or {}).items():
        if isinstance(value, dict) and "max_abs" in value:
            print(
                f"fp16 vs fp32 {name}: max abs diff {value['max_abs']:.3g}, relative L2 "
                f"{value['rel_l2']:.3g} ({error['samples']} samples, {error['measured_on']})",
                file=sys.stderr,
            )
    return 0


def describe(path: str | os.PathLike) -> dict[str, object]:
    import gradvis_runtime

    runtime = gradvis_runtime.load(path)
    meta = dict(runtime.metadata)
    meta["backend"] = runtime.backend
    return meta


def cmd_info(args: argparse.Namespace) -> int:
    meta = describe(args.artifact)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    specs = meta.get("input_specs", {})
    print(f"{args.artifact} ({meta.get('backend')}, gradvis {meta.get('gradvis_version')})")
    print(
        f"  method:  {meta.get('method')}  layer: {', '.join(meta.get('target_layer', []) or ['-'])}"
    )
    for name in meta.get("inputs", []):
        spec = specs.get(name, {})
        print(f"  input   {name}: {spec.get('dtype', '?')} {tuple(spec.get('shape', []))}")
    for name in meta.get("outputs", []):
        print(f"  output  {name}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import MANIFEST, BatchSettings, run_batch

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
    from .triton import write_repository

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
        choices=["tensorrt", "onnxruntime-cpu"],  # exporter.PROFILES (not imported: torch)
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
