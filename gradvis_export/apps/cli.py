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


def cli_explainer(method: str, model, layer: str | None, target=None):
    """The explainer `method` as the CLI builds it: the layer for methods that read one, and
    every activation X3D has (`all`) for the guided ones; `target` a gradvis target (default:
    the class of the logits)."""
    from gradvis_export.methods.registry import make_explainer, method_class

    cls = method_class(method)
    options = {} if target is None else {"target": target}
    return make_explainer(
        method,
        model,
        layer if cls.takes_layer else None,
        activations="all" if cls.takes_activations else None,
        **options,
    )


def positive(value: str) -> int:
    """argparse type: a whole number >= 1 (0 or less is never a sensible count or size)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be at least 1")
    return number


def opacity(value: str) -> float:
    """argparse type: a heatmap opacity in [0, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{number} is not between 0 and 1")
    return number


def _model_args(parser: argparse.ArgumentParser) -> None:
    from gradvis_export.apps.models import CONFIGS

    parser.add_argument(
        "--model",
        default=None,
        help=f"one of {', '.join(CONFIGS)}; torchvision:NAME (e.g. torchvision:resnet18, "
        "torchvision:r3d_18); pytorchvideo:NAME (e.g. pytorchvideo:x3d_s); your own factory "
        "path/to/file.py:function or package.module:function returning an nn.Module (default: "
        "the shipped, trained carlights model; x3d_xs with --checkpoint); explain also takes "
        "clip-<open_clip ViT>, e.g. clip-ViT-B-32, with --prompt",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="state dict to load (torch.save(model.state_dict(), path); read with "
        "weights_only=True; default: none, so random weights unless the model is shipped or "
        "your factory loads its own)",
    )
    parser.add_argument(
        "--num-classes",
        type=positive,
        default=None,
        help="classes of the model's head (default: the builder's own, 1000 for torchvision "
        "image models, 400 for video models; a shipped model: its own)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="class names, one a line in class order (default: the shipped model's own, else "
        "class numbers); a torchvision or pytorchvideo model without --num-classes gets a head "
        "of that many classes",
    )
    parser.add_argument(
        "--method",
        default="gradcam",
        choices=method_names(),
        metavar="METHOD",
        help=f"one of {', '.join(method_names())} (default gradcam)",
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="target layer, a dotted module name (default: the layer recorded with a shipped "
        "model, e.g. carlights' blocks.2, else the last spatial feature map: the library's "
        "default-layer rule)",
    )
    parser.add_argument(
        "--clip-len",
        type=positive,
        default=None,
        help="video models: frames per clip (default: the model's own, e.g. 4 for x3d_xs, 16 "
        "for torchvision video models; your factory: 8). Giving it makes your factory's model "
        "a video model",
    )
    parser.add_argument(
        "--size",
        type=positive,
        default=None,
        help="side of the model's square input in pixels (default: the model's own, e.g. 160 "
        "for x3d_xs, 224 for torchvision image models and your factory, 112 for r3d_18)",
    )
    parser.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        metavar=("R", "G", "B"),
        help="the model's normalisation of RGB in [0, 1] (default: the model's own; ImageNet's "
        "0.485 0.456 0.406 for torchvision image models and your factory)",
    )
    parser.add_argument(
        "--std",
        type=float,
        nargs=3,
        default=None,
        metavar=("R", "G", "B"),
        help="with --mean (default: the model's own; ImageNet's 0.229 0.224 0.225)",
    )


def model_spec(args: argparse.Namespace):
    """The `--model` options as a `sources.ModelSpec`."""
    from gradvis_export.apps.sources import ModelSpec

    if (args.mean is None) != (args.std is None):
        raise GradvisError("--mean and --std go together: give both or neither")
    return ModelSpec(
        name=args.model,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        clip_len=args.clip_len,
        size=args.size,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        labels=args.labels,
    )


def load_explainer(args: argparse.Namespace, warn: Callable[[str], None]):
    """(the loaded model, its explainer) for `--model` and `--method`."""
    from gradvis_export.apps.sources import load_model

    loaded = load_model(model_spec(args))
    if not loaded.trained:
        warn(
            f"note: no --checkpoint, so {loaded.name} has random weights: the heatmaps show the "
            "machinery, not a trained model's reasoning"
        )
    return loaded, explainer_for(loaded, args.method, args.layer)


def explainer_for(loaded, method: str, layer: str | None = None):
    """The explainer of a `sources.LoadedModel`: a segmenter's target is the class summed over
    its mask (gv.SegmentationTarget), a classifier's the class."""
    target = None
    if loaded.task == "segmentation":
        from gradvis_export.core.targets import SegmentationTarget

        target = SegmentationTarget(loaded.output_key)
    return cli_explainer(method, loaded.model, layer or loaded.layer, target)


def _artifact_labels(args: argparse.Namespace, spec) -> list[str] | None:
    """The artifact's class names, or --labels checked against its number of classes."""
    from gradvis_export.apps.sources import read_labels

    if args.labels is None:
        return list(spec.class_names) if spec.class_names is not None else None
    names = read_labels(args.labels)
    if spec.num_classes is not None and len(names) != spec.num_classes:
        raise GradvisError(
            f"--labels {str(args.labels)!r} has {len(names)} names but the artifact has "
            f"{spec.num_classes} classes: one name a line, in class order"
        )
    return names


def _check_artifact_options(args: argparse.Namespace, spec, per_frame: bool) -> None:
    """Options the artifact fixed at export cannot change: say so instead of ignoring them."""
    fixed = {"--model": args.model, "--checkpoint": args.checkpoint, "--layer": args.layer,
             "--num-classes": args.num_classes, "--mean": args.mean}  # fmt: skip
    given = [name for name, value in fixed.items() if value is not None]
    if args.method != "gradcam":
        given.append("--method")
    if given:
        raise GradvisError(
            f"{', '.join(given)}: the artifact {str(args.artifact)!r} fixed these at export "
            f"({spec.method}, layer {', '.join(spec.layers or ['-'])}); drop them, or export again"
        )
    side = spec.frame_size[0]
    if args.size is not None and args.size != side:
        raise GradvisError(f"--size {args.size}: the artifact takes {side}x{side}; drop --size")
    if per_frame and args.clip_len is not None:
        raise GradvisError(
            f"--clip-len: {str(args.artifact)!r} is an image model (each frame is explained); "
            "use --batch for frames per call"
        )
    if not per_frame and args.clip_len not in (None, spec.clip_len):
        raise GradvisError(
            f"--clip-len {args.clip_len}: the artifact takes clips of {spec.clip_len} frames; "
            "drop --clip-len, or export again"
        )


def _frame_targets(args: argparse.Namespace, backend, video: Path):
    """The artifact's target inputs per frame, when it has more than a class (or a file
    gives them); None: the class of --target for every frame."""
    from gradvis_export.apps.video.decode import probe
    from gradvis_export.apps.video.targets import frame_targets

    names = backend.target_names
    given = args.box is not None or args.mask is not None or args.targets is not None
    if set(names) <= {"target"} and not given:
        return None
    info = probe(video)
    return frame_targets(
        names, backend.mask_shape, info.width, info.height, target=args.target, box=args.box,
        mask=args.mask, targets_file=args.targets,
    )  # fmt: skip


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
    workers = 1
    if args.workers is not None and args.artifact is None:
        raise GradvisError(
            f"--workers {args.workers}: only with --artifact (the eager explainer runs one clip "
            "at a time on --threads threads)"
        )
    if args.artifact is not None:
        workers = args.workers or default_workers(args.artifact, args.threads)
        threads = max(1, (args.threads or cpu_count()) // workers)
        backend = ArtifactBackend(args.artifact, threads=threads)
        spec = backend.spec  # the clip length and size the artifact was exported for
        per_frame = backend.per_frame
        _check_artifact_options(args, spec, per_frame)
        clip_len, size = spec.clip_len, spec.frame_size[0]
        uint8, labels = spec.uint8, _artifact_labels(args, spec)
        targets = _frame_targets(args, backend, video)
        mean = spec.preprocess.mean or (0.45, 0.45, 0.45)
        std = spec.preprocess.std or (0.225, 0.225, 0.225)
        meta = {"method": spec.method, "artifact": str(args.artifact)}
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        loaded, explainer = load_explainer(args, warn)
        if loaded.shipped and Path(video).resolve() != models.SAMPLE_VIDEO.resolve():
            warn(
                f"note: the shipped {loaded.name} model knows only generated car-light scenes "
                f"({', '.join(loaded.class_names or [])}); to explain your own footage pass your "
                "model: --model torchvision:NAME --checkpoint weights.pt, or --model "
                "file.py:function (README: Explain a video with your own model)"
            )
        segmenter = loaded.task == "segmentation"
        if args.box is not None or (not segmenter and (args.mask or args.targets)):
            raise GradvisError(
                "--box, --mask and --targets fill the target inputs of a detector or a "
                f"segmenter; {loaded.name} is a classifier (a detector: export it with "
                "gv.export and gv.DetectionTarget, then pass --artifact)"
            )
        targets = None
        if segmenter and (args.mask is not None or args.targets is not None):
            from gradvis_export.apps.video.decode import probe
            from gradvis_export.apps.video.targets import frame_targets

            info = probe(video)
            targets = frame_targets(
                ("target", "mask"), loaded.output_size, info.width, info.height,
                target=args.target, mask=args.mask, targets_file=args.targets,
            )  # fmt: skip
        per_frame, clip_len, size = not loaded.video, loaded.clip_len, loaded.size
        backend, uint8, labels = EagerBackend(explainer), False, loaded.class_names
        mean, std = loaded.mean, loaded.std
        meta = {"method": args.method, "model": loaded.name}
    if per_frame:
        if args.stride is not None:
            raise GradvisError("--stride is for video models: an image model sees each frame")
        clip_len = stride = args.batch
    else:
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
        per_frame=per_frame,
        resize=args.resize,
        label=args.label,
        audio=args.audio,
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
        targets=targets,
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
        what = f"{summary.clips} calls" if per_frame else f"{summary.clips} clips"
        print(
            f"wrote {', '.join(summary.outputs)}: {summary.frames} frames, {what}", file=sys.stderr
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
    loaded, explainer = load_explainer(args, lambda m: print(m, file=sys.stderr))
    clip_len, size = loaded.clip_len, loaded.size
    frames = (clip_len, size, size) if loaded.video else (size, size)
    if args.uint8:
        explainer = UInt8Input(explainer, mean=loaded.mean, std=loaded.std, overlay=args.overlay)
        example = torch.randint(0, 256, (2, *frames, 3), dtype=torch.uint8)
        metadata = {}
    else:
        example = torch.randn(2, 3, *frames)
        metadata = {"mean": list(loaded.mean), "std": list(loaded.std)}
    precision = "fp16" if args.fp16 else "fp32"
    path = export(
        explainer,
        example,
        args.out,
        format=args.format,
        precision=precision,
        profile=args.profile,
        metadata=metadata,
        class_names=loaded.class_names,
        progress=None if args.quiet else (lambda line: print(line, file=sys.stderr)),
    )
    if args.quiet:
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
    import gradvis_runtime

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
    pre = spec.preprocess
    if pre.mean is not None:
        where = "in the graph (uint8 in)" if pre.in_graph else "by the caller (float in)"
        mean, std = ([round(v, 4) for v in values] for values in (pre.mean, pre.std))
        print(f"  normalise {where}: mean {mean} std {std}")
    if spec.class_names is not None:
        names = list(spec.class_names)
        more = f", ... ({len(names)} in all; --json lists them)" if len(names) > 12 else ""
        print(f"  classes: {', '.join(names[:12])}{more}")
    elif spec.num_classes is not None:
        print(f"  classes: {spec.num_classes} (unnamed)")
    print(f"  {gradvis_runtime.cpp_status()}")
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
        batch=args.batch,
        resize=args.resize,
        label=args.label,
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


def _video_args(parser: argparse.ArgumentParser) -> None:
    """What the video job does with any model: clips or frames, framing, drawing."""
    from gradvis_export.apps.video.framing import RESIZE_MODES

    parser.add_argument(
        "--stride",
        type=positive,
        default=None,
        help="video models: frames between clip starts (default: half the clip length)",
    )
    parser.add_argument(
        "--batch",
        type=positive,
        default=8,
        help="image models: frames explained per call (default: 8)",
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="crop",
        help="how a frame becomes the model's square: crop (shorter side to the model's size, "
        "centre cut; heat only inside it), pad (letterbox), squash (stretch) (default: crop)",
    )
    parser.add_argument(
        "--target", type=int, default=-1, help="class to explain (default -1: the predicted one)"
    )
    parser.add_argument(
        "--alpha", type=opacity, default=0.5, help="heatmap opacity, 0 to 1 (default: 0.5)"
    )
    parser.add_argument("--boxes", action="store_true", help="boxes around the hottest regions")
    parser.add_argument(
        "--label",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw the predicted label and score top-left on the frames (default: yes)",
    )


class OneLineParser(argparse.ArgumentParser):
    """Errors in the options are one line and exit code 2, like every other error."""

    def error(self, message: str) -> None:
        self.exit(2, f"gradvis: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="gradvis", description=__doc__.split("\n\n")[0])
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
    _video_args(explain)
    explain.add_argument(
        "--out",
        type=Path,
        default=None,
        help="overlay video (.mp4; default: VIDEO_gradvis.mp4 next to VIDEO, in the current "
        "folder for the shipped sample)",
    )
    explain.add_argument("--gif", type=Path, default=None, help="also a GIF (short videos)")
    explain.add_argument(
        "--json", type=Path, default=None, help="sidecar (default: OUT with .json)"
    )
    explain.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="run this exported explainer (image or video; its contract fixes model, method, "
        "layer, size and clip length)",
    )
    explain.add_argument(
        "--box",
        type=float,
        nargs=4,
        default=None,
        metavar=("X1", "Y1", "X2", "Y2"),
        help="a detection artifact: the box to explain, in frame pixels, on every frame",
    )
    explain.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="a segmentation artifact: the pixels whose class is explained, an image of the "
        "frame's size, nonzero = counts (default: every pixel)",
    )
    explain.add_argument(
        "--targets",
        type=Path,
        default=None,
        help='per-frame targets, JSON lines: {"frame": 12, "box": [x1, y1, x2, y2], "label": 3} '
        "(frames not listed take --target / --box / --mask)",
    )
    explain.add_argument(
        "--panel", action="store_true", help="frame | overlay | guided side by side"
    )
    explain.add_argument(
        "--audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="copy the input's audio stream into the MP4 (default: yes)",
    )
    explain.add_argument(
        "--threads", type=positive, default=None, help="threads in all (default: cores)"
    )
    explain.add_argument(
        "--workers",
        type=positive,
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

    exp = sub.add_parser("export", help="export an explainer for a video or image model")
    _model_args(exp)
    exp.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default=None,
        help="default: from --out's suffix (.onnx: onnx, .pt: torchscript)",
    )
    exp.add_argument("--out", type=Path, required=True, help="the artifact to write")
    exp.add_argument("--quiet", action="store_true", help="no stage lines, only the result")
    exp.add_argument(
        "--uint8",
        action="store_true",
        help="take uint8 frames (B,T,H,W,3) for video, (B,H,W,3) for images; normalise in-graph",
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
    batch.add_argument(
        "--artifact", type=Path, required=True, help="an exported explainer (image or video)"
    )
    batch.add_argument("--out", type=Path, required=True, help="folder for outputs + manifest")
    batch.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: a cluster address (auto, ray://host:10001) or 'local'",
    )
    batch.add_argument("--workers", type=positive, default=None, help="processes / Ray actors")
    batch.add_argument("--threads", type=positive, default=None, help="threads per worker")
    _video_args(batch)
    batch.add_argument("--json-only", action="store_true", help="sidecars only, no MP4s")
    batch.add_argument("--limit", type=positive, default=None, help="only the first N videos")
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
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad option (2, one line printed)
        return int(stop.code or 0)
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
