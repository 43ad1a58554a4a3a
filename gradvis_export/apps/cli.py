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
import textwrap
import warnings
from pathlib import Path

# the explain command and what export shares with it (cli_explainer, explainer_for: also the
# seed interface's and the benchmarks' way to build an explainer)
from gradvis_export.apps.explain import (
    CLIP_PREFIX,
    cli_explainer,
    cmd_explain,
    explainer_for,
    load_explainer,
)
from gradvis_export.errors import GradvisError
from gradvis_runtime.contract import PROFILES

__all__ = [
    "CLIP_PREFIX",
    "cli_explainer",
    "cmd_explain",
    "explainer_for",
    "load_explainer",
    "main",
    "method_names",
    "parser",
]


def method_names() -> list[str]:
    """The registry's names (gv.METHODS), without importing torch for `--help` of other
    commands: the registry is imported when a parser that lists methods is built."""
    from gradvis_export.methods.registry import METHODS

    return list(METHODS)


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


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from gradvis_export.apps.outputs import check_output
    from gradvis_export.core.preprocess import UInt8Input

    if args.overlay is not None and not args.uint8:
        raise GradvisError("--overlay draws on the uint8 input frames: add --uint8")
    check_output(args.out)  # a read-only or missing folder: before loading and tracing
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
    path = _export_writing(
        args.out,
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


def _export_writing(out: Path, *args, **kwargs) -> Path:
    """`gv.export` with write failures (disk full, read-only folder) as one-line OutputErrors,
    after removing the temporary files of `out` a killed export left (`.NAME.*.tmp.SUFFIX`)."""
    from gradvis_export.apps.outputs import folder_claim, is_write_error, output_error, writing
    from gradvis_export.errors import ExportError
    from gradvis_export.exporter.api import export

    stale = f".{glob_escape(out.name)}.????????.tmp{glob_escape(out.suffix)}"
    with folder_claim(out.parent if str(out.parent) else ".", stale), writing(out):
        try:
            return export(*args, **kwargs)
        except ExportError as error:  # the writer's OSError, wrapped by the exporter
            if is_write_error(error.__cause__):
                raise output_error(error.__cause__, out) from None
            raise


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


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


class HelpFormatter(argparse.HelpFormatter):
    """Help wrapped at spaces only: a method name such as guided-gradcam stays whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class OneLineParser(argparse.ArgumentParser):
    """Errors in the options are one line and exit code 2, like every other error."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

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
    except OSError as error:  # a write failure no command turned into an OutputError
        from gradvis_export.apps.outputs import is_write_error, output_error

        if not isinstance(error, (GradvisError, FileNotFoundError, PermissionError)):
            if not is_write_error(error):
                raise
            if error.filename:
                error = output_error(error, error.filename)
        print(f"gradvis: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except (GradvisError, ValueError) as error:
        print(f"gradvis: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradvis: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
