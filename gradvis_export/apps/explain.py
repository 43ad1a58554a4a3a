"""`gradvis explain VIDEO`: the model or artifact, its options checked, then the video job.

The command's pieces that `gradvis export` shares (`load_explainer`, `explainer_for`) live here
too; `cli.py` builds the parser and dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from gradvis_export.errors import GradvisError

#: `--model clip-<open_clip ViT>`: Grad-ECLIP on every frame
CLIP_PREFIX = "clip-"


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


def _check_outputs_early(args: argparse.Namespace) -> None:
    """Outputs that cannot be written (an unknown container suffix, a folder in the way, a
    read-only or missing folder) are refused before the model is loaded or a frame decoded."""
    from gradvis_export.apps.outputs import check_output
    from gradvis_export.apps.video.encode import container_format

    if args.out is not None:
        container_format(args.out)
    for flag, path in (("--out", args.out), ("--gif", args.gif), ("--json", args.json)):
        if path is not None:
            check_output(path, flag)


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
    _check_outputs_early(args)
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
        from gradvis_export.apps.outputs import check_output

        check_output(out)  # next to the video: that folder may be read-only
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
